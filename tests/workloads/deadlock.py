"""Two threads deadlock on two threading.Locks (A then B / B then A); with the argument `rlock`,
on two RLocks. Prints the locks' addresses and each thread's TID, then `ready` once both are
stuck. Never exits by itself."""
import sys
import threading
import time

# Each thread that prints its TID releases this once; `ready` waits for all of them (a
# test reads every TID before it acts on `ready`).
announced = threading.Semaphore(0)

kind = threading.RLock if sys.argv[1:] == ["rlock"] else threading.Lock
lock_a = kind()
lock_b = kind()
print(f"lock_a {hex(id(lock_a))}\n", end="", flush=True)
print(f"lock_b {hex(id(lock_b))}\n", end="", flush=True)
barrier = threading.Barrier(2)


def first():
    print(f"tid first {threading.get_native_id()}\n", end="", flush=True)
    announced.release()
    with lock_a:
        barrier.wait()
        with lock_b:  # FIRST-WAIT
            pass


def second():
    print(f"tid second {threading.get_native_id()}\n", end="", flush=True)
    announced.release()
    with lock_b:
        barrier.wait()
        with lock_a:  # SECOND-WAIT
            pass


threads = [threading.Thread(target=first, daemon=True), threading.Thread(target=second, daemon=True)]
for t in threads:
    t.start()
time.sleep(0.3)
for _ in range(len(threads)):
    announced.acquire()
print("ready\n", end="", flush=True)
time.sleep(600)
