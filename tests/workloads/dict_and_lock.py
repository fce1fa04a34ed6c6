"""Two threads hammer one shared dict (copying it holds its critical section for a while), then
one threading.Lock (held for a little work), each for DURATION/2 s of its own CPU time (a busy
machine stretches the run, not the work). Each worker runs on a CPU of its own where the process
may use two (on a busy machine two unpinned workers rarely run at the same moment, and contend
little), and each phase starts on a barrier. Prints `dict 0x…` and `lock 0x…`."""
import os
import sys
import threading
import time

DURATION = float(sys.argv[1]) if len(sys.argv) > 1 else 1.5
shared = {i: i for i in range(20000)}
lock = threading.Lock()
print(f"dict {hex(id(shared))}\n", end="", flush=True)
print(f"lock {hex(id(lock))}\n", end="", flush=True)
# Both threads have started before either works.
ready = threading.Barrier(2)


def pin(k):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[k % len(cpus)]})
    if os.environ.get("WORKERS_SCHED_RR"):
        # Real-time round robin at priority 1 where permitted (tests/common::realtime_workers).
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
        except PermissionError:
            pass


def worker(k):
    pin(k)
    ready.wait()
    start = time.thread_time()
    half = start + DURATION / 2
    stop = start + DURATION
    n = 0
    while time.thread_time() < half:
        snapshot = shared.copy()  # DICT-LINE: holds the dict's critical section
        shared[k] = len(snapshot)
    ready.wait()
    stop = time.thread_time() + DURATION / 2
    while time.thread_time() < stop:
        with lock:  # LOCK-LINE
            n += sum(range(30000))


threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
