#!/usr/bin/env python3
"""Benchmark for the HTML report (not a test: prints figures, asserts nothing).

  python3 benches/report_html.py [--seconds 60] [--runs 5] [--debug]

Records an 8-thread workload (benches/workloads/report_mix.py) for SECONDS with the provisioned
free-threaded CPython, renders the HTML report from its JSON profile (`ftprof report`), and
prints the report's size (goal: under 5 MB) and the time headless Chromium takes to open it and
draw the flamegraph (median of RUNS page loads; goal: under 2 s), measured by
tests/browser/check.cjs (tools from scripts/report-deps.sh).
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--debug", action="store_true", help="use the debug build (no release build)")
    args = ap.parse_args()
    py = subprocess.run([os.path.join(ROOT, "scripts/provision-python.sh")], check=True, capture_output=True, text=True).stdout.strip()
    node_modules = subprocess.run([os.path.join(ROOT, "scripts/report-deps.sh")], check=True, capture_output=True, text=True).stdout.strip()
    profile = "debug" if args.debug else "release"
    subprocess.run(["cargo", "build", "-q", "-p", "ftprof"] + ([] if args.debug else ["--release"]), cwd=ROOT, check=True)
    ftprof = os.path.join(ROOT, "target", profile, "ftprof")
    tmp = tempfile.mkdtemp()
    js = os.path.join(tmp, "p.json")
    html = os.path.join(tmp, "report.html")
    workload = os.path.join(ROOT, "benches/workloads/report_mix.py")
    subprocess.run([ftprof, "record", "-o", js, "--", py, workload, str(args.seconds)], check=True, stderr=subprocess.DEVNULL)
    t = time.perf_counter()
    subprocess.run([ftprof, "report", js, "-o", html], check=True, stderr=subprocess.DEVNULL)
    report_s = time.perf_counter() - t
    p = json.load(open(js))
    out = subprocess.run(
        ["node", os.path.join(ROOT, "tests/browser/check.cjs"), "bench", html, str(args.runs)],
        check=True, capture_output=True, text=True, env=dict(os.environ, NODE_PATH=node_modules),
    )
    r = json.loads(out.stdout)
    size = os.path.getsize(html)
    print(f"recording: {args.seconds:.0f} s, {p['summary']['threads']} threads, {len(p['stacks'])} distinct stacks, "
          f"{len(p['frames'])} frames; JSON profile {os.path.getsize(js) / 1e6:.2f} MB")
    print(f"HTML report: {size / 1e6:.2f} MB (goal < 5 MB), written by `ftprof report` in {report_s:.2f} s")
    text = open(html).read()
    start = text.index('id="ftprof-data">') + len('id="ftprof-data">')
    block = text[start:text.index("</script>", start)]
    blame = json.dumps(json.loads(block)["blame"], separators=(",", ":"))
    print(f"data block {len(block) / 1e6:.2f} MB, of which the blame stacks {len(blame) / 1e3:.1f} kB "
          f"({len(p.get('blame', []))} distinct blame stacks)")
    print(f"open + render in headless Chromium: median {statistics.median(r['render_ms']):.0f} ms "
          f"(min {min(r['render_ms'])}, max {max(r['render_ms'])}; goal < 2000 ms); "
          f"page script to first drawn flamegraph: median {statistics.median(r['script_ms']):.0f} ms")


if __name__ == "__main__":
    main()
