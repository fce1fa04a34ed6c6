"""A fixed total amount of work split over N threads (N from the first argument): each step
computes a little and then waits 3 ms as if for I/O. With `--lock` (the "new commit"), every step
of the hot loop runs under one shared threading.Lock, held across the wait as a program holding
a lock around I/O does: the threads are serialised. The wait keeps the effect visible when the
machine's CPUs are busy with other work (threads waiting for a CPU rarely overlap otherwise)."""
import sys
import threading
import time

N = int(sys.argv[1])
LOCKED = "--lock" in sys.argv[2:]
STEPS = 500
CHUNK = 2_000
LOCK = threading.Lock()


def step(total):
    for i in range(CHUNK):
        total += i % 7
    time.sleep(0.003)
    return total


def work(count):
    total = 0
    for _ in range(count):
        if LOCKED:
            with LOCK:  # LOCK-LINE
                total = step(total)
        else:
            total = step(total)
    return total


threads = [threading.Thread(target=work, args=(STEPS // N,)) for _ in range(N)]
for t in threads:
    t.start()
for t in threads:
    t.join()
