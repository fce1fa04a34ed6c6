"""For `ftprof top`: four threads run `top_hot_function` with one shared threading.Lock
(`top_shared_lock`) around most of its work, until killed or for argv[1] seconds. Prints `ready`
once the threads run, then `tick N` every 0.2 s from the main thread (to show it keeps running)."""
import sys
import threading
import time

limit = time.monotonic() + float(sys.argv[1] if len(sys.argv) > 1 else 600)
top_shared_lock = threading.Lock()
counter = [0]


def top_hot_function():
    x = 0
    while time.monotonic() < limit:
        with top_shared_lock:
            for i in range(2000):
                x += i * i
            counter[0] += 1


threads = [threading.Thread(target=top_hot_function, name=f"worker-{k}") for k in range(4)]
for t in threads:
    t.start()
print("ready", flush=True)
n = 0
while time.monotonic() < limit:
    time.sleep(0.2)
    n += 1
    print(f"tick {n}", flush=True)
for t in threads:
    t.join()
