#!/usr/bin/env python3
"""Benchmark: ftprof attached to a real threaded HTTP server under load (not a test: prints
figures, asserts nothing).

  python3 benches/server_attach.py [--seconds 10] [--rounds 3] [--connections 16] [--keep DIR]

A ThreadingHTTPServer on the free-threaded CPython (benches/workloads/http_server.py: JSON,
logging, a shared cache under a lock; one worker thread per connection) is driven by `wrk`
(Debian's package; installed when missing) on 127.0.0.1. Each round measures, back to back on the
same server process:

  bare     wrk alone;
  perf     wrk while `perf record -g --pid` samples the server (perf's default frequency);
  ftprof   wrk while `ftprof record --pid` is attached for the whole measurement, as run by
           default (Python stacks read in the kernel at the sample instant, BPF; FTPROF_BPF=1
           makes a refusal an error);
  ftprof-nobpf  the same with FTPROF_BPF=0 (Python stacks read from the target when the ring is
           drained, the fallback).

It prints, per variant, the median requests/s and p99 latency over the rounds, their ratios to
bare, and for ftprof the share of CPU samples whose Python and native stacks disagreed
(`[python/native mismatch]`), the figure the kernel-instant (BPF) issue is about.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LUA = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/?k=item" .. (counter % 64))
end
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def parse_wrk(text):
    """Requests/s and p99 latency (ms) from `wrk --latency` output."""
    rps = p99 = None
    for line in text.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            rps = float(parts[1])
        if len(parts) == 2 and parts[0] == "99%":
            v = parts[1]
            for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
                if v.endswith(unit):
                    p99 = float(v[: -len(unit)]) * scale
                    break
    if rps is None or p99 is None:
        raise SystemExit(f"could not read wrk's output:\n{text}")
    return rps, p99


def wrk(port, seconds, connections, script):
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, f"http://127.0.0.1:{port}/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return parse_wrk(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--keep", help="keep the profiles (JSON) in this directory")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    if shutil.which("perf") is None:
        raise SystemExit("perf is missing: apt-get install linux-perf")
    py = subprocess.run([os.path.join(ROOT, "scripts/provision-python.sh")], check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ftprof"], cwd=ROOT, check=True)
    ftprof = os.path.join(ROOT, "target/release/ftprof")
    tmp = args.keep or tempfile.mkdtemp()
    os.makedirs(tmp, exist_ok=True)
    script = os.path.join(tmp, "keys.lua")
    with open(script, "w") as f:
        f.write(LUA)
    port = free_port()
    # stderr: wrk closing its connections at the end of a run makes the server print resets.
    server = subprocess.Popen([py, os.path.join(ROOT, "benches/workloads/http_server.py"), str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert server.stdout.readline().strip() == "ready"
    results = {"bare": [], "perf": [], "ftprof": [], "ftprof-nobpf": []}
    mismatch = {"ftprof": [], "ftprof-nobpf": []}
    try:
        wrk(port, 2, args.connections, script)  # warm-up: threads started, caches filled
        for r in range(args.rounds):
            results["bare"].append(wrk(port, args.seconds, args.connections, script))

            perf_out = os.path.join(tmp, "perf.data")
            perf = subprocess.Popen(["perf", "record", "-q", "-g", "-p", str(server.pid), "-o", perf_out], stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            results["perf"].append(wrk(port, args.seconds, args.connections, script))
            perf.send_signal(2)
            perf.wait()

            for variant, env in (("ftprof", {"FTPROF_BPF": "1"}), ("ftprof-nobpf", {"FTPROF_BPF": "0"})):
                prof = os.path.join(tmp, f"{variant}-{r}.json")
                rec = subprocess.Popen(
                    [ftprof, "record", "--pid", str(server.pid), "--duration", str(args.seconds + 1.5), "-o", prof],
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, **env},
                )
                time.sleep(0.5)
                results[variant].append(wrk(port, args.seconds, args.connections, script))
                err = rec.communicate()[1]
                if rec.returncode != 0:
                    raise SystemExit(f"ftprof record failed:\n{err}")
                s = json.load(open(prof))["summary"]
                path = s["python_stacks"]["path"]
                if path != ("bpf" if variant == "ftprof" else "after-sample"):
                    raise SystemExit(f"{variant} took the {path} path:\n{err}")
                mismatch[variant].append(100.0 * s["mismatched"] / max(1, s["samples"]))
    finally:
        server.kill()
    bare_rps = statistics.median(r for r, _ in results["bare"])
    bare_p99 = statistics.median(p for _, p in results["bare"])
    print(f"threaded HTTP server (ThreadingHTTPServer, {args.connections} connections = worker threads), CPython 3.13t, "
          f"wrk {args.seconds} s x {args.rounds} rounds, {os.cpu_count()} CPUs")
    print(f"{'variant':8} {'req/s':>9} {'x bare':>7} {'p99 ms':>8} {'x bare':>7}")
    for name, rs in results.items():
        rps = statistics.median(r for r, _ in rs)
        p99 = statistics.median(p for _, p in rs)
        print(f"{name:8} {rps:9.0f} {rps / bare_rps:7.2f} {p99:8.2f} {p99 / bare_p99:7.2f}")
    for variant, ms in mismatch.items():
        print(f"{variant}: python/native mismatch {statistics.median(ms):.1f} % of CPU samples "
              f"(rounds: {', '.join(f'{m:.1f}' for m in ms)})")


if __name__ == "__main__":
    sys.exit(main())
