#!/usr/bin/env bash
# Print a directory holding NumPy for the free-threaded CPython (for PYTHONPATH), installing it
# from PyPI (its cp313t wheel) under the cache if needed.
#
#   scripts/provision-numpy.sh PYTHON [VERSION]   # default VERSION 2.1.3: before NumPy 2.2's
#                                                  # reader-writer lock in the ufunc dispatch
#
# The interpreter's bundled pip (ensurepip, in a throw-away virtual environment) installs the
# wheel with `--target`, so the cached interpreter itself is not changed. Progress goes to
# stderr; stdout carries only the directory.
set -euo pipefail
python=${1:?usage: provision-numpy.sh PYTHON [VERSION]}
version=${2:-2.1.3}
cache=${FTPROF_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/ftprof}
abi=$("$python" -c 'import sys, sysconfig; print(f"cp{sys.version_info[0]}{sys.version_info[1]}" + ("t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""))')
dir=$cache/numpy-$version-$abi
if [ -f "$dir/.ftprof-complete" ]; then echo "$dir"; exit 0; fi
mkdir -p "$cache"
exec 8>"$cache/.lock-numpy"
flock 8
if [ -f "$dir/.ftprof-complete" ]; then echo "$dir"; exit 0; fi
echo "provision-numpy: installing numpy==$version ($abi wheel) into $dir" >&2
venv=$(mktemp -d "$cache/numpy-venv.XXXXXX")
trap 'rm -rf "$venv"' EXIT
"$python" -m venv "$venv" >&2
rm -rf "$dir"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: --target "$dir" "numpy==$version" >&2 \
  || { echo "provision-numpy: could not install numpy==$version for $python (no network, or no $abi wheel)" >&2; exit 1; }
touch "$dir/.ftprof-complete"
echo "$dir"
