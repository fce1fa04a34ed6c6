"""N threads (default 50) parked in different ways — sleeping, blocked on a held Lock, waiting on
an Event — for dump benchmarks. Prints `ready` once they are all parked; exits after SECONDS."""
import sys
import threading
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
held = threading.Lock()
held.acquire()
never = threading.Event()


def sleeper():
    time.sleep(SECONDS)


def locker():
    held.acquire(timeout=SECONDS)


def waiter():
    never.wait(SECONDS)


kinds = [sleeper, locker, waiter]
threads = [threading.Thread(target=kinds[i % 3], daemon=True) for i in range(N)]
for t in threads:
    t.start()
time.sleep(0.5)
print("ready\n", end="", flush=True)
time.sleep(SECONDS)
