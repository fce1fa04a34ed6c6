"""Threads hand one threading.Lock around with bare acquire()/release() — no `with` block, so a
holder search that looks for the block cannot see who holds it; only the wake-ups say (the
thread that releases the lock wakes the next waiter).

    bare_handoff.py [THREADS (8)] [SECONDS (2)] [HELD (3000: iterations of held work)]

Each worker holds the lock across `held_work`, then releases it (the marked release line).
Prints `lock 0x…` and `ready`."""
import sys
import threading
import time

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 8
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
HELD = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
lock = threading.Lock()
print(f"lock {hex(id(lock))}\n", end="", flush=True)
deadline = time.monotonic() + SECONDS


def held_work():
    x = 0
    for i in range(HELD):
        x += i  # HELD-LINE
    return x


def worker():
    while time.monotonic() < deadline:
        lock.acquire()  # WAIT-LINE
        held_work()
        lock.release()  # RELEASE-LINE


threads = [threading.Thread(target=worker, name=f"worker-{n}") for n in range(THREADS)]
for t in threads:
    t.start()
print("ready\n", end="", flush=True)
for t in threads:
    t.join()
