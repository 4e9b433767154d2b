#!/usr/bin/env bash
# Installs llama-cpp-python's server into its own virtual environment (.cache/llamacpp-venv), only
# for the llama.cpp comparison benchmark (scripts/bench_llamacpp.py). Idempotent. It compiles
# llama.cpp from source: ~26 minutes on 2 cores, so it is not part of the test setup.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${INGOT_LLAMACPP_VENV:-"$root/.cache/llamacpp-venv"}
package=${INGOT_LLAMACPP_PACKAGE:-"llama-cpp-python[server]==0.3.36"}
# A portable AVX2 build: the native one (-march=native) picked AVX-512/AMX kernels here and
# crashed in llama_decode on the first prompt of more than one token.
export CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"}
stamp="$venv/.ingot-llamacpp-stamp"
want="$package $CMAKE_ARGS"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && [ -x "$venv/bin/python" ]; then
    echo "setup_llamacpp: $venv is up to date" >&2
    exit 0
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
echo "setup_llamacpp: installing $package (compiles llama.cpp: ~26 min on 2 cores)" >&2
"$venv/bin/python" -m pip install -q --force-reinstall --no-cache-dir --no-deps "$package"
"$venv/bin/python" -m pip install -q "$package"
"$venv/bin/python" -c "import llama_cpp, sys; print('setup_llamacpp: llama-cpp-python', llama_cpp.__version__, file=sys.stderr)"
echo "$want" > "$stamp"
