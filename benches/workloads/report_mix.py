"""Eight threads for SECONDS (default 60) doing varied work, so that a recording has many
distinct stacks (the HTML report benchmark): four share one threading.Lock at different depths
and lines, two copy and update one shared dict, one sleeps and writes files, one computes alone."""
import os
import sys
import tempfile
import threading
import time

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
stop = time.monotonic() + SECONDS
lock = threading.Lock()
shared = {i: i for i in range(5000)}


def leaf_a(n):
    return sum(i * i for i in range(n))


def leaf_b(n):
    return "".join(str(i) for i in range(n))


def nested(depth, n, f):
    if depth == 0:
        return f(n)
    return nested(depth - 1, n, f)


def locker(k):
    while time.monotonic() < stop:
        with lock:
            nested(k % 4 + 1, 3000, leaf_a if k % 2 else leaf_b)
        nested(k, 2000, leaf_b)


def dicter(k):
    while time.monotonic() < stop:
        c = shared.copy()
        for i in range(200):
            shared[(i * 7 + k) % 5000] = len(c)


def sleeper():
    d = tempfile.mkdtemp()
    while time.monotonic() < stop:
        time.sleep(0.01)
        with open(os.path.join(d, "f"), "w") as f:
            f.write("x" * 10000)


def alone():
    while time.monotonic() < stop:
        nested(6, 5000, leaf_a)


threads = [threading.Thread(target=locker, args=(k,), name=f"locker-{k}") for k in range(4)]
threads += [threading.Thread(target=dicter, args=(k,), name=f"dicter-{k}") for k in range(2)]
threads += [threading.Thread(target=sleeper, name="sleeper"), threading.Thread(target=alone, name="alone")]
for t in threads:
    t.start()
for t in threads:
    t.join()
