"""Three threads of pure-Python CPU work for SECONDS (default 6); on a default (GIL) build they
take turns on the GIL. Prints `ready` and `done`."""
import sys
import threading
import time

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 6.0
stop = time.monotonic() + SECONDS


def spin():
    x = 0
    while time.monotonic() < stop:
        x += 1  # SPIN-LINE


threads = [threading.Thread(target=spin) for _ in range(3)]
for t in threads:
    t.start()
print("ready\n", end="", flush=True)
for t in threads:
    t.join()
print("done\n", end="", flush=True)
