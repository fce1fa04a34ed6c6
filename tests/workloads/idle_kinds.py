"""Threads that only sleep, wait on an Event nobody sets, or join: no contention at all.
Prints `tid NAME TID` for each."""
import threading
import time


def sleeper():
    print(f"tid sleeper {threading.get_native_id()}\n", end="", flush=True)
    for _ in range(4):
        time.sleep(0.2)


def event_waiter():
    print(f"tid event_waiter {threading.get_native_id()}\n", end="", flush=True)
    threading.Event().wait(0.8)


def joiner(others):
    print(f"tid joiner {threading.get_native_id()}\n", end="", flush=True)
    for t in others:
        t.join()


s = threading.Thread(target=sleeper, name="sleeper")
e = threading.Thread(target=event_waiter, name="event_waiter")
s.start()
e.start()
j = threading.Thread(target=joiner, args=([s, e],), name="joiner")
j.start()
j.join()
