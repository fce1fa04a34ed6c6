"""A thread that starts one second after launch and burns CPU for a second."""
import threading
import time


def late_worker():
    print(f"tid late {threading.get_native_id()}\n", end="", flush=True)
    end = time.thread_time() + 1.0
    n = 0
    while time.thread_time() < end:
        n += 1


time.sleep(1.0)
t = threading.Thread(target=late_worker, name="late")
t.start()
t.join()
