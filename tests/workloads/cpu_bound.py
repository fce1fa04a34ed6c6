"""N threads of pure-Python CPU work (benchmarks). Usage: cpu_bound.py [threads] [iterations]
[ready]; with `ready`, prints `ready` once the threads run."""
import sys
import threading
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2
ITER = int(sys.argv[2]) if len(sys.argv) > 2 else 3_000_000


def work():
    total = 0
    for i in range(ITER):
        total += i * i % 7  # HOT-LINE
    return total


start = time.perf_counter()
threads = [threading.Thread(target=work) for _ in range(N)]
for t in threads:
    t.start()
if sys.argv[3:4] == ["ready"]:
    print("ready\n", end="", flush=True)
for t in threads:
    t.join()
print(f"elapsed {time.perf_counter() - start:.4f}", file=sys.stderr)
