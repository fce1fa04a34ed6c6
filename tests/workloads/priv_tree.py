"""A process tree for the privilege-boundary tests.

`priv_tree.py SECONDS [INTERPRETER…]` starts one child per interpreter given (each runs this
script with `--child`), prints `child PID EUID` for each once the child reports its effective
uid, then burns CPU in `parent_loop` for SECONDS (the children in `child_loop`), which prints
`ready` first: a stack read once `ready` is seen is in `parent_loop` (printed before it, a loaded
machine once left the process at the print, in `<module>`, when the test read it).
"""
import os
import subprocess
import sys
import time


def parent_loop(seconds):
    print("ready", flush=True)
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
parent_loop(seconds)
for p in kids:
    p.wait()
