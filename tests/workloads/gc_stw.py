"""One thread calls gc.collect() in a loop while two others allocate: stop-the-world pauses.
Prints `tid NAME TID` for each."""
import gc
import sys
import threading
import time

DURATION = float(sys.argv[1]) if len(sys.argv) > 1 else 1.5
go = threading.Event()
stop = 0.0
keep = [[i] * 10 for i in range(20000)]  # a heap worth collecting


def collector():
    print(f"tid collector {threading.get_native_id()}\n", end="", flush=True)
    go.wait()
    n = 0
    while time.monotonic() < stop:
        gc.collect()
        n += 1
    print(f"collections {n}\n", end="", flush=True)


def allocator(name):
    print(f"tid {name} {threading.get_native_id()}\n", end="", flush=True)
    go.wait()
    while time.monotonic() < stop:
        junk = [{"a": i} for i in range(200)]
        del junk


threads = [threading.Thread(target=collector, name="collector")]
threads += [threading.Thread(target=allocator, args=(f"alloc{i}",), name=f"alloc{i}") for i in range(2)]
for t in threads:
    t.start()
stop = time.monotonic() + DURATION  # start together, once every thread exists
go.set()
for t in threads:
    t.join()
