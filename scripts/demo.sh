#!/usr/bin/env bash
# The demo: provision the free-threaded CPython if needed, build ftprof, and profile a small
# two-thread workload into ftprof-demo.svg (open it in a browser).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(scripts/provision-python.sh)
scripts/bpf-deps.sh
cargo build --release -q -p ftprof
target/release/ftprof record -o ftprof-demo.svg -- "$PY" tests/workloads/two_threads.py 3
echo "demo: open ftprof-demo.svg in a browser (click to zoom, Ctrl-F to search)"
