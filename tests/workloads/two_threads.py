"""Two named threads that each burn ~2 s of CPU time (their own, so a busy machine stretches the
run but not the work): one hashes in native code (HACL* SHA-256), one loops in Python."""
import _sha2
import sys
import threading
import time

DURATION = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
buf = b"x" * 65536


def hasher():
    print(f"tid hasher {threading.get_native_id()}\n", end="", flush=True)
    end = time.thread_time() + DURATION
    while time.thread_time() < end:
        _sha2.sha256(buf).digest()  # SHA-LINE


def spinner():
    print(f"tid spinner {threading.get_native_id()}\n", end="", flush=True)
    end = time.thread_time() + DURATION
    x = 0
    while time.thread_time() < end:
        x += 1  # SPIN-LINE


threads = [threading.Thread(target=hasher, name="hasher"), threading.Thread(target=spinner, name="spinner")]
for t in threads:
    t.start()
for t in threads:
    t.join()
