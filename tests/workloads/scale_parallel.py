"""Embarrassingly parallel: a fixed total amount of pure-Python work split over N threads
(N from FTPROF_THREADS or the first argument). Nothing is shared."""
import os
import sys
import threading

N = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("FTPROF_THREADS", "1"))
TOTAL = int(sys.argv[2]) if len(sys.argv) > 2 else 6_000_000


def work(count):
    total = 0
    for i in range(count):
        total += i % 7
    return total


threads = [threading.Thread(target=work, args=(TOTAL // N,)) for _ in range(N)]
for t in threads:
    t.start()
for t in threads:
    t.join()
