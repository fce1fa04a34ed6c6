"""Two threads run Python; after a while the main thread imports an extension module (built by the
test in the directory given) and prints when. Usage: gil_import.py DIR MODULE [seconds]."""
import importlib.util
import sys
import threading
import time

sys.path.insert(0, sys.argv[1])
MODULE = sys.argv[2]
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 1.5
stop = False


def spin():
    n = 0
    while not stop:
        n += 1


threads = [threading.Thread(target=spin) for _ in range(2)]
for t in threads:
    t.start()
time.sleep(SECONDS / 2)
# Find the file first (warming the finders' caches): the timed part is the import proper,
# loading and initialising the extension, where the interpreter decides about the GIL.
importlib.util.find_spec(MODULE)
before = time.monotonic()
module = importlib.import_module(MODULE)
after = time.monotonic()
print(f"import_at {before:.6f} {after:.6f}", flush=True)
print(f"gil_enabled {int(sys._is_gil_enabled())}", flush=True)
time.sleep(SECONDS / 2)
stop = True
for t in threads:
    t.join()
