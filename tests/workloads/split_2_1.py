"""One thread alternates between two Python functions, spending CPU time 2:1 between them."""
import sys
import time

TOTAL = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0


def two_parts():
    end = time.thread_time() + 0.020
    while time.thread_time() < end:
        pass


def one_part():
    end = time.thread_time() + 0.010
    while time.thread_time() < end:
        pass


stop = time.thread_time() + TOTAL
while time.thread_time() < stop:
    two_parts()
    one_part()
