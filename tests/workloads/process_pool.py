"""A ProcessPoolExecutor with 2 worker processes running a known hot function, the parent
waiting on the results. argv[1]: the multiprocessing start method (fork, spawn, forkserver);
`--shell` also runs a busy non-Python child (/bin/sh); `--wait-ready` prints "ready" once the
workers run and keeps them busy until SIGUSR1 (at most 120 s: for attaching, however late the
attach comes on a loaded machine); `--rounds=N` sets the number of hot tasks (default 4)."""
import signal
import subprocess
import time
import sys
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

COUNT = 1_500_000


def hot(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


BARRIER = None


def init(barrier):
    global BARRIER
    BARRIER = barrier


def hot_task(n):
    # Both workers start each pair of tasks together: neither can take every task while the
    # other waits for a CPU.
    BARRIER.wait(timeout=120)
    return hot(n)


def main():
    method = sys.argv[1] if len(sys.argv) > 1 else "spawn"
    rounds = 4
    rounds = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--rounds=")), rounds)
    if "--shell" in sys.argv:
        subprocess.run(["/bin/sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"], check=True)
    ctx = mp.get_context(method)
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx, initializer=init, initargs=(ctx.Barrier(2),)) as ex:
        # Two tasks at once start both workers (spawn starts them on demand, one per task that
        # finds no idle worker); the hot tasks then go to both.
        list(ex.map(time.sleep, [0.3, 0.3]))
        if "--wait-ready" in sys.argv:
            stop = []
            signal.signal(signal.SIGUSR1, lambda *_: stop.append(1))
            deadline = time.monotonic() + 120
            # Both workers stay busy, one pair of tasks after another, until told to stop.
            futures = [ex.submit(hot_task, COUNT) for _ in range(2)]
            print("ready", flush=True)
            total = 0
            while not stop and time.monotonic() < deadline:
                total += sum(f.result() for f in futures)
                futures = [ex.submit(hot_task, COUNT) for _ in range(2)]
            print(total + sum(f.result() for f in futures), flush=True)
            return
        futures = [ex.submit(hot_task, COUNT) for _ in range(rounds)]
        print(sum(f.result() for f in futures), flush=True)  # RESULTS-LINE


if __name__ == "__main__":
    main()
