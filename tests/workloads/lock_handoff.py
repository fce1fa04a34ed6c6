"""A holder keeps a threading.Lock for ROUNDS x 100 ms of busy work; a waiter blocks on it each
time. Usage: lock_handoff.py [lock|rlock] [ROUNDS (default 10)] [ready]; with `ready`, prints `ready` once
the threads run. Prints the lock's address
(`lock 0x…`), the waiter's own measured blocked time (seconds) as `blocked SECONDS` and the
number of its acquisitions that had to wait as `waits N`, of which `short N` took under 1 ms (the
lock was released while the waiter spun, before it parked), and how many times the waiter gave up
its CPU inside them (its voluntary context switches: each a park) as `parks N`."""
import resource
import sys
import threading
import time

# Each thread that prints its TID releases this once; `ready` waits for all of them (a
# test reads every TID before it acts on `ready`).
announced = threading.Semaphore(0)

lock = threading.RLock() if sys.argv[1:2] == ["rlock"] else threading.Lock()
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
print(f"lock {hex(id(lock))}\n", end="", flush=True)
# One event per round: the waiter cannot miss a round (a single reused Event could be set twice
# before the waiter clears it, and the waiter would then wait for a round that never comes).
go = [threading.Event() for _ in range(ROUNDS)]
blocked = 0.0
waits = 0
short = 0
parks = 0


def voluntary_switches():
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


def holder():
    for r in range(ROUNDS):
        with lock:
            go[r].set()
            end = time.thread_time() + 0.100
            while time.thread_time() < end:
                pass
        time.sleep(0.005)  # let the waiter in


def waiter():
    global blocked, waits, short, parks
    print(f"tid waiter {threading.get_native_id()}\n", end="", flush=True)
    announced.release()
    for r in range(ROUNDS):
        go[r].wait()
        t = time.perf_counter()
        # A waiter slow to wake (a loaded machine) may find the lock free: count only the
        # acquisitions that had to wait.
        if not lock.acquire(blocking=False):
            waits += 1
            v = voluntary_switches()
            lock.acquire()  # WAIT-LINE
            parks += voluntary_switches() - v
            if time.perf_counter() - t < 0.001:
                short += 1  # got it while spinning, before parking: not a blocked wait
        blocked += time.perf_counter() - t
        lock.release()


h = threading.Thread(target=holder, name="holder")
w = threading.Thread(target=waiter, name="waiter")
w.start()
h.start()
if sys.argv[3:4] == ["ready"]:
    for _ in range(1):
        announced.acquire()
    print("ready\n", end="", flush=True)
h.join()
w.join()
print(f"blocked {blocked:.6f}\n", end="", flush=True)
print(f"waits {waits}\n", end="", flush=True)
print(f"short {short}\n", end="", flush=True)
print(f"parks {parks}\n", end="", flush=True)
