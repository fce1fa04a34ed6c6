"""The main thread holds the interpreter's global import lock (`_imp.acquire_lock()`) for a second
while a worker thread waits for it."""
import _imp
import threading
import time


def waiter():
    _imp.acquire_lock()  # WAIT-LINE
    _imp.release_lock()


_imp.acquire_lock()
t = threading.Thread(target=waiter)
t.start()
time.sleep(1.0)
_imp.release_lock()
t.join()
print("done", flush=True)
