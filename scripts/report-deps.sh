#!/usr/bin/env bash
# What the report tests (tests/report.rs) and the report benchmark need, installed when missing:
# Debian's chromium and golang-go (apt), node with npm, and the npm packages playwright-core
# (drives the system chromium over the DevTools protocol; no browser download), speedscope (its
# app and file-format schema) and ajv (JSON-schema validation), into ~/.cache/ftprof/node.
# Prints the node_modules directory.
set -euo pipefail
cache="${XDG_CACHE_HOME:-$HOME/.cache}/ftprof/node"
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v go >/dev/null 2>&1 || need+=(golang-go)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
    echo "report-deps.sh: installing ${need[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
# Versions pinned so that a test run is reproducible.
pkgs=(playwright-core@1.65.1 speedscope@1.25.0 ajv@8.20.0)
stamp="$cache/.installed"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "${pkgs[*]}" ] || [ ! -d "$cache/node_modules/speedscope/dist/release" ]; then
    mkdir -p "$cache"
    echo "report-deps.sh: npm install ${pkgs[*]} into $cache" >&2
    (cd "$cache" && npm install --no-audit --no-fund --loglevel=error --prefix "$cache" "${pkgs[@]}" >&2)
    echo "${pkgs[*]}" > "$stamp"
fi
echo "$cache/node_modules"
