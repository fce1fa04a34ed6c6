"""NumPy ufunc dispatch from several threads. bad: tiny arrays, so each call is mostly dispatch
(NumPy before 2.2 locks the ufunc there); fixed: the work in large arrays (200 000 elements a call: dispatch is a
negligible share). Usage: numpy_ufunc.py bad|fixed [threads] [seconds]."""
import os
import sys
import threading
import time

import numpy as np

BAD = sys.argv[1] == "bad"
THREADS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
print(f"numpy {np.__version__}", flush=True)
start = threading.Barrier(THREADS)


def work(k):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[k % len(cpus)]})
    if os.environ.get("WORKERS_SCHED_RR"):
        # Real-time round robin at priority 1 where permitted (tests/findings.rs runs ftprof at
        # priority 2, above the workers): a worker woken after waiting for the ufunc's lock runs
        # at once instead of behind another process's time slice.
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
        except PermissionError:
            pass
    small = np.arange(4, dtype=np.float64)
    big = np.arange(200_000, dtype=np.float64)
    start.wait()
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        if BAD:
            for _ in range(1000):
                np.add(small, small)  # BAD-LINE
        else:
            np.add(big, big)


threads = [threading.Thread(target=work, args=(k,), name=f"worker-{k}") for k in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("done", flush=True)
