"""A thread parked in a known Python function for bpf/tests/pystack.rs: after "go" on stdin it
starts a thread that calls level1 -> level2 -> level3 -> spin and spins there (the frame chain
does not change), prints "tid N", and runs until stdin closes."""
import sys
import threading


def spin():
    x = 0
    while True:
        x += 1


def level3():
    spin()


def level2():
    level3()


def level1():
    level2()


print("ready", flush=True)
sys.stdin.readline()
t = threading.Thread(target=level1, daemon=True)
t.start()
while t.native_id is None:
    pass
print("tid", t.native_id, flush=True)
sys.stdin.readline()
