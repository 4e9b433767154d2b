#!/usr/bin/env bash
# Builds the engine's wheel (distribution ingot-engine; command `ingot`) into extension/engine/, where
# the .vsix picks it up for "Set up Ingot". Rebuilt only when a packaged file changed since the last
# build. Usage: scripts/build_wheel.sh [PYTHON]  (default: .venv/bin/python, which has `build`).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
py=${1:-"$root/.venv/bin/python"}
out="$root/extension/engine"
stamp="$out/.inputs.sha256"
# The inputs: everything that goes into the wheel (tracked or not, minus caches) and its metadata.
want=$(find engine server protocol -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z \
    | xargs -0 sha256sum | cat - pyproject.toml README.md | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && ls "$out"/ingot_engine-*.whl >/dev/null 2>&1; then
    echo "build_wheel: $(basename "$out"/ingot_engine-*.whl) is up to date" >&2
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Build from a copy of just the packaged files: the checkout's .venv, .cache and node_modules stay
# out of the build's way, and no build/ or egg-info is left behind in the tree.
mkdir -p "$tmp/src"
cp -r engine server protocol pyproject.toml README.md "$tmp/src/"
find "$tmp/src" -name __pycache__ -type d -prune -exec rm -rf {} +
"$py" -m build --wheel --outdir "$tmp/dist" "$tmp/src" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log" >&2; exit 1; }
mkdir -p "$out"
rm -f "$out"/ingot_engine-*.whl
cp "$tmp"/dist/ingot_engine-*.whl "$out/"
echo "$want" > "$stamp"
echo "build_wheel: built $(basename "$out"/ingot_engine-*.whl)" >&2
