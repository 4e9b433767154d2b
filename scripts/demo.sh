#!/usr/bin/env bash
# Quick start: install, build the embedded default model once (offline) and stream an answer from it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup.sh"
prompt=${1:-"In two sentences, what is a local language model good for?"}
exec "$root/.venv/bin/ingot" model run smollm2-135m --prompt "$prompt"
