#!/usr/bin/env bash
# Build prerequisites of the bpf crate (its BPF programs are C compiled by clang at build time;
# libbpf, built from the libbpf-sys crate, needs make, pkg-config and the libelf and zlib
# headers). Installs the missing ones with apt (Debian/Ubuntu); elsewhere says what to install.
set -euo pipefail
missing=()
command -v clang >/dev/null || missing+=(clang)
command -v make >/dev/null || missing+=(make)
command -v pkg-config >/dev/null || missing+=(pkg-config)
[ -e /usr/include/libelf.h ] || [ -e /usr/include/elfutils/libelf.h ] || missing+=(libelf-dev)
[ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "bpf-deps.sh: install ${missing[*]} (clang, make, pkg-config, libelf and zlib headers) to build ftprof" >&2
    exit 1
fi
echo "bpf-deps.sh: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
$sudo apt-get update -qq >&2
$sudo apt-get install -y -qq "${missing[@]}" >&2
