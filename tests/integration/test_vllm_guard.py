"""The key guard of Ingot's vLLM child, loaded the way vLLM loads it: the server's own command line
through vLLM's parser, its `--middleware` imported by vLLM from the PYTHONPATH and environment the
engine gives the server, in front of routes vLLM's own key check leaves open (one subprocess of
vLLM's interpreter; no weights, no engine)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from engine.runtimes.vllm import server_args, server_env
from engine.runtimes.vllm_install import default_vllm_python
from tests.unit.test_vllm_runtime import runtime_with, vllm_variant

PYTHON = default_vllm_python(None)
# scripts/test.sh installs vLLM and sets INGOT_REQUIRE_VLLM, so there a missing vLLM fails.
pytestmark = pytest.mark.skipif(
    not PYTHON.exists() and not os.environ.get("INGOT_REQUIRE_VLLM"),
    reason="vLLM is not installed: run scripts/setup_vllm.sh",
)

PROBE = r"""
import json, sys
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import make_asgi_app
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.entrypoints.serve.middleware.register import init_entrypoints_middleware
from vllm.utils.argparse_utils import FlexibleArgumentParser

job = json.load(sys.stdin)
args = make_arg_parser(FlexibleArgumentParser()).parse_args(job["argv"])
app = FastAPI()
for path in ("/health", "/v1/models", "/tokenize"):
    app.add_api_route(path, lambda: {"ok": True}, methods=["GET"])
app.add_api_route("/invocations", lambda: {"generated": True}, methods=["POST"])
app.mount("/metrics", make_asgi_app())
init_entrypoints_middleware(args, app, ("generate",))
out = {}
with TestClient(app) as client:
    for method, path in job["routes"]:
        for name, headers in job["headers"].items():
            r = client.request(method, path, headers=headers)
            out[f"{method} {path} {name}"] = r.status_code
print(json.dumps(out))
"""


def test_every_route_but_health_needs_the_servers_key(tmp_path: Path) -> None:
    plan = runtime_with("cpu", tmp_path).plan(vllm_variant())
    argv = server_args(tmp_path, "m:1", 18000, plan)
    env = server_env(plan, tmp_path / "vllm-cache", "s3cret-key")
    job = {
        "argv": argv,
        "routes": [
            ["GET", "/health"],
            ["GET", "/v1/models"],
            ["POST", "/invocations"],
            ["GET", "/tokenize"],
            ["GET", "/metrics/"],
        ],
        "headers": {
            "none": {},
            "wrong": {"Authorization": "Bearer nope"},
            "key": {"Authorization": "Bearer s3cret-key"},
        },
    }
    proc = subprocess.run(
        [str(PYTHON), "-c", PROBE],
        input=json.dumps(job),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for route in ("GET /v1/models", "POST /invocations", "GET /tokenize", "GET /metrics/"):
        assert got[f"{route} none"] == 401, got
        assert got[f"{route} wrong"] == 401, got
        assert got[f"{route} key"] == 200, got
    assert {got[f"GET /health {h}"] for h in ("none", "wrong", "key")} == {200}
