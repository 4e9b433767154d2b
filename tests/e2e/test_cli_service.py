"""`ingot service` and the model commands that act on it, as real processes: start/status/stop with
the state file, port fallback, a stale state file after a crash, load/unload with TTL, ps, and
`model run` through the service."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from server.state import ServiceState, pid_alive, read_state, state_path, write_state
from tests.conftest import DEFAULT_ONNX_ID, wait_until
from tests.e2e.cli_helpers import (
    cli_env,
    free_port,
    ingot_argv,
    kill_service,
    run,
    run_json,
    service,
)
from tests.e2e.rest_server import secret_headers

ALIAS = "smollm2-135m"


def get(url: str, home: Path) -> Any:
    """A management route of the service serving `home`, with that home's secret."""
    req = urllib.request.Request(url, headers=secret_headers(home))
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_start_status_stop(seeded_home: Path) -> None:
    port = free_port()
    try:
        proc = run(seeded_home, "service", "start", "--port", str(port), "-o", "json")
        assert proc.returncode == 0, proc.stderr
        st = json.loads(proc.stdout)
        assert st["running"] is True
        assert st["kind"] == "service"
        assert st["url"] == f"http://127.0.0.1:{port}"
        assert st["openaiBaseUrl"] == st["url"] + "/v1"
        assert pid_alive(st["pid"])
        assert st["status"]["pid"] == st["pid"]
        assert st["status"]["loaded"] == []

        path = state_path(seeded_home)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        saved = read_state(seeded_home)
        assert saved is not None
        assert saved.pid == st["pid"]
        assert saved.url == st["url"]
        log = seeded_home / "logs" / "service.log"
        assert log.is_file()

        text = run(seeded_home, "service", "status", check=True).stdout
        assert st["url"] in text
        assert "OpenAI base URL" in text
        assert str(st["pid"]) in text
        again = run(seeded_home, "service", "start", "-o", "json", check=True)
        assert json.loads(again.stdout)["pid"] == st["pid"]
        assert "already running" in again.stderr
        assert run(seeded_home, "service", "logs", "-n", "5", check=True).stdout.strip()

        stop = run(seeded_home, "service", "stop", check=True)
        assert str(st["pid"]) in stop.stdout
        assert not path.exists()
        assert wait_until(lambda: not pid_alive(st["pid"]), 10)
        status = run(seeded_home, "service", "status", "-o", "json")
        assert status.returncode == 3
        assert json.loads(status.stdout)["running"] is False
        assert "not running" in run(seeded_home, "service", "status").stdout
        assert "No Ingot service" in run(seeded_home, "service", "stop", check=True).stdout
    finally:
        kill_service(seeded_home)


def test_port_fallback_when_the_default_port_is_taken(seeded_home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        env = {"INGOT_REST_PORT": str(taken)}
        try:
            proc = run(seeded_home, "service", "start", "-o", "json", env=env)
            assert proc.returncode == 0, proc.stderr
            st = json.loads(proc.stdout)
            assert not st["url"].endswith(f":{taken}")
            assert f"Port {taken} is in use" in proc.stderr
            assert get(st["url"] + "/ingot/v1/status", seeded_home)["pid"] == st["pid"]
        finally:
            kill_service(seeded_home)
        explicit = run(seeded_home, "service", "start", "--port", str(taken))
        assert explicit.returncode == 1
        assert "already in use" in explicit.stderr
        assert "hint:" in explicit.stderr
        assert read_state(seeded_home) is None


def test_stale_state_file_after_a_crash(seeded_home: Path) -> None:
    with service(seeded_home) as st:
        os.kill(st["pid"], signal.SIGKILL)
        assert wait_until(lambda: not pid_alive(st["pid"]), 10)
        assert read_state(seeded_home) is not None  # the crash left it behind
        status = run(seeded_home, "service", "status")
        assert status.returncode == 3
        assert "not running" in status.stdout
        assert read_state(seeded_home) is None
        # Model commands work in-process again rather than calling a dead URL.
        assert run_json(seeded_home, "model", "info", ALIAS)["loaded"] is False

    # A live pid that is not a service (the pid was reused) and a port nobody listens on.
    write_state(
        seeded_home,
        ServiceState(
            pid=os.getpid(),
            url=f"http://127.0.0.1:{free_port()}",
            started_at=0.0,
            kind="service",
            version="0",
            home=str(seeded_home),
        ),
    )
    assert run(seeded_home, "service", "status").returncode == 3
    assert read_state(seeded_home) is None
    with service(seeded_home) as st2:
        assert st2["running"] is True
        assert pid_alive(st2["pid"])


def test_load_unload_with_ttl_act_on_the_service(seeded_home: Path) -> None:
    try:
        # No service yet: `load` starts one, as Foundry's CLI does.
        proc = run(seeded_home, "model", "load", ALIAS, "--ttl", "120")
        assert proc.returncode == 0, proc.stderr
        assert "Started the Ingot service" in proc.stderr
        assert DEFAULT_ONNX_ID in proc.stdout
        assert "2m 00s" in proc.stdout
        st = read_state(seeded_home)
        assert st is not None
        # What the CLI loaded is what the REST port serves.
        live = get(st.url + "/ingot/v1/status", seeded_home)
        assert [m["id"] for m in live["loaded"]] == [DEFAULT_ONNX_ID]
        assert live["loaded"][0]["ttlSeconds"] == 120

        listed = {m["id"]: m for m in run_json(seeded_home, "model", "list")["models"]}
        assert listed[DEFAULT_ONNX_ID]["loaded"] is True
        assert 0 < listed[DEFAULT_ONNX_ID]["expiresInSeconds"] <= 120

        ps = run(seeded_home, "service", "ps", check=True).stdout
        assert DEFAULT_ONNX_ID in ps
        assert "TTL LEFT" in ps.splitlines()[0]
        ps_json = run_json(seeded_home, "service", "ps")
        assert ps_json["models"][0]["id"] == DEFAULT_ONNX_ID
        assert ps_json["models"][0]["memoryBytes"] > 0

        unload = run(seeded_home, "model", "unload", ALIAS, "-o", "json", check=True)
        assert json.loads(unload.stdout) == {"unloaded": True}
        assert get(st.url + "/ingot/v1/status", seeded_home)["loaded"] == []
        again = run(seeded_home, "model", "unload", ALIAS)
        assert again.returncode == 1
        assert "not loaded" in again.stderr

        # A short TTL unloads by itself; `ps` shows it gone.
        run(seeded_home, "model", "load", ALIAS, "--ttl", "1", check=True)
        assert wait_until(lambda: run_json(seeded_home, "service", "ps")["models"] == [], 20, 0.5)
        kept = run(seeded_home, "model", "load", ALIAS, "--ttl", "-1", check=True)
        assert "kept until unloaded" in kept.stdout
        assert run_json(seeded_home, "service", "ps")["models"][0]["expiresInSeconds"] is None
    finally:
        kill_service(seeded_home)


def test_run_goes_through_the_running_service(seeded_home: Path) -> None:
    with service(seeded_home) as st:
        proc = run(
            seeded_home,
            "model",
            "run",
            ALIAS,
            "--prompt",
            "Name a colour.",
            "--max-tokens",
            "12",
            "--ttl",
            "300",
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip()
        live = get(st["url"] + "/ingot/v1/status", seeded_home)
        assert [m["id"] for m in live["loaded"]] == [DEFAULT_ONNX_ID]
        history = get(st["url"] + "/ingot/v1/telemetry/history", seeded_home)
        assert any(r["modelId"] == DEFAULT_ONNX_ID for r in history["requests"])


def test_idle_timeout_stops_the_service(seeded_home: Path) -> None:
    with service(seeded_home, "--idle-timeout", "2") as st:
        assert wait_until(lambda: not pid_alive(st["pid"]), 30, 0.2)
        assert read_state(seeded_home) is None
        assert run(seeded_home, "service", "status").returncode == 3


def test_api_key_from_start_protects_the_service_and_restart_keeps_working(
    seeded_home: Path,
) -> None:
    key = "sk-cli-test-key"
    port = free_port()
    try:
        started = run(seeded_home, "service", "start", "--port", str(port), "--api-key", key)
        assert started.returncode == 0, started.stderr
        pid = read_state(seeded_home).pid  # type: ignore[union-attr]
        # The key is not on the service's command line.
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert key.encode() not in f.read()
        url = f"http://127.0.0.1:{port}/v1/models"
        with pytest.raises(urllib.error.HTTPError) as denied_key:
            urllib.request.urlopen(url, timeout=10)
        assert denied_key.value.code == 401
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        # Other commands authenticate with $INGOT_API_KEY; without it they get a clear error.
        ok = run(seeded_home, "model", "list", "-o", "json", env={"INGOT_API_KEY": key})
        assert ok.returncode == 0, ok.stderr
        denied = run(seeded_home, "model", "list")
        assert denied.returncode != 0 and "Traceback" not in denied.stderr
    finally:
        kill_service(seeded_home)


def test_non_loopback_start_without_a_key_is_refused(seeded_home: Path) -> None:
    proc = run(seeded_home, "service", "start", "--host", "0.0.0.0", "--port", str(free_port()))
    assert proc.returncode != 0
    assert "API key" in proc.stderr and "Traceback" not in proc.stderr
    assert read_state(seeded_home) is None


def test_restart_keeps_the_address_and_force_unload_stops_a_running_answer(
    seeded_home: Path,
) -> None:
    port = free_port()
    try:
        first = run_json(seeded_home, "service", "start", "--port", str(port))
        again = run_json(seeded_home, "service", "restart")
        assert again["url"] == first["url"] and again["pid"] != first["pid"]
        assert not pid_alive(first["pid"]) or wait_until(lambda: not pid_alive(first["pid"]), 10)

        run(seeded_home, "model", "load", ALIAS, "--ttl", "-1", check=True)
        long = subprocess.Popen(
            [
                *ingot_argv(),
                "model",
                "run",
                ALIAS,
                "--prompt",
                "Write a long story.",
                "--max-tokens",
                "1500",
            ],
            env=cli_env(seeded_home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert wait_until(
            lambda: get(again["url"] + "/ingot/v1/status", seeded_home)["activeRequests"] == 1,
            60,
            0.1,
        )
        plain = run(seeded_home, "model", "unload", ALIAS)
        assert plain.returncode == 0
        assert (
            get(again["url"] + "/ingot/v1/status", seeded_home)["activeRequests"] == 1
        )  # not cut short
        forced = run(seeded_home, "model", "unload", ALIAS, "--force", "-o", "json", check=True)
        assert json.loads(forced.stdout) == {"unloaded": True}
        _out, err = long.communicate(timeout=60)
        assert long.returncode != 0 and "Traceback" not in err
        assert "stopped" in err.lower() or "unload" in err.lower(), err
        assert get(again["url"] + "/ingot/v1/status", seeded_home)["loaded"] == []
    finally:
        kill_service(seeded_home)
