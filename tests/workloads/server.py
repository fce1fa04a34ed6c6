"""A long-running process for attach tests: a thread burns CPU in `hot_loop`, another sleeps in a
loop; exits with status 0 after SECONDS (default 8), or at once on SIGUSR1. Prints `ready` and
each thread's TID."""
import signal
import sys
import threading
import time

# Each thread that prints its TID releases this once; `ready` waits for all of them (a
# test reads every TID before it acts on `ready`).
announced = threading.Semaphore(0)

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 8.0
stop = time.monotonic() + SECONDS


def finish_now(*_):
    global stop
    stop = 0


signal.signal(signal.SIGUSR1, finish_now)


def hot_loop():
    print(f"tid hot {threading.get_native_id()}\n", end="", flush=True)
    announced.release()
    x = 0
    while time.monotonic() < stop:
        x += 1  # HOT-LINE


def napper():
    while time.monotonic() < stop:
        time.sleep(0.05)


threads = [threading.Thread(target=hot_loop, name="hot"), threading.Thread(target=napper, name="napper")]
for t in threads:
    t.start()
for _ in range(1):
    announced.acquire()
print("ready\n", end="", flush=True)
for t in threads:
    t.join()
print("done\n", end="", flush=True)
sys.exit(0)
