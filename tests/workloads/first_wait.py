"""The program's first statements make a thread wait ~300 ms on a lock the main thread holds: one
wait, at the very start of the program's own code (tests/bpf_path.rs)."""
import threading
import time

lock = threading.Lock()
lock.acquire()


def first_waiter():
    with lock:
        pass


t = threading.Thread(target=first_waiter, name="first-waiter")
t.start()
time.sleep(0.3)
lock.release()
t.join()
