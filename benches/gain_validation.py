#!/usr/bin/env python3
"""Validation of ftprof's predicted gain (not a test: prints a table, asserts nothing).

  python3 benches/gain_validation.py [--rounds N] [--seconds S] [--kinds a,b,...]

For each pair of benches/workloads/gain_pairs.py (a `shared` variant, contended, and a `private`
variant, the fix, running the same bytecode), each round runs, one after the other on the same
machine: shared and private on 1 thread and on 2 threads (bare, iterations in S seconds), then
`ftprof record --format json` of shared on 2 threads. The predicted gain is the largest gain of a
contention category of that recording (`analysis::gain::top_gains`, through
`cargo run -p analysis --example gain`); the measured gain is the private variant's throughput
over the shared one's on 2 threads, divided by the same ratio on 1 thread (so a fix that also
changes single-thread speed is not counted as removed contention). Medians over the rounds; the
host is noisy, so the rounds' spread of the measured gain is shown too. Error = predicted /
measured − 1; a pair is within when |error| ≤ 25 %.
Needs the provisioned free-threaded CPython ($FTPROF_PYTHON or scripts/provision-python.sh) and
a built ftprof (target/release/ftprof, else target/debug/ftprof), as root or with CAP_PERFMON.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = os.path.join(ROOT, "benches", "workloads", "gain_pairs.py")
KINDS = ["list", "staticmethod", "tls", "logdebug", "counter", "dict", "append", "random", "lock", "sleeplock"]
WHAT = {
    "list": "refcount of a shared list",
    "staticmethod": "refcount of a shared staticmethod",
    "tls": "refcount of a shared threading.local",
    "logdebug": "a shared Logger (disabled debug)",
    "counter": "attribute += 1 on a shared instance",
    "dict": "writes to a shared dict",
    "append": "append/pop on a shared list",
    "random": "a shared random.Random",
    "lock": "a lock around a short update",
    "sleeplock": "a lock held across a sleep",
}


def python():
    p = os.environ.get("FTPROF_PYTHON")
    if p:
        return p
    return subprocess.run([os.path.join(ROOT, "scripts", "provision-python.sh")], check=True, capture_output=True, text=True).stdout.strip()


def ftprof():
    for b in ("release", "debug"):
        p = os.path.join(ROOT, "target", b, "ftprof")
        if os.path.exists(p):
            return p
    sys.exit("build ftprof first: cargo build --release -p ftprof")


def gain_tool():
    subprocess.run(["cargo", "build", "-q", "-p", "analysis", "--example", "gain"], check=True, cwd=ROOT)
    return os.path.join(ROOT, "target", "debug", "examples", "gain")


def iterations(py, kind, mode, threads, seconds):
    """The run's rate: iterations per second of the threads' time not spent waiting for a CPU."""
    out = subprocess.run([py, PAIRS, kind, mode, str(threads), str(seconds)], check=True, capture_output=True, text=True).stdout
    return float(out.split("rate")[1].split()[0])


def predicted(fp, tool, py, kind, seconds, tmp, r):
    path = os.path.join(tmp, f"{kind}-{r}.json")
    subprocess.run([fp, "record", "--format", "json", "-o", path, "--", py, PAIRS, kind, "shared", "2", str(seconds)],
                   check=True, capture_output=True)
    lines = subprocess.run([tool, path], check=True, capture_output=True, text=True).stdout.splitlines()
    cats = [json.loads(l) for l in lines if json.loads(l)["kind"] == "category"]
    if not cats:
        return {"factor": 1.0, "low": 1.0, "high": 1.0, "target": "none"}
    return cats[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--keep", help="keep the recorded profiles in this directory")
    ap.add_argument("--from-log", help="no runs: the measured gains from this log (this script's stderr) and the "
                    "predictions again from the profiles kept in --keep (after a change of the model)")
    a = ap.parse_args()
    tool = gain_tool()
    kinds = a.kinds.split(",")
    measured = {k: [] for k in kinds}
    preds = {k: [] for k in kinds}
    if a.from_log:
        for line in open(a.from_log):
            if not line.startswith("round "):
                continue
            head, rest = line.split(":", 1)
            r, k = int(head.split()[1]), head.split()[2]
            if k not in measured:
                continue
            measured[k].append(float(rest.split()[1]))
            lines = subprocess.run([tool, os.path.join(a.keep, f"{k}-{r - 1}.json")], check=True,
                                   capture_output=True, text=True).stdout.splitlines()
            cats = [json.loads(l) for l in lines if json.loads(l)["kind"] == "category"]
            preds[k].append(cats[0] if cats else {"factor": 1.0, "low": 1.0, "high": 1.0, "target": "none"})
        a.rounds = max(len(v) for v in measured.values())
        table(kinds, measured, preds, a)
        return
    py, fp = python(), ftprof()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = a.keep or scratch
        os.makedirs(tmp, exist_ok=True)
        for r in range(a.rounds):
            for k in kinds:
                s1 = iterations(py, k, "shared", 1, a.seconds)
                p1 = iterations(py, k, "private", 1, a.seconds)
                s2 = iterations(py, k, "shared", 2, a.seconds)
                p2 = iterations(py, k, "private", 2, a.seconds)
                m = (p2 / s2) / (p1 / s1)
                g = predicted(fp, tool, py, k, a.seconds, tmp, r)
                measured[k].append(m)
                preds[k].append(g)
                print(f"round {r + 1} {k}: measured {m:.2f} (1 thread {s1:.0f}/{p1:.0f}, 2 threads {s2:.0f}/{p2:.0f}), "
                      f"predicted {g['factor']:.2f} [{g['low']:.2f}, {g['high']:.2f}] removing {g['target']}",
                      file=sys.stderr, flush=True)
    table(kinds, measured, preds, a)


def table(kinds, measured, preds, a):
    print(f"| pair | contention | predicted gain [interval] (removed) | measured gain (rounds' range) | error | within ±25 % |")
    print("|---|---|---|---|---|---|")
    within = 0
    for k in kinds:
        m = statistics.median(measured[k])
        f = statistics.median(g["factor"] for g in preds[k])
        lo = statistics.median(g["low"] for g in preds[k])
        hi = statistics.median(g["high"] for g in preds[k])
        targets = sorted({g["target"] for g in preds[k]})
        err = f / m - 1
        ok = abs(err) <= 0.25
        within += ok
        print(f"| {k} | {WHAT[k]} | {f:.2f} [{lo:.2f}, {hi:.2f}] ({', '.join(targets)}) | {m:.2f} ({min(measured[k]):.2f}–{max(measured[k]):.2f}) | {err * 100:+.0f} % | {'yes' if ok else 'no'} |")
    print(f"\n{within} of {len(kinds)} pairs within ±25 % ({a.rounds} rounds of {a.seconds:g} s, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
