"""Burns CPU in Python until killed (for interruption tests); prints 'ready' once running."""
import sys
import time

print("ready\n", end="", flush=True)
limit = time.monotonic() + float(sys.argv[1] if len(sys.argv) > 1 else 60)


def burn():
    x = 0
    while time.monotonic() < limit:
        x += 1


burn()
