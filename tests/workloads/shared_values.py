"""Worker threads stall on the reference count of one shared object, reached different ways:
`const` (a str constant in the worker's co_consts), `local` (a threading.local created by the main
thread, read through a global), `list` (a list created by the main thread, read through a
global), `attr` (a list that is an attribute of a global instance). It prints the object's id
(address) and rendering before the workers start.
Usage: shared_values.py const|local|list|attr [threads] [seconds]."""
import sys
import threading
import time

MODE = sys.argv[1]
THREADS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0

SHARED_LIST = [1, 2, 3]
tls = threading.local()


class Holder:
    pass


H = Holder()
H.items = [4, 5, 6]


def const_worker(deadline):
    while time.monotonic() < deadline:
        for _ in range(10_000):
            s = "a string"; s = "a string"; s = "a string"; s = "a string"  # CONST-LINE


def local_worker(deadline):
    while time.monotonic() < deadline:
        for _ in range(10_000):
            t = tls; t = tls; t = tls; t = tls  # LOCAL-LINE


def list_worker(deadline):
    while time.monotonic() < deadline:
        for _ in range(10_000):
            a = SHARED_LIST; b = SHARED_LIST; c = SHARED_LIST; d = SHARED_LIST  # LIST-LINE


def attr_worker(deadline):
    while time.monotonic() < deadline:
        for _ in range(10_000):
            a = H.items; b = H.items; c = H.items; d = H.items  # ATTR-LINE


if MODE == "attr":
    target = attr_worker
    print("object list", hex(id(H.items)))
elif MODE == "const":
    target = const_worker
    print("object str", "'a string'", hex(id([c for c in const_worker.__code__.co_consts if c == "a string"][0])))
elif MODE == "local":
    target = local_worker
    print("object", type(tls).__module__ + "." + type(tls).__qualname__, hex(id(tls)))
else:
    target = list_worker
    print("object list", hex(id(SHARED_LIST)))
sys.stdout.flush()
deadline = time.monotonic() + SECONDS
threads = [threading.Thread(target=target, args=(deadline,)) for _ in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
