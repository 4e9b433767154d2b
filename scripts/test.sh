#!/usr/bin/env bash
# Installs everything and runs the whole test suite: lint, format, types, import layers, generated
# files, then pytest (unit, integration on the real default model, end-to-end with real processes).
# Quicker subsets for iterating: `scripts/test.sh tests/unit`, or `scripts/test.sh -m "not slow"`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/setup.sh
export PATH="$root/.venv/bin:$PATH"
echo "== ruff" >&2
ruff check engine server protocol tests scripts
ruff format --check engine server protocol tests scripts
echo "== mypy --strict" >&2
mypy
echo "== import layers" >&2
lint-imports
echo "== pytest" >&2
exec python -m pytest -q -rs "$@"
