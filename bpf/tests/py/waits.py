"""Known-truth waits for bpf/tests/offcpu.rs: a waiter thread blocks on a lock (or an object's
critical section) that another thread holds, ROUNDS times, and measures its own time inside
each blocking call.

Every round blocks exactly once, whatever the load: the holder keeps the lock (or the list's
critical section) until the waiter has parked on it, which it sees in the mutex's "has parked"
bit (_Py_HAS_PARKED, 2). The mutex's offset in the object comes from the test (the symbolizer's
layout tables) on the "go" line.

Usage: waits.py lock|cs ROUNDS HOLD_S
Prints "ready", waits for "go OFFSET" on stdin, starts its threads and prints "started", waits
for a line (the test registers the threads), runs, then prints one JSON line:
{"waiter_tid", "addr_obj" (id of the lock or list), "count", "wait_s" (sum of measured calls),
"schedstat" (the waiter's /proc/thread-self/schedstat at its end, for comparison)}.
"""
import ctypes
import json
import sys
import threading
import time

mode, rounds, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
lock = threading.Lock()
held = threading.Event()
done = threading.Event()
result = {}
PARKED = 2
mutex = None  # ctypes view of the mutex byte, set from the "go" line


def wait_parked(pause):
    while not mutex.value & PARKED:
        if pause:
            time.sleep(0.0005)


def lock_holder():
    result.update(holder_tid=threading.get_native_id())
    for _ in range(rounds):
        lock.acquire()
        held.set()
        time.sleep(hold)
        wait_parked(True)
        lock.release()
        done.wait()
        done.clear()


def lock_waiter():
    total = 0.0
    for _ in range(rounds):
        held.wait()
        held.clear()
        t0 = time.perf_counter()
        lock.acquire()
        total += time.perf_counter() - t0
        lock.release()
        done.set()
    result.update(waiter_tid=threading.get_native_id(), addr_obj=id(lock), count=rounds, wait_s=total)
    result.update(schedstat=open("/proc/thread-self/schedstat").read().strip())



# Critical sections: list.sort holds the list's per-object mutex while it calls the key function
# for every item and sorts; list.append from another thread waits for it.
items = list(range(int(hold * 4_000_000)))
started = [0]


def key(x, started=started):
    if not started[0]:
        started[0] = 1
        # Spin (no sleep: a thread that detaches suspends its critical sections) until the
        # waiter is parked on the list's mutex.
        wait_parked(False)
    return -x


def cs_holder():
    for _ in range(rounds):
        held.wait()
        held.clear()
        items.sort(key=key)
        done.wait()
        done.clear()


def cs_waiter():
    total = 0.0
    for _ in range(rounds):
        started[0] = 0
        held.set()
        while not started[0]:
            pass
        t0 = time.perf_counter()
        items.append(0)
        total += time.perf_counter() - t0
        items.pop()
        done.set()
    result.update(waiter_tid=threading.get_native_id(), addr_obj=id(items), count=rounds, wait_s=total)
    result.update(schedstat=open("/proc/thread-self/schedstat").read().strip())


print("ready", flush=True)
offset = int(sys.stdin.readline().split()[1])
mutex = ctypes.c_uint8.from_address(id(lock if mode == "lock" else items) + offset)
pair = (lock_holder, lock_waiter) if mode == "lock" else (cs_holder, cs_waiter)
begin = threading.Event()


def gated(f):
    def run():
        begin.wait()
        f()

    return run


threads = [threading.Thread(target=gated(f)) for f in pair]
for t in threads:
    t.start()
print("started", flush=True)
sys.stdin.readline()
begin.set()
for t in threads:
    t.join()
print(json.dumps(result), flush=True)
sys.stdin.readline()
