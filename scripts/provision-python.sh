#!/usr/bin/env bash
# Print the path of a CPython 3.13+ interpreter for ftprof's demo and tests, building one if needed.
#
#   scripts/provision-python.sh          # free-threaded (python3.13t)
#   scripts/provision-python.sh gil      # default build with the GIL (python3.13)
#   scripts/provision-python.sh 3.14     # Debian unstable's python3.14 (default build, stripped)
#   scripts/provision-python.sh 3.15     # Debian unstable's python3.15 (default build, stripped)
#   scripts/provision-python.sh old      # a CPython older than 3.13 (ftprof must refuse it)
#
# For 3.14 and 3.15 stdout carries the root filesystem (made with debootstrap from Debian
# unstable's binary packages, under the cache) that holds /usr/bin/python3.14 and python3.15;
# run them with `chroot ROOT /usr/bin/python3.14` after mounting /proc inside ROOT (the tests do).
# $FTPROF_PYTHON_314_ROOT / $FTPROF_PYTHON_315_ROOT override the root filesystem.
#
# Order of preference for the free-threaded kind: $FTPROF_PYTHON, python3.13t / python3.14t on PATH,
# the cached build under $FTPROF_CACHE (default ~/.cache/ftprof), else build CPython 3.13.5 from
# Debian trixie's source package into that cache. The cache lives outside the repository so CI
# and later clones reuse it. Progress goes to stderr; stdout carries only the interpreter path.
set -euo pipefail

kind=${1:-ft}
version=3.13.5
debver=3.13.5-2+deb13u5
cache=${FTPROF_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/ftprof}
log() { printf 'provision-python: %s\n' "$*" >&2; }

provision_rootfs() {
  # One Debian unstable root filesystem serves both 3.14 and 3.15.
  local root=$cache/debian-sid-rootfs
  local stamp=$root/.ftprof-complete
  if [ -f "$stamp" ]; then echo "$root"; return 0; fi
  mkdir -p "$cache"
  exec 8>"$cache/.lock-rootfs"
  flock 8
  if [ -f "$stamp" ]; then echo "$root"; return 0; fi
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap with apt"
    apt-get -qq update >&2 && DEBIAN_FRONTEND=noninteractive apt-get -qq install -y debootstrap >&2 \
      || { log "debootstrap is missing and could not be installed; install it (apt-get install debootstrap)"; exit 1; }
  fi
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  uri=${uri:-http://deb.debian.org/debian}
  case "$uri" in *security*) uri=http://deb.debian.org/debian ;; esac
  local tmp=$cache/debian-sid-rootfs.tmp
  # A half-made root may still have /proc mounted from an earlier run.
  if mountpoint -q "$tmp/proc" 2>/dev/null; then umount "$tmp/proc"; fi
  rm -rf "$tmp"
  log "making a Debian unstable root filesystem with python3.14 and python3.15 in $root (a few minutes)"
  debootstrap --variant=minbase --include=python3.14,python3.15 sid "$tmp" "$uri" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; log "debootstrap failed; see $cache/debootstrap.log"; exit 1; }
  chroot "$tmp" /usr/bin/python3.14 -c 'import sys; assert sys.version_info[:2] == (3, 14)' >&2
  chroot "$tmp" /usr/bin/python3.15 -c 'import sys; assert sys.version_info[:2] == (3, 15)' >&2
  if mountpoint -q "$root/proc" 2>/dev/null; then umount "$root/proc"; fi
  rm -rf "$root"
  mv "$tmp" "$root"
  touch "$stamp"
  # The interpreters (and ftprof run inside) need /proc; the tests mount it again after a reboot.
  mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
  log "installed $root ($(chroot "$root" /usr/bin/python3.14 -c 'import sys; print(sys.version.split()[0])'), \
$(chroot "$root" /usr/bin/python3.15 -c 'import sys; print(sys.version.split()[0])'))"
  echo "$root"
}

case "$kind" in
  old)
    # $FTPROF_PYTHON_OLD, else the first interpreter on PATH older than 3.13 (the system's
    # python3 on Debian 12 / Ubuntu 22.04), resolved through wrappers (pyenv shims) to the real
    # executable.
    for cand in ${FTPROF_PYTHON_OLD:-} python3.12 python3.11 python3.10 python3.9 python3; do
      command -v "$cand" >/dev/null 2>&1 || continue
      exe=$("$cand" -c 'import sys; print(sys.executable if sys.version_info < (3, 13) else "")' 2>/dev/null) || continue
      if [ -n "$exe" ] && [ -x "$exe" ]; then echo "$exe"; exit 0; fi
    done
    log "no CPython older than 3.13 found (tried \$FTPROF_PYTHON_OLD and python3.12 … python3 on PATH); install one (apt-get install python3) or set FTPROF_PYTHON_OLD"
    exit 1 ;;
  3.14|3.15)
    var=FTPROF_PYTHON_${kind/./}_ROOT
    if [ -n "${!var:-}" ]; then
      [ -x "${!var}/usr/bin/python$kind" ] || { log "$var=${!var} has no usr/bin/python$kind"; exit 1; }
      echo "${!var}"; exit 0
    fi
    root=$(provision_rootfs)
    mountpoint -q "$root/proc" || mount -t proc proc "$root/proc" || log "could not mount /proc in $root (needs root)"
    echo "$root"; exit 0 ;;
  ft)
    if [ -n "${FTPROF_PYTHON:-}" ]; then
      command -v "$FTPROF_PYTHON" >/dev/null || { log "FTPROF_PYTHON=$FTPROF_PYTHON is not executable"; exit 1; }
      command -v "$FTPROF_PYTHON"; exit 0
    fi
    for cand in python3.13t python3.14t; do
      if p=$(command -v "$cand" 2>/dev/null); then echo "$p"; exit 0; fi
    done
    prefix=$cache/cpython-$version-ft; exe=$prefix/bin/python3.13t; flags=--disable-gil ;;
  gil)
    if [ -n "${FTPROF_PYTHON_GIL:-}" ]; then command -v "$FTPROF_PYTHON_GIL"; exit 0; fi
    prefix=$cache/cpython-$version-gil; exe=$prefix/bin/python3.13; flags= ;;
  *) log "unknown kind '$kind' (expected ft, gil, old, 3.14 or 3.15)"; exit 2 ;;
esac

stamp=$prefix/.ftprof-complete
if [ -f "$stamp" ] && [ -x "$exe" ]; then echo "$exe"; exit 0; fi

mkdir -p "$cache"
exec 9>"$cache/.lock-$kind"
flock 9
if [ -f "$stamp" ] && [ -x "$exe" ]; then echo "$exe"; exit 0; fi

src=$cache/src
tarball=$src/python3.13_$version.orig.tar.xz
if [ ! -f "$tarball" ]; then
  log "fetching the CPython $version source package ($debver) from Debian trixie"
  mkdir -p "$src/apt/lists/partial" "$src/apt/archives/partial"
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  uri=${uri:-http://deb.debian.org/debian}
  case "$uri" in *security*) uri=http://deb.debian.org/debian ;; esac
  echo "deb-src [trusted=yes] $uri trixie main" > "$src/apt/sources.list"
  aptopts=(-oDir::Etc::SourceList="$src/apt/sources.list" -oDir::Etc::SourceParts=/dev/null
           -oDir::State::Lists="$src/apt/lists" -oDir::Cache::Archives="$src/apt/archives"
           -oAcquire::AllowInsecureRepositories=true -oDebug::NoLocking=1)
  apt-get "${aptopts[@]}" -qq update >&2
  (cd "$src" && apt-get "${aptopts[@]}" -qq source --download-only "python3.13=$debver" >&2)
fi

build=$(mktemp -d "$cache/build-$kind.XXXXXX")
trap 'rm -rf "$build"' EXIT
log "building CPython $version ($kind) in $build; this takes a few minutes"
tar -C "$build" -xJf "$tarball"
cd "$build"/Python-$version
rm -rf "$prefix"
./configure --prefix="$prefix" $flags --without-ensurepip >"$build/configure.log" 2>&1 \
  || { tail -30 "$build/configure.log" >&2; exit 1; }
make -j"$(nproc)" >"$build/make.log" 2>&1 || { tail -30 "$build/make.log" >&2; exit 1; }
make install >"$build/install.log" 2>&1 || { tail -30 "$build/install.log" >&2; exit 1; }
"$exe" -c 'import sys, sysconfig; assert sys.version_info >= (3, 13)' >&2
touch "$stamp"
log "installed $exe"
echo "$exe"
