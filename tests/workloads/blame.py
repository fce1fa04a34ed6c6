"""Blame: one thread (`Holder`) repeatedly holds a shared resource across `slow_section`, called
from a known line, while three `Waiter-N` threads wait for it.

    blame.py lock [SECONDS]   a threading.Lock held by `with lock:` around slow_section()
    blame.py dict [SECONDS]   a dict's critical section, held by a long dict.update() inside
                              slow_section while the waiters store into the same dict

Prints `tid NAME N`, the shared object's address (`lock 0x…` or `dict 0x…`) and `ready`."""
import sys
import threading
import time

# Each thread that prints its TID releases this once; `ready` waits for all of them (a
# test reads every TID before it acts on `ready`).
announced = threading.Semaphore(0)

mode = sys.argv[1] if len(sys.argv) > 1 else "lock"
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
lock = threading.Lock()
shared = {}
big = {i: i for i in range(1_000_000)}
print(f"{mode} {hex(id(lock if mode != 'dict' else shared))}\n", end="", flush=True)
deadline = time.monotonic() + seconds


def slow_section():
    if mode != "dict":
        return sum(range(4_000_000))  # SLOW-LINE
    shared.update(big)  # UPDATE-LINE


def holder():
    print(f"tid Holder {threading.get_native_id()}\n", end="", flush=True)
    announced.release()
    while time.monotonic() < deadline:
        if mode != "dict":
            with lock:
                slow_section()  # HOLD-LOCK
        else:
            slow_section()  # HOLD-DICT
        time.sleep(0.0005)


def waiter(n):
    print(f"tid Waiter-{n} {threading.get_native_id()}\n", end="", flush=True)
    announced.release()
    i = 0
    while time.monotonic() < deadline:
        if mode != "dict":
            with (lock2 if mode == "two" and n == 2 else lock):  # WAIT-LINE
                i += 1
        else:
            shared[-n] = i  # WAIT-LINE
            i += 1
        time.sleep(0.001)


# blame.py two [SECONDS]: as `lock`, and a second lock held by `Holder-2` around other_section();
# Waiter-2 waits on that one. Prints `two 0x…` (the first lock) and `lock2 0x…`.
lock2 = threading.Lock()


def other_section():
    return sum(range(2_000_000))  # OTHER-LINE


def holder2():
    print(f"tid Holder-2 {threading.get_native_id()}\n", end="", flush=True)
    announced.release()
    while time.monotonic() < deadline:
        with lock2:
            other_section()  # HOLDER2-LINE
        time.sleep(0.0005)


if mode == "two":
    print(f"lock2 {hex(id(lock2))}\n", end="", flush=True)
threads = [threading.Thread(target=holder, name="Holder")]
threads += [threading.Thread(target=waiter, args=(n,), name=f"Waiter-{n}") for n in range(1, 4)]
if mode == "two":
    threads.append(threading.Thread(target=holder2, name="Holder-2"))
for t in threads:
    t.start()
for _ in range(len(threads)):
    announced.acquire()
print("ready\n", end="", flush=True)
for t in threads:
    t.join()
