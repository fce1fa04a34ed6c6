"""Many-thread blocking workloads for benches/bounded_cost.py (not a test).

  python3.13t contention.py KIND THREADS SECONDS

KIND:
  handoff  THREADS threads take one shared threading.Lock in a tight loop (lock hand-offs:
           tens of thousands of switch-outs a second)
  sleep0   the same, plus time.sleep(0) every 7th iteration
  mixed    THREADS threads alternate a little work of their own (sum(range(40))) with one
           increment under the shared lock: contended, but without the lock convoys that make a
           tight loop with many threads flip between fast and very slow runs
  pool     a queue.Queue thread pool: one producer, THREADS workers taking tiny tasks

Prints `ready` once the threads run, then at the end `ops N`, `elapsed S`, `ops_per_s R` and
`end_monotonic T` (CLOCK_MONOTONIC seconds, to time what follows the target's exit).
"""
import queue
import sys
import threading
import time

kind, nthreads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
lock = threading.Lock()
stop = threading.Event()
counts = [0] * nthreads
started = threading.Barrier(nthreads + 1)


def handoff(i, sleep_every, own_work):
    n = 0
    started.wait()
    while not stop.is_set():
        for _ in range(50):
            with lock:
                n += 1
            if sleep_every and n % sleep_every == 0:
                time.sleep(0)
            if own_work:
                sum(range(own_work))
    counts[i] = n


tasks = queue.Queue(maxsize=4 * nthreads)


def worker(i):
    n = 0
    started.wait()
    while True:
        item = tasks.get()
        if item is None:
            break
        n += item & 1 or 1
    counts[i] = n


if kind in ("handoff", "sleep0", "mixed"):
    args = {"handoff": (0, 0), "sleep0": (7, 0), "mixed": (0, 40)}[kind]
    threads = [threading.Thread(target=handoff, args=(i,) + args) for i in range(nthreads)]
elif kind == "pool":
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(nthreads)]
else:
    sys.exit(f"unknown kind {kind}")
for t in threads:
    t.start()
started.wait()
print("ready", flush=True)
t0 = time.perf_counter()
if kind == "pool":
    i = 0
    while time.perf_counter() - t0 < seconds:
        for _ in range(100):
            tasks.put(i)
            i += 1
    for _ in threads:
        tasks.put(None)
else:
    time.sleep(seconds)
    stop.set()
for t in threads:
    t.join()
elapsed = time.perf_counter() - t0
ops = sum(counts)
print(f"ops {ops}\nelapsed {elapsed:.3f}\nops_per_s {ops / elapsed:.1f}\nend_monotonic {time.monotonic():.6f}", flush=True)
