"""Two threads call shared things in a loop, the patterns of CPython free-threading's scaling
pitfalls, each with a fixed variant. Usage: shared_calls.py MODE [threads] [seconds].

- `staticmethod`: a shared class's staticmethod called in a loop (the function's refcount is
  shared by every thread); `staticmethod-fixed`: each thread calls its own copy of the function.
- `logdebug`: a disabled `log.debug()` in a loop (CPython gh-155106: the shared `Logger`'s
  refcount); `logdebug-fixed`: the level checked once outside the loop.

It prints `object TYPE ID` for the shared object before the workers start, and `elapsed S` and
`iterations N` (all threads) at the end."""
import logging
import sys
import threading
import time
import types

MODE = sys.argv[1] if len(sys.argv) > 1 else "staticmethod"
THREADS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0


class Shared:
    @staticmethod
    def add(a, b):
        return a + b


log = logging.getLogger("shared_calls")
log.setLevel(logging.WARNING)


def staticmethod_worker(deadline, out):
    n = 0
    while time.monotonic() < deadline:
        for _ in range(2_000):
            Shared.add(1, 2)  # STATIC-LINE
        n += 2_000
    out.append(n)


def staticmethod_fixed_worker(deadline, out):
    f = Shared.add
    add = types.FunctionType(f.__code__, f.__globals__, f.__name__)
    n = 0
    while time.monotonic() < deadline:
        for _ in range(2_000):
            add(1, 2)
        n += 2_000
    out.append(n)


def logdebug_worker(deadline, out):
    n = 0
    while time.monotonic() < deadline:
        for _ in range(2_000):
            log.debug("x")  # LOG-LINE
        n += 2_000
    out.append(n)


def logdebug_fixed_worker(deadline, out):
    n = 0
    enabled = log.isEnabledFor(logging.DEBUG)
    while time.monotonic() < deadline:
        for _ in range(2_000):
            if enabled:
                log.debug("x")
        n += 2_000
    out.append(n)


WORKERS = {
    "staticmethod": (staticmethod_worker, Shared.__dict__["add"]),
    "staticmethod-fixed": (staticmethod_fixed_worker, Shared.__dict__["add"]),
    "logdebug": (logdebug_worker, log),
    "logdebug-fixed": (logdebug_fixed_worker, log),
}
target, shared = WORKERS[MODE]
print("object", type(shared).__qualname__, hex(id(shared)), flush=True)
out = []
deadline = time.monotonic() + SECONDS
start = time.perf_counter()
threads = [threading.Thread(target=target, args=(deadline, out)) for _ in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"elapsed {time.perf_counter() - start:.4f}")
print(f"iterations {sum(out)}")
