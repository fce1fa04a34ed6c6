"""One thread sorts a shared list with a slow (CPU-bound) key function, holding the list's
critical section; another appends to the same list meanwhile and measures how long it blocked.
Prints `list 0x…` (the list's address) and `blocked SECONDS` at the end."""
import threading
import time

ROUNDS = 8
shared = list(range(40))
print(f"list {hex(id(shared))}\n", end="", flush=True)
started = 0
done_rounds = 0
blocked = 0.0


def slow_key(x):
    global started
    started = 1
    end = time.thread_time() + 0.0025
    while time.thread_time() < end:
        pass
    return x


def sorter():
    global started, done_rounds
    for _ in range(ROUNDS):
        shared.sort(key=slow_key)
        started = 0
        done_rounds += 1
        # Wait (spinning, attached) for the appender to finish this round.
        while done_rounds > appended:
            pass


appended = 0


def appender():
    global blocked, appended
    print(f"tid appender {threading.get_native_id()}\n", end="", flush=True)
    for r in range(ROUNDS):
        while not started:
            pass
        t = time.perf_counter()
        shared.append(r)  # APPEND-LINE
        blocked += time.perf_counter() - t
        shared.pop()
        appended += 1


a = threading.Thread(target=appender, name="appender")
s = threading.Thread(target=sorter, name="sorter")
a.start()
s.start()
s.join()
a.join()
print(f"blocked {blocked:.6f}\n", end="", flush=True)
