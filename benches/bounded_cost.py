#!/usr/bin/env python3
"""Benchmark (not a test): what ftprof costs on many-thread, high-switch-rate workloads.

  python3 benches/bounded_cost.py [--seconds 10] [--runs 3] [--only handoff8,pool8]
  python3 benches/bounded_cost.py --soak 60:8,600:32      # ftprof's RSS over long recordings

For each workload (benches/workloads/contention.py), in one run and interleaved so that drifting
machine load hits every variant alike, it runs:
  bare           the workload alone
  ftprof         ftprof record (defaults) -- workload
  ftprof --pid   the workload, with ftprof record --pid attached for its whole run
  (per-task)     ftprof record with FTPROF_PER_TASK_EVENTS=1: the events ftprof falls back to
                 without CAP_PERFMON (shown with --per-task)
  perf -g        perf record -g -- workload (frame-pointer call graphs, perf's default 4 kHz)
and prints, per variant, the workload's own throughput (operations per second, median of
--runs) as a ratio to bare, ftprof's peak RSS, its lost records, how long ftprof took after the
target exited, and ftprof's unwinding + symbolization throughput. --soak prints ftprof's RSS
every 10 s of a long recording (it must stay flat).

Goals (issue 8): throughput >= 0.90x bare and not below perf's ratio; RSS <= 100 MB for 60 s x 8
threads and <= 200 MB for 10 min x 32 threads; 0 lost records; done <= 1 s after the target exits.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOAD = os.path.join(ROOT, "benches", "workloads", "contention.py")
WORKLOADS = {
    "handoff8": ("handoff", 8),
    "sleep0-8": ("sleep0", 8),
    "mixed32": ("mixed", 32),
    "mixed128": ("mixed", 128),
    "pool8": ("pool", 8),
    "pool128": ("pool", 128),
}


def rss_kb(pid):
    """(current, peak) resident set of `pid` in KiB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    m = [re.search(rf"^{k}:\s+(\d+)", text, re.M) for k in ("VmRSS", "VmHWM")]
    if None in m:
        return None  # a zombie: gone
    return int(m[0].group(1)), int(m[1].group(1))


class Watch:
    """Polls a process's RSS every 100 ms until it exits; keeps the peak and a timeline."""

    def __init__(self, pid, every=None):
        self.pid, self.peak, self.timeline, self.every = pid, 0, [], every
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        start = time.monotonic()
        next_mark = self.every
        while True:
            r = rss_kb(self.pid)
            if r is None:
                return
            self.peak = max(self.peak, r[1])
            if self.every and time.monotonic() - start >= next_mark:
                self.timeline.append((round(time.monotonic() - start), r[0]))
                print(f"    t={self.timeline[-1][0]:4d} s  ftprof RSS {r[0] / 1024:7.1f} MB", flush=True)
                next_mark += self.every
            time.sleep(0.1)


def parse_workload(out):
    vals = dict(l.split(" ", 1) for l in out.splitlines() if " " in l)
    return float(vals["ops_per_s"]), float(vals["end_monotonic"])


def run_variant(variant, py, ftprof, kind, threads, seconds, tmp, soak_every=None):
    """Returns dict(ops, rss_mb, lost, after_exit_s, timing) for one run."""
    work = [py, WORKLOAD, kind, str(threads), str(seconds)]
    out_json = os.path.join(tmp, "p.json")
    env = dict(os.environ, FTPROF_TIMING="1")
    res = {"rss_mb": None, "lost": None, "after_exit_s": None, "timing": ""}
    if variant == "bare":
        r = subprocess.run(work, capture_output=True, text=True, check=True)
        res["ops"], _ = parse_workload(r.stdout)
        return res
    if variant == "perf":
        r = subprocess.run(["perf", "record", "-g", "-q", "-o", os.path.join(tmp, "perf.data"), "--"] + work,
                           capture_output=True, text=True, check=True)
        res["ops"], _ = parse_workload(r.stdout)
        return res
    if variant in ("ftprof", "per-task", "no-blame"):
        if variant == "per-task":
            env["FTPROF_PER_TASK_EVENTS"] = "1"
        if variant == "no-blame":
            env["FTPROF_NO_BLAME"] = "1"
        p = subprocess.Popen([ftprof, "record", "-o", out_json, "--"] + work, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        watch = Watch(p.pid, soak_every)
        out, err = p.communicate()
        done = time.monotonic()
    else:  # --pid
        target = subprocess.Popen(work, stdout=subprocess.PIPE, text=True)
        assert target.stdout.readline().strip() == "ready"
        p = subprocess.Popen([ftprof, "record", "--pid", str(target.pid), "-o", out_json], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        watch = Watch(p.pid, soak_every)
        rest = target.stdout.read()
        target.wait()
        out, err = p.communicate()
        done = time.monotonic()
        out = rest
    if p.returncode != 0:
        sys.exit(f"ftprof failed ({variant}):\n{err}")
    watch.t.join()
    res["ops"], end = parse_workload(out)
    res["after_exit_s"] = done - end
    res["rss_mb"] = watch.peak / 1024
    s = json.load(open(out_json))["summary"]
    res["lost"] = s["lost_records"]
    res["blame"] = s.get("blame")
    res["timing"] = err
    return res


def timing_figures(err):
    """Unwinding and symbolization rates from FTPROF_TIMING lines."""
    m = re.search(r"unwound (\d+) stacks in ([\d.]+) s", err)
    n = re.search(r"symbolized (\d+) addresses in ([\d.]+) s", err)
    return (int(m.group(1)) / max(float(m.group(2)), 1e-9) if m else None,
            int(n.group(1)) / max(float(n.group(2)), 1e-9) if n else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default=",".join(WORKLOADS))
    ap.add_argument("--per-task", action="store_true", help="also run ftprof with per-task events")
    ap.add_argument("--no-blame", action="store_true",
                    help="also run ftprof without the holder search (FTPROF_NO_BLAME=1), to measure blame's cost")
    ap.add_argument("--soak", default="", help="SECONDS:THREADS,… long recordings (handoff) printing RSS")
    args = ap.parse_args()
    py = subprocess.run([os.path.join(ROOT, "scripts/provision-python.sh")], capture_output=True, text=True,
                        check=True).stdout.strip()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ftprof"], cwd=ROOT, check=True)
    ftprof = os.path.join(ROOT, "target/release/ftprof")
    tmp = tempfile.mkdtemp()
    print(f"interpreter: {py}\nmachine: {os.cpu_count()} CPUs; {args.seconds:.0f} s per run, medians of {args.runs}"
          f" runs; variants interleaved\n")
    if args.soak:
        for spec in args.soak.split(","):
            secs, threads = (int(x) for x in spec.split(":"))
            print(f"soak: ftprof record -- handoff, {threads} threads, {secs} s (RSS every 10 s)")
            r = run_variant("ftprof", py, ftprof, "handoff", threads, secs, tmp, soak_every=10)
            print(f"    end: peak RSS {r['rss_mb']:.1f} MB, lost records {r['lost']}, "
                  f"done {r['after_exit_s']:.2f} s after the target exited\n")
        return
    variants = ["bare", "ftprof", "ftprof --pid", "perf"] + (["per-task"] if args.per_task else []) + (
        ["no-blame"] if args.no_blame else [])
    print(f"{'workload':11s} {'variant':13s} {'ops/s':>12s} {'ratio':>6s} {'RSS MB':>7s} {'lost':>5s} "
          f"{'after exit':>10s} {'unwind/s':>9s} {'symbolize/s':>11s}")
    for name in args.only.split(","):
        kind, threads = WORKLOADS[name]
        results = {v: [] for v in variants}
        for _ in range(args.runs):
            for v in variants:
                results[v].append(run_variant(v, py, ftprof, kind, threads, args.seconds, tmp))
        bare = statistics.median(r["ops"] for r in results["bare"])
        for v in variants:
            rs = results[v]
            ops = statistics.median(r["ops"] for r in rs)
            line = f"{name:11s} {v:13s} {ops:12.0f} {ops / bare:6.2f}"
            if rs[0]["rss_mb"] is not None:
                unw, sym = timing_figures(rs[-1]["timing"])
                line += (f" {max(r['rss_mb'] for r in rs):7.1f} {max(r['lost'] for r in rs):5d}"
                         f" {max(r['after_exit_s'] for r in rs):9.2f}s"
                         f" {unw or 0:9.0f} {sym or 0:11.0f}")
            print(line, flush=True)
            b = rs[-1].get("blame")
            if b:
                print(f"{'':11s}   holder search (last run): {b['observations']} waiters looked at, "
                      f"{b['holders_found']} holders found, {b['skipped']} skipped, {b['threads_scanned']} "
                      f"threads read, {b['search_ms']:.0f} ms", flush=True)
        print()


if __name__ == "__main__":
    main()
