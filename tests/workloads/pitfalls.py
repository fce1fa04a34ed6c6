"""One known free-threading pitfall per ROW, as a bad variant (the pitfall) and a fixed variant
(the remedy of crates/analysis/data/pitfalls.json applied). Worker threads run until a deadline.

Usage: pitfalls.py ROW bad|fixed [threads] [seconds]
ROW: shared-constant threading-local class-static-method generated-init type-lookup-lock
     closure-cell shared-random lru-cache logging-record logging-handler-lock logging-under-lock
     logging-disabled-call
     lock-held-across-work list-arithmetic shared-mutable shared-container-writes
     stop-the-world-gc tracemalloc
Each bad variant's hot line is marked `# BAD-LINE`; lock-held-across-work's waiting line
`# WAIT-LINE` and its holder's `# HOLD-LINE`; logging-under-lock's `# LOG-WAIT-LINE` and
`# LOG-HOLD-LINE`."""
import collections
import dataclasses
import functools
import gc
import io
import logging
import os
import random
import sys
import threading
import time
import tracemalloc

ROW, VARIANT = sys.argv[1], sys.argv[2]
THREADS = int(sys.argv[3]) if len(sys.argv) > 3 else 2
SECONDS = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
BAD = VARIANT == "bad"
deadline = 0.0


def until_deadline(step):
    while time.monotonic() < deadline:
        step()


# shared-constant: a str constant of the worker's code, loaded by every thread.
def shared_constant():
    if BAD:
        def step():
            for _ in range(5_000):
                s = "a string"; s = "a string"; s = "a string"; s = "a string"  # BAD-LINE
    else:
        mine = "".join(["a", " string"])  # this thread's own object

        def step():
            for _ in range(5_000):
                s = mine; s = mine; s = mine; s = mine
    until_deadline(step)


tls = threading.local()


def threading_local():
    mine = object()

    def step():
        if BAD:
            for _ in range(5_000):
                t = tls; t = tls; t = tls; t = tls  # BAD-LINE
        else:
            for _ in range(5_000):
                t = mine; t = mine; t = mine; t = mine
    until_deadline(step)


class Helpers:
    @staticmethod
    def twice(x):
        return x + x

    @classmethod
    def make(cls, x):
        return x


def twice(x):
    return x + x


def class_static_method():
    def step():
        if BAD:
            for i in range(5_000):
                Helpers.twice(i); Helpers.make(i)  # BAD-LINE
        else:
            for i in range(5_000):
                twice(i); twice(i)
    until_deadline(step)


@dataclasses.dataclass
class Point:
    x: int
    y: int


Pair = collections.namedtuple("Pair", "x y")


def generated_init():
    def step():
        if BAD:
            for i in range(2_000):
                Point(i, i); Pair(i, i)  # BAD-LINE
        else:
            for i in range(2_000):
                (i, i); (i, i)
    until_deadline(step)


class Visitor:
    def visit_a(self):
        return 1

    def visit_b(self):
        return 2


def type_lookup_lock():
    v = Visitor()
    names = ["a", "b"]
    interned = {n: sys.intern(f"visit_{n}") for n in names}

    def step():
        if BAD:
            for i in range(2_000):
                getattr(v, f"visit_{names[i & 1]}")()  # BAD-LINE
        else:
            for i in range(2_000):
                getattr(v, interned[names[i & 1]])()
    until_deadline(step)


def make_closure(items):
    def inner():
        n = 0
        for _ in range(5_000):
            a = items; b = items; c = items; d = items  # BAD-LINE
            n += 1
        return n
    return inner


SHARED_CLOSURE = make_closure([1, 2, 3])


def closure_cell():
    f = SHARED_CLOSURE if BAD else make_closure([1, 2, 3])  # fixed: this thread's closure and list
    until_deadline(f)


def shared_random():
    rng = random.Random()
    mine = rng.random  # this thread's bound method (not the type's shared descriptor)

    def step(mine=mine):
        if BAD:
            for _ in range(5_000):
                random.random()  # BAD-LINE
        else:
            for _ in range(5_000):
                mine()
    until_deadline(step)


@functools.lru_cache(maxsize=128)
def cached_square(x):
    return x * x


def lru_cache():
    mine = {}

    def step():
        if BAD:
            for i in range(5_000):
                cached_square(i & 15)  # BAD-LINE
        else:
            for i in range(5_000):
                k = i & 15
                v = mine.get(k)
                if v is None:
                    mine[k] = v = k * k
    until_deadline(step)


def stream_logger(name):
    log = logging.getLogger(name)
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(logging.StreamHandler(io.StringIO()))
    return log


SHARED_LOG = stream_logger("shared")


def log_items(log):
    """200 items logged. The bad variants create a record per item, with an argument; the fixed
    ones apply the logging-record remedy as well, so that each pair differs only by its own row:
    fewer records on the hot path (one per 20 items of the program's own work: every record still
    reads shared module state, such as `logging._startTime`, whose refcount all threads share, so
    records must be a small part of the work), and messages formatted here (one argument makes
    each record check isinstance(arg, collections.abc.Mapping), whose ABC cache set all threads
    share)."""
    if BAD:
        for i in range(200):
            log.info("item %d", i)  # BAD-LINE
    else:
        for i in range(0, 200, 20):
            total = 0
            for j in range(20):
                total += sum(range(300))  # the program's own work on item i + j
            log.info(f"items {i}..{i + 19}: {total}")


def logging_record():
    # Every thread has its own logger and handler: only the records' creation is shared.
    log = stream_logger(f"own-{threading.get_native_id()}")
    until_deadline(lambda: log_items(log))


def logging_handler_lock():
    log = SHARED_LOG if BAD else stream_logger(f"own-{threading.get_native_id()}")  # fixed: own handler
    until_deadline(lambda: log_items(log))


QUIET_LOG = logging.getLogger("quiet")
QUIET_LOG.setLevel(logging.WARNING)


def logging_disabled_call():
    # A disabled debug call on one shared Logger (CPython gh-155106): each call refcounts the
    # Logger and the class-wide `Logger._tls` (a threading.local) in `_is_disabled`.
    log = QUIET_LOG

    def step():
        if BAD:
            for i in range(2_000):
                log.debug("item %d", i)  # BAD-LINE
        else:
            debug = log.isEnabledFor(logging.DEBUG)
            for i in range(2_000):
                if debug:
                    log.debug("item %d", i)
    until_deadline(step)


app_lock = threading.Lock()
total = 0


def logging_under_lock():
    log = SHARED_LOG if BAD else stream_logger(f"own-{threading.get_native_id()}")

    def step():
        global total
        for i in range(50):
            if BAD:
                with app_lock:  # LOG-WAIT-LINE
                    total += 1
                    log.warning("queue depth %d", total)  # LOG-HOLD-LINE
            else:
                with app_lock:
                    total += 1
                    depth = total
                log.warning("queue depth %d", depth)
    until_deadline(step)


def slow_work():
    x = 0; i = 0
    while i < 20_000: x += i; i += 1  # HOLD-LINE
    return x


def lock_held_across_work():
    def step():
        global total
        for _ in range(20):
            if BAD:
                with app_lock:  # WAIT-LINE
                    total += slow_work()
            else:
                x = slow_work()
                with app_lock:
                    total += x
    until_deadline(step)


SHARED_FLOATS = [i + 0.5 for i in range(1_000)]


def list_arithmetic():
    data = SHARED_FLOATS if BAD else [x + 0.0 for x in SHARED_FLOATS]  # fixed: this thread's floats

    two = float("2")  # this thread's own (a float constant is shared too, see shared-constant)

    def step(data=data, two=two):  # (locals, not closure variables)
        acc = 0.0
        for x in data: acc += x * two  # BAD-LINE
    until_deadline(step)


SHARED_LIST = [1, 2, 3]


def shared_mutable():
    mine = [1, 2, 3]

    def step():
        if BAD:
            for _ in range(5_000):
                a = SHARED_LIST; b = SHARED_LIST; c = SHARED_LIST; d = SHARED_LIST  # BAD-LINE
        else:
            for _ in range(5_000):
                a = mine; b = mine; c = mine; d = mine
    until_deadline(step)


SHARED_DICT = {}


def shared_container_writes():
    d = SHARED_DICT if BAD else {}  # fixed: this thread's dict, merged at the end
    me = threading.get_native_id()

    def step(d=d, me=me):  # (locals, not closure variables)
        for i in range(5_000):
            d[i & 255] = me  # BAD-LINE
    until_deadline(step)
    if not BAD:
        with app_lock:
            SHARED_DICT.update(d)


def stop_the_world_gc():
    # A program that builds up container objects while its threads run (a cache, a batch): the
    # heap grows, collections come often and each one scans it all with every thread paused.
    kept = []

    def step():
        keep = [[i, [i]] for i in range(2_000)]  # BAD-LINE
        kept.append(keep)
        if len(kept) > 200:
            kept.clear()
    until_deadline(step)


def tracemalloc_row():
    def step():
        keep = [i * 1.5 for i in range(2_000)]  # BAD-LINE
    until_deadline(step)


ROWS = {
    "shared-constant": shared_constant,
    "threading-local": threading_local,
    "class-static-method": class_static_method,
    "generated-init": generated_init,
    "type-lookup-lock": type_lookup_lock,
    "closure-cell": closure_cell,
    "shared-random": shared_random,
    "lru-cache": lru_cache,
    "logging-record": logging_record,
    "logging-handler-lock": logging_handler_lock,
    "logging-under-lock": logging_under_lock,
    "logging-disabled-call": logging_disabled_call,
    "lock-held-across-work": lock_held_across_work,
    "list-arithmetic": list_arithmetic,
    "shared-mutable": shared_mutable,
    "shared-container-writes": shared_container_writes,
    "stop-the-world-gc": stop_the_world_gc,
    "tracemalloc": tracemalloc_row,
}

if ROW == "stop-the-world-gc" and not BAD:
    gc.disable()  # the remedy taken to its end: no collections while the threads run
if ROW.startswith("logging-") and not BAD:
    # The logging remedies include not looking up multiprocessing and asyncio in sys.modules
    # for every record (LogRecord.__init__).
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False
if ROW == "tracemalloc" and BAD:
    tracemalloc.start()
work = ROWS[ROW]
deadline = time.monotonic() + SECONDS


def pinned(k):
    # Each worker on a CPU of its own (modulo the CPUs the process may use): on a busy machine
    # unpinned workers rarely run at the same moment, and the bad variants then contend little.
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[k % len(cpus)]})
    if os.environ.get("WORKERS_SCHED_RR"):
        # Real-time round robin at priority 1 where permitted (tests/common::realtime_workers).
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
        except PermissionError:
            pass
    work()


threads = [threading.Thread(target=pinned, args=(i,), name=f"worker-{i}") for i in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("done", ROW, VARIANT, flush=True)
