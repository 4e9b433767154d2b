"""Exact GGUF import and the fidelity check through every front-end, on the real default GGUF:
`ingot model import` / `ingot model verify --fidelity` in-process, `ingot/model/verify` over
JSON-RPC with progress, and the same command through a running service's REST routes."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from engine.compile import locate_pypi_file
from tests.e2e.cli_helpers import run, service
from tests.e2e.rest_server import secret_headers
from tests.e2e.rpc_client import engine
from tests.support.models import GGUF_FILE, GGUF_PACKAGE, GGUF_VERSION

pytestmark = pytest.mark.slow
IMPORTED = "smol-exact-cpu-gguf:1"


@pytest.fixture(scope="module")
def gguf() -> Path:
    return locate_pypi_file(GGUF_PACKAGE, GGUF_FILE, GGUF_VERSION)


@pytest.fixture(scope="module")
def imported_home(tmp_path_factory: pytest.TempPathFactory, gguf: Path) -> Path:
    """A home with the default GGUF imported by the CLI (in-process: no service running)."""
    home = tmp_path_factory.mktemp("ingot-import")
    proc = run(home, "model", "import", str(gguf), "--name", "smol-exact", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["id"] == IMPORTED and info["cached"] and info["runtime"] == "onnx-genai"
    assert "exact" in info["description"] and "Q4_1" in info["description"]
    return home


def test_cli_import_then_run_and_verify(imported_home: Path) -> None:
    listed = json.loads(run(imported_home, "model", "list", "-o", "json", check=True).stdout)
    assert IMPORTED in [m["id"] for m in listed["models"]]
    answer = run(
        imported_home, "model", "run", "smol-exact", "--prompt", "Say hi.", "--max-tokens", "16"
    )
    assert answer.returncode == 0 and answer.stdout.strip(), answer.stderr
    proc = run(imported_home, "model", "verify", "smol-exact", "--fidelity", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["model"] == IMPORTED and res["meetsTarget"] is True
    assert 0 < res["meanKl"] <= res["target"] == 0.01
    assert res["tokens"] > 200 and res["top1Agreement"] > 0.9


def test_cli_import_errors_are_one_line(tmp_path: Path) -> None:
    missing = run(tmp_path, "model", "import", str(tmp_path / "nope.gguf"))
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    not_gguf = tmp_path / "model.bin"
    not_gguf.write_bytes(b"not a gguf")
    bad = run(tmp_path, "model", "import", str(not_gguf))
    assert bad.returncode != 0 and "not a GGUF file" in bad.stderr
    assert "Traceback" not in missing.stderr + bad.stderr


async def test_jsonrpc_verify_reports_progress(imported_home: Path) -> None:
    async with engine(imported_home, options={"restEnabled": False}) as c:
        res = await c.request("ingot/model/verify", {"model": IMPORTED, "workDoneToken": "fid"})
        assert res["meetsTarget"] and res["meanKl"] <= 0.01
        work = c.work["fid"]
        assert work[0]["kind"] == "begin" and work[-1]["kind"] == "end"
        assert any(w["kind"] == "report" for w in work)


def test_verify_and_import_through_the_service_use_the_rest_routes(
    imported_home: Path, tmp_path: Path
) -> None:
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"not a gguf")
    with service(imported_home) as st:
        proc = run(imported_home, "model", "verify", IMPORTED, "--fidelity", "-o", "json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["meetsTarget"] is True
        body = json.dumps({"path": str(not_gguf)}).encode()
        req = urllib.request.Request(
            st["url"] + "/ingot/v1/models/import",
            data=body,
            headers={"content-type": "application/json", **secret_headers(imported_home)},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            events = r.read().decode()
        assert "event: error" in events and "not a GGUF file" in events
