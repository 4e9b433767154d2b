"""End-to-end with the wire layer VS Code uses: a vscode-jsonrpc client (Node) against the engine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent / "node"


def test_vscode_jsonrpc_client_streams_cancels_and_sees_clean_framing(seeded_home: Path) -> None:
    node = shutil.which("node")
    assert node, "node is required (scripts/setup.sh installs the client's packages)"
    if not (NODE_DIR / "node_modules" / "vscode-jsonrpc").is_dir():
        pytest.fail("tests/e2e/node is not installed: run scripts/setup.sh")
    out = subprocess.run(
        [node, str(NODE_DIR / "client.mjs"), sys.executable, str(seeded_home), "smollm2-135m"],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "failure" not in result, result.get("failure")
    assert result["errors"] == []  # a stray byte on stdout would show up here
    assert result["methods"] > 20 and result["inlineCompletion"]
    assert result["restUrl"].startswith("http://127.0.0.1:")
    assert result["chatText"].strip() and result["streamedText"] == result["chatText"]
    assert result["cancelCode"] == -32800
    assert result["cancelData"]["tokens"] >= 3
    assert result["exitCode"] == 0
