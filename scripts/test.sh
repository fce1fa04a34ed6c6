#!/usr/bin/env bash
# The project's test command: provision the free-threaded CPython and the default (GIL) build,
# and Debian unstable's python3.14/python3.15 in a root filesystem (all cached outside the repo),
# then run every test. tests/versions.rs runs the version-sensitive checks on all four. End-to-end tests run one at a time so that
# their CPU-time measurements are not distorted by each other on small machines.
set -euo pipefail
cd "$(dirname "$0")/.."
FTPROF_PYTHON=$(scripts/provision-python.sh)
FTPROF_PYTHON_GIL=$(scripts/provision-python.sh gil)
FTPROF_PYTHON_314_ROOT=$(scripts/provision-python.sh 3.14)
FTPROF_PYTHON_315_ROOT=$(scripts/provision-python.sh 3.15)
# tests/findings.rs: NumPy 2.1 for the free-threaded python (its cp313t wheel from PyPI, cached).
FTPROF_NUMPY_PATH=$(scripts/provision-numpy.sh "$FTPROF_PYTHON")
export FTPROF_PYTHON FTPROF_PYTHON_GIL FTPROF_PYTHON_314_ROOT FTPROF_PYTHON_315_ROOT FTPROF_NUMPY_PATH
# tests/report.rs: chromium and golang-go (apt), node packages (~/.cache/ftprof/node).
scripts/report-deps.sh >/dev/null
# tests/top.rs drives `ftprof top` in tmux; tests/install.rs builds the wheel with maturin, which
# it installs from PyPI into a virtual environment in ~/.cache/ftprof (needs python3 with venv).
if ! command -v tmux >/dev/null; then
    echo "test.sh: installing tmux" >&2
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq tmux >&2
    else sudo apt-get update -qq && sudo apt-get install -y -qq tmux >&2; fi
fi
# tests/privilege.rs: setcap (libcap2-bin), useradd (passwd), setpriv (util-linux), script (bsdutils).
for tool in setcap:libcap2-bin useradd:passwd setpriv:util-linux script:bsdutils; do
    if ! command -v "${tool%%:*}" >/dev/null && [ ! -x "/usr/sbin/${tool%%:*}" ]; then
        echo "test.sh: installing ${tool#*:}" >&2
        if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "${tool#*:}" >&2
        else sudo apt-get update -qq && sudo apt-get install -y -qq "${tool#*:}" >&2; fi
    fi
done
# The bpf crate compiles its BPF programs with clang at build time (and builds libbpf).
scripts/bpf-deps.sh
echo "test.sh: using $FTPROF_PYTHON, $FTPROF_PYTHON_GIL, python3.14 and python3.15 in $FTPROF_PYTHON_314_ROOT" >&2
# Formatting and lints first: they fail fast and need no interpreter.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --all-targets
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast -- --test-threads=1 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary, the last often empty).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
