"""Weak scaling with one cause: every thread does the same amount of work (N from
FTPROF_THREADS or the first argument), a hot loop that reads a shared global list. At N = 1 the
list's reference count is touched by one thread only; with more threads they all write the same
cache line, so the time per unit of work grows with N."""
import os
import sys
import threading

N = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("FTPROF_THREADS", "1"))
COUNT = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000_000
SHARED = [float(i) for i in range(8)]


def work(count):
    total = 0.0
    for i in range(count):
        total += SHARED[i & 7] + SHARED[(i + 3) & 7]  # SHARED-LINE
    return total


threads = [threading.Thread(target=work, args=(COUNT,)) for _ in range(N)]
for t in threads:
    t.start()
for t in threads:
    t.join()
