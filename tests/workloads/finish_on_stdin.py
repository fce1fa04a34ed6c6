"""Two threads run Python until a line arrives on stdin, then finish; prints `ready` once they
run and `done` once they have been joined (tests/record.rs: stacks read after their threads
finished)."""
import sys
import threading

stop = threading.Event()


def spin():
    n = 0
    while not stop.is_set():
        n += sum(range(1000))  # SPIN-LINE


threads = [threading.Thread(target=spin) for _ in range(2)]
for t in threads:
    t.start()
print("ready", flush=True)
sys.stdin.readline()
stop.set()
for t in threads:
    t.join()
print("done", flush=True)
