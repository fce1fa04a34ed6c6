#!/usr/bin/env python3
"""Benchmark for attaching (not a test: prints figures, asserts nothing).

  python3 benches/attach_overhead.py [--runs N]

  1. `ftprof dump --pid` on a process with 50 parked threads (goal: under 200 ms), without and
     with --native;
  2. the slowdown of a running 2-thread CPU-bound workload while `ftprof record --pid` is attached
     (attached 0.3 s after it starts, until it exits), against the same workload alone.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--iterations", default="20000000")
    args = ap.parse_args()
    py = subprocess.run([os.path.join(ROOT, "scripts/provision-python.sh")], check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ftprof"], cwd=ROOT, check=True)
    ftprof = os.path.join(ROOT, "target/release/ftprof")
    tmp = tempfile.mkdtemp()

    target = subprocess.Popen([py, os.path.join(ROOT, "tests/workloads/many_threads.py"), "50", "120"], stdout=subprocess.PIPE, text=True)
    assert target.stdout.readline().strip() == "ready"
    for native in (False, True):
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            subprocess.run([ftprof, "dump", "--pid", str(target.pid)] + (["--native"] if native else []), check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t)
        print(f"dump{' --native' if native else ''} on 51 threads: median {statistics.median(times)*1000:.0f} ms "
              f"[{min(times)*1000:.0f}-{max(times)*1000:.0f}] (goal: < 200 ms)")
    target.kill()
    target.wait()

    work = [py, os.path.join(ROOT, "tests/workloads/cpu_bound.py"), "2", args.iterations]
    bare, attached = [], []
    for _ in range(args.runs):
        r = subprocess.run(work, check=True, capture_output=True, text=True)
        bare.append(float(r.stderr.split()[-1]))
        p = subprocess.Popen(work, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
        rec = subprocess.Popen([ftprof, "record", "--pid", str(p.pid), "-o", os.path.join(tmp, "a.svg")], stderr=subprocess.DEVNULL)
        _, err = p.communicate()
        rec.wait()
        attached.append(float(err.split()[-1]))
    b, a = statistics.median(bare), statistics.median(attached)
    print(f"2-thread CPU-bound workload: alone {b:.3f} s, with record --pid attached {a:.3f} s: {a/b:.3f}x")


if __name__ == "__main__":
    sys.exit(main())
