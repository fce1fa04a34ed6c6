"""Two threads contending on one threading.Lock and one dict for a fixed amount of work
(benchmarks). Usage: contended.py [iterations]. Prints `elapsed SECONDS` to stderr."""
import sys
import threading
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
lock = threading.Lock()
shared = {}


def work(k):
    total = 0
    for i in range(N):
        with lock:
            total += i
        shared[i & 1023] = k


start = time.perf_counter()
threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"elapsed {time.perf_counter() - start:.4f}", file=sys.stderr)
