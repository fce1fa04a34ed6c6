"""A fixed total amount of work split over N threads (N from the first argument). With `--lock`
(the "new commit"), the hot loop takes one shared threading.Lock around each chunk of its work,
which serialises the threads."""
import sys
import threading

N = int(sys.argv[1])
LOCKED = "--lock" in sys.argv[2:]
TOTAL = 6_000_000
CHUNK = 20_000
LOCK = threading.Lock()


def chunk(total):
    for i in range(CHUNK):
        total += i % 7
    return total


def work(count):
    total = 0
    for _ in range(count // CHUNK):
        if LOCKED:
            with LOCK:  # LOCK-LINE
                total = chunk(total)
        else:
            total = chunk(total)
    return total


threads = [threading.Thread(target=work, args=(TOTAL // N,)) for _ in range(N)]
for t in threads:
    t.start()
for t in threads:
    t.join()
