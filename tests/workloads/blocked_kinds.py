"""Threads blocked in different ways for `dump`: one reads a pipe nobody writes (I/O), one
acquires a Semaphore nobody releases. Prints their TIDs and `ready`; exits after 30 s."""
import os
import threading
import time

r, w = os.pipe()
sem = threading.Semaphore(0)


def reader():
    print(f"tid reader {threading.get_native_id()}\n", end="", flush=True)
    os.read(r, 1)  # READ-LINE


def semaphore_waiter():
    print(f"tid sem {threading.get_native_id()}\n", end="", flush=True)
    sem.acquire(timeout=30)  # SEM-LINE


for f in (reader, semaphore_waiter):
    threading.Thread(target=f, daemon=True).start()
time.sleep(0.5)
print("ready\n", end="", flush=True)
time.sleep(30)
