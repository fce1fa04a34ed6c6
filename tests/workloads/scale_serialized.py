"""Serialised on one lock: a fixed total amount of work split over N threads, each piece done
while holding one shared threading.Lock (N from FTPROF_THREADS or the first argument)."""
import os
import sys
import threading

N = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("FTPROF_THREADS", "1"))
TOTAL = int(sys.argv[2]) if len(sys.argv) > 2 else 6_000_000
CHUNK = 20_000
lock = threading.Lock()
# Every thread has started before any works: each finds the lock held by another.
start = threading.Barrier(N)


def work(count):
    start.wait()
    total = 0
    for _ in range(count // CHUNK):
        with lock:
            for i in range(CHUNK):
                total += i % 7
    return total


threads = [threading.Thread(target=work, args=(TOTAL // N,)) for _ in range(N)]
for t in threads:
    t.start()
for t in threads:
    t.join()
