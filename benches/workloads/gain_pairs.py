"""Pairs of workloads for validating ftprof's predicted gain (benches/gain_validation.py): each
KIND has a `shared` variant (one object shared by every thread: contended) and a `private` one
(one object per thread: the fix), running the same bytecode on the same kind of object, so that
on one thread both do the same work. Usage: gain_pairs.py KIND shared|private THREADS SECONDS.
Prints `iterations N` (all threads together) and `rate R` at the end: each thread's iterations
per second of its time not spent waiting for a CPU (its wall time less its run delay from
/proc/self/task/TID/schedstat), summed over the threads — the throughput the threads would have
had on a machine with no other load (this host is shared and noisy).

Kinds: list (refcount of a list read in a loop), staticmethod (a class's staticmethod called in a
loop), tls (a threading.local read in a loop), logdebug (a disabled Logger.debug), counter (an
instance attribute incremented), dict (a dict written), append (list append/pop), random (a
Random instance), lock (a lock around a short update), sleeplock (a lock held across a sleep)."""
import logging
import random
import sys
import threading
import time

KIND, MODE = sys.argv[1], sys.argv[2]
THREADS = int(sys.argv[3])
SECONDS = float(sys.argv[4])
BATCH = 1_000


class Box:
    pass


def make(kind, i):
    """The object a worker works on (i: a per-thread index)."""
    if kind == "list":
        return [1, 2, 3]
    if kind == "staticmethod":
        # A class of its own, with a function of its own behind its staticmethod.
        return type("Box", (), {"add": staticmethod(lambda a, b: a + b)})
    if kind == "tls":
        t = threading.local()
        return t
    if kind == "logdebug":
        log = logging.getLogger(f"gain_pairs.{i}")
        log.setLevel(logging.WARNING)
        return log
    if kind == "counter":
        return Box()
    if kind == "dict":
        return {}
    if kind == "append":
        return []
    if kind == "random":
        return random.Random(i)
    if kind in ("lock", "sleeplock"):
        return threading.Lock()
    raise SystemExit(f"unknown kind {kind}")


def run_delay_s():
    """This thread's time runnable but waiting for a CPU, so far (s)."""
    with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def work(kind, obj, deadline, out):
    t0, d0 = time.monotonic(), run_delay_s()
    n = work_loop(kind, obj, deadline)
    t1, d1 = time.monotonic(), run_delay_s()
    out.append((n, max(t1 - t0 - (d1 - d0), 1e-3)))


def work_loop(kind, obj, deadline):
    n = 0
    if kind == "counter":
        obj.count = 0
    while time.monotonic() < deadline:
        if kind == "list":
            for _ in range(BATCH):
                a = obj; b = obj; c = obj; d = obj
        elif kind == "staticmethod":
            for _ in range(BATCH):
                obj.add(1, 2)
        elif kind == "tls":
            for _ in range(BATCH):
                a = obj; b = obj; c = obj; d = obj
        elif kind == "logdebug":
            for _ in range(BATCH):
                obj.debug("x")
        elif kind == "counter":
            for _ in range(BATCH):
                obj.count += 1
        elif kind == "dict":
            for i in range(BATCH):
                obj[i & 63] = i
        elif kind == "append":
            for i in range(BATCH):
                obj.append(i)
                obj.pop()
        elif kind == "random":
            for _ in range(BATCH):
                obj.random()
        elif kind == "lock":
            for i in range(BATCH // 10):
                with obj:
                    s = 0
                    for j in range(20):
                        s += j
                s = 0
                for j in range(20):
                    s += j
        elif kind == "sleeplock":
            with obj:
                time.sleep(0.002)
            # Work outside the lock: about as long as the sleep, on CPU.
            s = 0
            for j in range(2_000):
                s += j
            n += 1
            continue
        n += BATCH
    return n


shared = make(KIND, 0)
objs = [shared if MODE == "shared" else make(KIND, i + 1) for i in range(THREADS)]
out = []
deadline = time.monotonic() + SECONDS
threads = [threading.Thread(target=work, args=(KIND, o, deadline, out)) for o in objs]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"iterations {sum(n for n, _ in out)}")
print(f"rate {sum(n / t for n, t in out):.1f}")
