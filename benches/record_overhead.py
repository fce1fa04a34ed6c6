#!/usr/bin/env python3
"""Benchmark for `ftprof record` (not a test: prints ratios, asserts nothing).

  python3 benches/record_overhead.py [--runs N]

Measures, with the release build of ftprof and the provisioned free-threaded CPython:
  1. fixed cost: `ftprof record -- python -c pass` against the bare `python -c pass`, side by
     side with `perf record -g -- python -c pass` (goal: at most 20 ms added; medians of 10);
  2. overhead on a 2-thread CPU-bound workload: wall time under ftprof and under
     `perf record --call-graph dwarf` against the bare run (goal: at most 3 % for ftprof);
  3. overhead on a 2-thread contended workload (lock + dict), with wait attribution and lock
     identity on (the default) and off (--no-waits) (goal: at most 1.10x).
Medians of N runs; run it on an otherwise idle machine.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def timed(cmd, runs, env=None):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), max(times)


def target_time(cmd):
    """Run cmd; return (whole command wall time, the workload's own 'elapsed' report)."""
    t = time.perf_counter()
    r = subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    total = time.perf_counter() - t
    own = [float(l.split()[1]) for l in r.stderr.splitlines() if l.startswith("elapsed ")]
    return total, own[0]


def compare(title, variants, work, runs):
    """Run `work` under each variant (a command prefix), interleaved so that drifting machine load
    hits all of them alike; print and return the medians (whole command, workload's own time)."""
    res = {k: [] for k in variants}
    for _ in range(runs):
        for name, prefix in variants.items():
            res[name].append(target_time(prefix + work))
    med = {k: (statistics.median(t for t, _ in v), statistics.median(o for _, o in v)) for k, v in res.items()}
    print(title)
    print("  variant       workload's own time   whole command")
    bt, bo = med["bare"]
    for name, (t, o) in med.items():
        print(f"  {name:12s}  {o:7.3f} s  {o/bo:6.3f}x      {t:7.3f} s  {t/bt:6.3f}x")
    return med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--iterations", default="20000000")
    ap.add_argument("--contended-iterations", default="400000")
    args = ap.parse_args()
    py = sh([os.path.join(ROOT, "scripts/provision-python.sh")], capture_output=True, text=True).stdout.strip()
    sh(["cargo", "build", "--release", "-q", "-p", "ftprof"], cwd=ROOT)
    ftprof = os.path.join(ROOT, "target/release/ftprof")
    tmp = tempfile.mkdtemp()
    out = os.path.join(tmp, "p.svg")
    print(f"interpreter: {py}")
    print(f"machine: {os.cpu_count()} CPUs; medians of {args.runs} runs (min-max in brackets)\n")

    fixed_runs = max(args.runs, 10)
    trivial = [py, "-c", "pass"]
    fixed = {
        "bare": [],
        "ftprof": [ftprof, "record", "-o", out, "--"],
        "ftprof json": [ftprof, "record", "-f", "json", "-o", out + ".json", "--"],
    }
    if shutil.which("perf"):
        fixed["perf record -g"] = ["perf", "record", "-q", "-g", "-o", os.path.join(tmp, "fixed.data"), "--"]
    # The first run with an interpreter built with DWARF indexes it for later runs (once per
    # interpreter and ftprof build): timed apart, as what a first run costs.
    first = timed(fixed["ftprof"] + trivial, 1)[0]
    print(f"first run (indexes the interpreter's DWARF when it has some, once): {first * 1000:.1f} ms\n")
    # Interleaved, so that drifting machine load hits every variant alike.
    samples = {k: [] for k in fixed}
    for _ in range(fixed_runs):
        for name, prefix in fixed.items():
            samples[name].append(timed(prefix + trivial, 1)[0])
    print(f"fixed cost (python -c pass; medians of {fixed_runs})")
    bare = statistics.median(samples["bare"])
    for name, v in samples.items():
        m = statistics.median(v)
        added = "" if name == "bare" else f"   added {(m - bare) * 1000:7.1f} ms"
        print(f"  {name:15s} {m*1000:7.1f} ms  [{min(v)*1000:.1f}-{max(v)*1000:.1f}]{added}")
    print("  goal: ftprof adds <= 20 ms\n")

    variants = {
        "bare": [],
        "ftprof": [ftprof, "record", "-o", out, "--"],
        "--no-waits": [ftprof, "record", "--no-waits", "-o", out, "--"],
    }
    perf = {}
    if shutil.which("perf"):
        perf["perf dwarf"] = ["perf", "record", "-q", "--call-graph", "dwarf", "-F", "199", "-o", os.path.join(tmp, "perf.data"), "--"]

    work = [py, os.path.join(ROOT, "tests/workloads/cpu_bound.py"), "2", args.iterations]
    med = compare("2-thread CPU-bound workload (tests/workloads/cpu_bound.py 2 %s)" % args.iterations, {**variants, **perf}, work, args.runs)
    print("  goal: ftprof's slowdown of the workload <= 1.03x (whole command includes symbolizing and the SVG)")
    if "perf dwarf" in med:
        print(f"  ftprof/perf (workload's own time): {med['ftprof'][1]/med['perf dwarf'][1]:.3f}")

    # Contended workload: lock waits, spinning and switch-outs, with lock identity on (default).
    cont = [py, os.path.join(ROOT, "tests/workloads/contended.py"), args.contended_iterations]
    print()
    compare("2-thread contended workload (tests/workloads/contended.py %s)" % args.contended_iterations, variants, cont, args.runs)
    print("  goal: <= 1.10x with lock identity on (ftprof's default)")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    sys.exit(main())
