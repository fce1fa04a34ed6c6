"""THREADS threads (default 8) share one threading.Lock: each takes it, does HOLD_MS of busy work
under it, releases it and does OUT_MS of busy work of its own, for SECONDS. With more threads than
CPUs, a thread inside `acquire()` is either blocked on the lock or woken and waiting for a CPU.
Each thread measures the wall time it spends inside `acquire()` (the known truth).

Usage: oversub_acquire.py [THREADS] [SECONDS] [HOLD_MS] [OUT_MS]
Prints `lock 0x…`, then at the end `inside SECONDS` (all threads' time inside `acquire()`),
`acquires N` and `contended N` (acquisitions that found the lock held), and per thread
`thread TID inside SECONDS`."""
import sys
import threading
import time

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 8
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
HOLD = (float(sys.argv[3]) if len(sys.argv) > 3 else 1.0) / 1000
OUT = (float(sys.argv[4]) if len(sys.argv) > 4 else 2.0) / 1000

lock = threading.Lock()
print(f"lock {hex(id(lock))}\n", end="", flush=True)
start = threading.Barrier(THREADS)
inside = [0.0] * THREADS
acquires = [0] * THREADS
contended = [0] * THREADS
tids = [0] * THREADS


def spin(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def worker(i):
    start.wait()
    stop = time.monotonic() + SECONDS
    n = c = 0
    t_in = 0.0
    while time.monotonic() < stop:
        t = time.perf_counter()
        if not lock.acquire(blocking=False):
            c += 1
            lock.acquire()  # ACQUIRE-LINE
        t_in += time.perf_counter() - t
        n += 1
        spin(HOLD)
        lock.release()
        spin(OUT)
    inside[i], acquires[i], contended[i] = t_in, n, c
    tids[i] = threading.get_native_id()


threads = [threading.Thread(target=worker, args=(i,), name=f"worker-{i}") for i in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"inside {sum(inside):.6f}\n", end="", flush=True)
print(f"acquires {sum(acquires)}\n", end="", flush=True)
print(f"contended {sum(contended)}\n", end="", flush=True)
for i in range(THREADS):
    print(f"thread {tids[i]} inside {inside[i]:.6f}\n", end="", flush=True)
