"""A holder keeps a threading.Lock for ROUNDS x 100 ms of busy work; a waiter blocks on it each
time. Usage: lock_handoff.py [lock|rlock] [ROUNDS (default 10)] [ready]; with `ready`, prints `ready` once
the threads run. Prints the lock's address
(`lock 0x…`) and the waiter's own measured blocked time (seconds) as `blocked SECONDS`."""
import sys
import threading
import time

lock = threading.RLock() if sys.argv[1:2] == ["rlock"] else threading.Lock()
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
print(f"lock {hex(id(lock))}\n", end="", flush=True)
ready = threading.Event()
go = threading.Event()
blocked = 0.0


def holder():
    for _ in range(ROUNDS):
        with lock:
            go.set()
            end = time.thread_time() + 0.100
            while time.thread_time() < end:
                pass
        time.sleep(0.005)  # let the waiter in


def waiter():
    global blocked
    print(f"tid waiter {threading.get_native_id()}\n", end="", flush=True)
    for _ in range(ROUNDS):
        go.wait()
        go.clear()
        t = time.perf_counter()
        with lock:  # WAIT-LINE
            blocked += time.perf_counter() - t


h = threading.Thread(target=holder, name="holder")
w = threading.Thread(target=waiter, name="waiter")
w.start()
h.start()
if sys.argv[3:4] == ["ready"]:
    print("ready\n", end="", flush=True)
h.join()
w.join()
print(f"blocked {blocked:.6f}\n", end="", flush=True)
