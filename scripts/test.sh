#!/usr/bin/env bash
# The project's test command: provision the free-threaded CPython (cached outside the repo),
# then run every test. End-to-end tests run one at a time so that their CPU-time measurements
# are not distorted by each other on small machines.
set -euo pipefail
cd "$(dirname "$0")/.."
FTPROF_PYTHON=$(scripts/provision-python.sh)
FTPROF_PYTHON_GIL=$(scripts/provision-python.sh gil)
export FTPROF_PYTHON_GIL
export FTPROF_PYTHON
echo "test.sh: using $FTPROF_PYTHON and $FTPROF_PYTHON_GIL" >&2
cargo build --workspace --all-targets
cargo test --workspace -- --test-threads=1
