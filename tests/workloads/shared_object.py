"""Two threads call a method on objects in a tight loop: one shared object (`shared`) or one
object per thread (`private`). Usage: shared_object.py shared|private [iterations]."""
import sys
import threading
import time


class Counter:
    def bump(self):
        return 1


MODE = sys.argv[1] if len(sys.argv) > 1 else "shared"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 3_000_000
shared = Counter()


def worker():
    obj = shared if MODE == "shared" else Counter()
    for _ in range(N):
        obj.bump()  # CALL-LINE


start = time.perf_counter()
threads = [threading.Thread(target=worker) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"elapsed {time.perf_counter() - start:.4f}", file=sys.stderr)
