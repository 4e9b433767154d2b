"""`ingot model download` against a local Hugging Face look-alike serving the real default model:
progress (a bar at a terminal, plain lines in a pipe), Ctrl-C cancels cleanly and the next run
resumes, in-process and through the service; failures are one line with a hint."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.cache import safe_dirname
from tests.conftest import wait_until
from tests.e2e.cli_helpers import PtyProcess, cli_env, ingot_argv, run, run_json, service
from tests.support.hf_server import HfTestServer
from tests.support.paths import REPO as REPO_ROOT

HF_REPO = "ingot-test/cli-smollm2-135m-onnx"
ALIAS = "cli-smollm2"
VARIANT = "cli-smollm2-cpu-int8:1"
DATA = "model.onnx.data"
MB = 1024 * 1024


@pytest.fixture
def hub(default_model_dirs: tuple[Path, Path]) -> Iterator[HfTestServer]:
    _, onnx = default_model_dirs
    with HfTestServer({HF_REPO: onnx}) as server:
        yield server


@pytest.fixture
def hub_env(
    tmp_path: Path, hub: HfTestServer, default_model_dirs: tuple[Path, Path]
) -> dict[str, str]:
    """A catalog with one variant whose files come from the test hub, and the env pointing there."""
    _, onnx = default_model_dirs
    size = sum(p.stat().st_size for p in onnx.rglob("*") if p.is_file())
    cfg = json.loads((onnx / "genai_config.json").read_text())
    dec = cfg["model"]["decoder"]
    catalog = {
        "schema": 1,
        "variants": [
            {
                "name": VARIANT.split(":")[0],
                "version": 1,
                "alias": ALIAS,
                "display_name": "SmolLM2 135M (CLI test hub)",
                "publisher": "ingot-test",
                "device": "cpu",
                "framework": "onnx",
                "source": {"kind": "huggingface", "repo": HF_REPO, "revision": "main"},
                "size_bytes": size,
                "context_length": int(cfg["model"]["context_length"]),
                "license": "apache-2.0",
                "kv": {
                    "layers": dec["num_hidden_layers"],
                    "kv_heads": dec["num_key_value_heads"],
                    "head_dim": dec["head_size"],
                },
            }
        ],
    }
    path = tmp_path / "cli-test-catalog.json"
    path.write_text(json.dumps(catalog), encoding="utf-8")
    return {
        "INGOT_CATALOGS": str(path),
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def data_size(default_model_dirs: tuple[Path, Path]) -> int:
    return (default_model_dirs[1] / DATA).stat().st_size


def resumed(hub: HfTestServer) -> bool:
    """The data file was asked for from an offset: the second run resumed the first one's bytes."""
    return any(h.path == DATA and h.range and not h.range.startswith("bytes=0-") for h in hub.hits)


def test_ctrl_c_at_a_terminal_cancels_and_the_next_run_resumes(
    empty_home: Path,
    hub: HfTestServer,
    hub_env: dict[str, str],
    default_model_dirs: tuple[Path, Path],
) -> None:
    hub.throttle_bps = 8 * MB
    p = PtyProcess(empty_home, "model", "download", ALIAS, env=hub_env)
    try:
        assert p.wait_for(lambda: hub.served(HF_REPO, DATA) > 24 * MB, 120)
        p.read_until(r"/s", 30)  # the bar shows a transfer speed
        assert re.search(r"\d+(\.\d)? MB/\d+(\.\d)? MB", p.text), p.text  # and bytes done/total
        p.ctrl_c()
        assert p.wait(30) == 130
    finally:
        p.close()
    said = " ".join(p.text.split())  # rich wraps notes at the terminal's width
    assert "cancelled" in said
    assert "again to resume" in said
    assert "Traceback" not in said
    partial = empty_home / "cache" / "partial" / safe_dirname(VARIANT)
    kept = sum(f.stat().st_size for f in partial.rglob("*") if f.is_file())
    assert kept > 8 * MB, "the partial download was not kept"
    assert run_json(empty_home, "model", "info", ALIAS, env=hub_env)["cached"] is False

    hub.wait_idle(10)
    first = hub.served(HF_REPO, DATA)
    hub.throttle_bps = None
    proc = run(empty_home, "model", "download", ALIAS, env=hub_env, check=True)
    assert f"{VARIANT} is ready" in proc.stdout
    assert re.search(r"^download:\s+\d+%", proc.stderr, re.M), proc.stderr  # plain progress lines
    assert "\x1b[" not in proc.stderr
    assert resumed(hub)
    assert hub.served(HF_REPO, DATA) - first < data_size(default_model_dirs)
    assert run_json(empty_home, "model", "info", ALIAS, env=hub_env)["cached"] is True
    answer = run(
        empty_home, "model", "run", ALIAS, "--prompt", "Hi!", "--max-tokens", "8", env=hub_env
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip()


def test_cancel_and_resume_through_the_service(
    empty_home: Path,
    hub: HfTestServer,
    hub_env: dict[str, str],
    default_model_dirs: tuple[Path, Path],
) -> None:
    with service(empty_home, env=hub_env) as st:
        hub.throttle_bps = 8 * MB
        proc = subprocess.Popen(
            [*ingot_argv(), "model", "download", ALIAS],
            cwd=REPO_ROOT,
            env=cli_env(empty_home, hub_env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert wait_until(lambda: hub.served(HF_REPO, DATA) > 16 * MB, 120, 0.1)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, err
        assert "cancelled" in err
        assert "Traceback" not in err
        # Closing the stream cancelled the download in the service: the hub stops sending.
        hub.wait_idle(15)
        first = hub.served(HF_REPO, DATA)
        assert first < data_size(default_model_dirs)
        info = run_json(empty_home, "model", "info", ALIAS, env=hub_env)
        assert info["cached"] is False

        hub.throttle_bps = None
        again = run(empty_home, "model", "download", ALIAS, "-o", "json", env=hub_env, check=True)
        assert json.loads(again.stdout)["cached"] is True
        assert resumed(hub)
        assert hub.served(HF_REPO, DATA) - first < data_size(default_model_dirs)
        assert (
            "already downloaded"
            in run(empty_home, "model", "download", ALIAS, env=hub_env, check=True).stderr
        )
        assert st["running"]


def test_download_failure_is_one_line_with_a_hint(
    empty_home: Path, hub: HfTestServer, hub_env: dict[str, str]
) -> None:
    hub.gate(HF_REPO, tokens=["secret"])
    proc = run(empty_home, "model", "download", ALIAS, env=hub_env)
    assert proc.returncode == 1
    assert proc.stderr.count("error: ") == 1
    assert "hint: " in proc.stderr
    assert "HF_TOKEN" in proc.stderr
    assert "Traceback" not in proc.stderr
