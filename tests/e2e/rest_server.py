"""Runs `python -m server.rest --port 0 --home <home>` as a real subprocess and waits until it has
written its state file and answers /health; stops it with SIGTERM and checks it left cleanly.
`ingot_auth()` / `secret_headers(home)` are the headers Ingot's own routes need (the home secret)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import openai

from server.secret import HEADER as SECRET_HEADER
from server.secret import read_secret
from server.state import read_state
from tests.support.paths import REPO


@dataclass
class RestServer:
    proc: subprocess.Popen[bytes]
    home: Path
    url: str
    api_key: str | None
    log: Path
    stdout: Path
    headers: dict[str, str] = field(default_factory=dict)

    def client(self, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.url + "/v1",
            api_key=self.api_key or "unused",
            max_retries=0,
            timeout=120,
            _strict_response_validation=True,
            **kw,
        )

    def async_client(self, **kw: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.url + "/v1",
            api_key=self.api_key or "unused",
            max_retries=0,
            timeout=120,
            _strict_response_validation=True,
            **kw,
        )

    def auth(self) -> dict[str, str]:
        """What an OpenAI tool sends: the API key, if the server has one."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def ingot_auth(self) -> dict[str, str]:
        """What the `ingot` CLI sends: the home's secret (management and native routes need it)
        and the API key, if any."""
        return {**self.auth(), **secret_headers(self.home)}

    def get_json(self, path: str) -> Any:
        req = urllib.request.Request(self.url + path, headers=self.ingot_auth())
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def secret_headers(home: Path) -> dict[str, str]:
    """The header that proves the home's secret, as the CLI sends it."""
    secret = read_secret(home)
    assert secret is not None, f"{home} has no secret: has a server run there yet?"
    return {SECRET_HEADER: secret.value}


def server_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("INGOT_API_KEY", "INGOT_REST_HOST", "INGOT_REST_PORT", "HF_TOKEN"):
        env.pop(var, None)
    env.update(
        {
            "INGOT_HOME": str(home),
            "INGOT_THREADS": "2",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
        }
    )
    env.update(extra or {})
    return env


def spawn(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    home.mkdir(parents=True, exist_ok=True)
    n = len(list(home.parent.glob(f"{home.name}-rest-*.err")))
    log = home.parent / f"{home.name}-rest-{n}.err"
    out = home.parent / f"{home.name}-rest-{n}.out"
    cmd = [sys.executable, "-m", "server.rest", "--port", "0", "--home", str(home), *args]
    with log.open("wb") as err_f, out.open("wb") as out_f:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=server_env(home, env), stdout=out_f, stderr=err_f
        )
    return proc, log, out


def start(
    home: Path,
    *args: str,
    api_key: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 90,
) -> RestServer:
    if api_key:
        args = (*args, "--api-key", api_key)
    proc, log, out = spawn(home, *args, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')}"
            )
        st = read_state(home)
        if st is not None and st.pid == proc.pid:
            server = RestServer(proc, home, st.url, api_key, log, out)
            try:
                req = urllib.request.Request(st.url + "/health")
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200:
                        return server
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"server not ready after {timeout}s:\n{log.read_text(errors='replace')}")


@contextmanager
def running(home: Path, *args: str, **kw: Any) -> Iterator[RestServer]:
    """A server for the block; on exit it must stop cleanly on SIGTERM (code 0), clear its state
    file and never have written to stdout."""
    server = start(home, *args, **kw)
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, server.log_text()
    assert read_state(home) is None, "the state file was left behind"
    assert server.stdout.read_bytes() == b"", "the server wrote to stdout"
    assert "Traceback" not in server.log_text(), server.log_text()


def copy_home(template: Path, dest: Path) -> Path:
    """A private Ingot home from the seeded template (hard links: no model copies)."""
    shutil.copytree(template, dest, copy_function=os.link)
    return dest


async def read_sse(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str | None, str]]:
    """(event, data) pairs of a server-sent event stream, as they arrive."""
    event: str | None = None
    data: list[str] = []
    async for raw in resp.content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
