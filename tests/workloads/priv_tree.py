"""A process tree for the privilege-boundary tests.

`priv_tree.py SECONDS [INTERPRETER…]` starts one child per interpreter given (each runs this
script with `--child`), prints `child PID EUID` for each once the child reports its effective
uid, then `ready`, then burns CPU in `parent_loop` for SECONDS (the children in `child_loop`).
"""
import os
import subprocess
import sys
import time


def parent_loop(seconds):
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


def child_loop(seconds):
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


if sys.argv[1] == "--child":
    print(f"euid {os.geteuid()}", flush=True)
    child_loop(float(sys.argv[2]))
    sys.exit(0)

seconds = float(sys.argv[1])
kids = []
for interpreter in sys.argv[2:]:
    p = subprocess.Popen([interpreter, __file__, "--child", str(seconds)], stdout=subprocess.PIPE, text=True)
    euid = p.stdout.readline().split()[1]
    print(f"child {p.pid} {euid}", flush=True)
    kids.append(p)
print("ready", flush=True)
parent_loop(seconds)
for p in kids:
    p.wait()
