#!/usr/bin/env bash
# The project's test command: provision the free-threaded CPython and the default (GIL) build
# (cached outside the repo), then run every test. End-to-end tests run one at a time so that
# their CPU-time measurements are not distorted by each other on small machines.
set -euo pipefail
cd "$(dirname "$0")/.."
FTPROF_PYTHON=$(scripts/provision-python.sh)
FTPROF_PYTHON_GIL=$(scripts/provision-python.sh gil)
export FTPROF_PYTHON FTPROF_PYTHON_GIL
echo "test.sh: using $FTPROF_PYTHON and $FTPROF_PYTHON_GIL" >&2
cargo build --workspace --all-targets
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace -- --test-threads=1 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary, the last often empty).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
