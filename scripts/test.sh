#!/usr/bin/env bash
# Installs everything and runs the whole test suite: lint, format, types, import layers, generated
# files, pytest (unit, integration on the real default model, end-to-end with real processes,
# vLLM's CPU build, GPU tests where a GPU is present), then the VS Code extension's checks
# (typecheck, lint, unit, bundle, .vsix, extension-host and end-to-end tests in code-server).
# Quicker subsets for iterating (pytest only): `scripts/test.sh tests/unit`,
# `scripts/test.sh -m "not slow"`, or one file; `bash scripts/test_extension.sh` for the extension.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/setup.sh
bash scripts/setup_vllm.sh
# vLLM is installed above, so its tests must run: a missing vLLM environment fails, not skips.
export INGOT_REQUIRE_VLLM=1
full=0
[ $# -eq 0 ] && full=1
if [ $full = 1 ]; then
    bash scripts/setup_extension.sh
fi
export PATH="$root/.venv/bin:$PATH"
echo "== ruff" >&2
ruff check engine server protocol tests scripts
ruff format --check engine server protocol tests scripts
echo "== mypy --strict" >&2
mypy
echo "== import layers" >&2
lint-imports
echo "== pytest" >&2
status=0
python -m pytest -q -rs "$@" || status=$?
if [ $full = 1 ]; then
    echo "== VS Code extension" >&2
    bash scripts/test_extension.sh || status=$?
fi
exit $status
