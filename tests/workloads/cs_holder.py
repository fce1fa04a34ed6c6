"""One thread sorts a list with a slow key function (holding the list's critical section for
about 3 s); another appends to the same list and blocks. Prints `list 0x…`, the TIDs and
`ready` once the appender is blocked."""
import threading
import time

# Each thread that prints its TID releases this once; `ready` waits for all of them (a
# test reads every TID before it acts on `ready`).
announced = threading.Semaphore(0)

shared = list(range(60))
print(f"list {hex(id(shared))}\n", end="", flush=True)
started = False


def slow_key(x):
    global started
    started = True
    end = time.thread_time() + 0.05
    while time.thread_time() < end:
        pass
    return x


def sorter():
    print(f"tid sorter {threading.get_native_id()}\n", end="", flush=True)
    announced.release()
    shared.sort(key=slow_key)


def appender():
    print(f"tid appender {threading.get_native_id()}\n", end="", flush=True)
    announced.release()
    while not started:
        pass
    shared.append(-1)  # APPEND-LINE


threads = [threading.Thread(target=sorter), threading.Thread(target=appender)]
for t in threads:
    t.start()
time.sleep(0.5)
for _ in range(len(threads)):
    announced.acquire()
print("ready\n", end="", flush=True)
for t in threads:
    t.join()
