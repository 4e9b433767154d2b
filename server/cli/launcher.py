"""The background service's lifetime: find the live one, start one, stop it.

Synchronous and light (no aiohttp), so that `ingot service status` stays quick.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from server.cli.client import CliError
from server.secret import SecretFileError, read_secret
from server.state import (
    ServiceState,
    clear_state,
    live_state,
    owner_answers_as,
    pid_alive,
    read_state,
)

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
LOG_FILE = "service.log"


@dataclass(frozen=True)
class StartResult:
    state: ServiceState
    started: bool  # False: one was already running
    note: str | None = None  # e.g. the port fallback


def log_path(home: Path) -> Path:
    return home / "logs" / LOG_FILE


def default_port() -> int:
    """The stable port (INGOT_REST_PORT overrides it), shared with the REST server's settings."""
    env = os.environ.get("INGOT_REST_PORT")
    if env:
        try:
            return int(env)
        except ValueError as e:
            raise CliError(
                f"INGOT_REST_PORT={env!r} is not a port number.", hint="Unset it or fix it."
            ) from e
    from server.rest.settings import DEFAULT_PORT

    return DEFAULT_PORT


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # As the server will: a port in TIME_WAIT is reusable, one with a listener is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host.strip("[]"), 0))
        return int(s.getsockname()[1])


def health(url: str, timeout: float = 2.0, challenge: str | None = None) -> tuple[bool | None, Any]:
    """(answered, body) of `url`'s /health. answered True: the service answers (body: its JSON,
    or None); False: nothing listens there; None: something listens but does not answer in time
    (busy or hung). The request carries no secret: it is how clients find out who listens."""
    query = "?" + urllib.parse.urlencode({"challenge": challenge}) if challenge else ""
    req = urllib.request.Request(url.rstrip("/") + "/health" + query, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return True, _json_or_none(r.read())
    except urllib.error.HTTPError as e:
        # It answered: /health says 503 while starting or draining.
        with contextlib.suppress(OSError):
            return True, _json_or_none(e.read())
        return True, None
    except (ConnectionRefusedError, ConnectionResetError):
        return False, None
    except urllib.error.URLError as e:
        if isinstance(e.reason, ConnectionRefusedError | ConnectionResetError):
            return False, None
        if isinstance(e.reason, TimeoutError | socket.timeout):
            return None, None
        return False, None
    except TimeoutError:
        return None, None


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def answers(url: str, timeout: float = 2.0) -> bool | None:
    """True: the service answers; False: nothing listens there; None: something listens but does
    not answer in time (busy or hung)."""
    return health(url, timeout)[0]


def find_service(home: Path) -> ServiceState | None:
    """The live service (or JSON-RPC engine) that owns this home, or None. A state file whose
    process died (or whose pid now belongs to another process), or whose port nobody listens on
    any more, is removed. Raises CliError when the owner is alive but something else answers at
    its URL: the CLI must not send that the home's secret."""
    st = live_state(home)
    if st is None or not st.url:
        return None
    try:
        secret = read_secret(home)
    except SecretFileError:
        secret = None  # the client says what is wrong with the file when it reads it
    challenge = secrets.token_hex(16)
    answered, body = health(st.url, challenge=challenge)
    if answered is False:
        clear_state(home, st.pid)
        return None
    if answered and not owner_answers_as(st, body, challenge, secret):
        raise CliError(
            f"{st.url} is not answered by the Ingot process that owns {home} (pid {st.pid}), so "
            "the CLI will not send it this home's secret.",
            hint="Stop that owner (`ingot service stop`, or close the editor that runs it) and "
            "try again.",
        )
    return st


def _is_our_service(pid: int) -> bool:
    try:
        import psutil

        cmd = " ".join(psutil.Process(pid).cmdline())
    except Exception:
        return False
    return "server.rest" in cmd or "server.jsonrpc" in cmd or "ingot" in cmd


def _log_tail(home: Path, lines: int = 15) -> str:
    try:
        text = log_path(home).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def choose_port(host: str, port: int | None) -> tuple[int, str | None]:
    """An explicit port must be free; the default one falls back to a free port (with a note)."""
    if port is not None:
        if port != 0 and not port_free(host, port):
            raise CliError(
                f"Port {port} on {host} is already in use.",
                hint="Choose another --port, or leave --port out to use a free one.",
            )
        return port, None
    wanted = default_port()
    if port_free(host, wanted):
        return wanted, None
    got = free_port(host)
    return got, f"Port {wanted} is in use; the service listens on port {got} instead."


def start_service(
    home: Path,
    *,
    host: str | None = None,
    port: int | None = None,
    idle_timeout: float | None = None,
    api_key: str | None = None,
    extra_args: tuple[str, ...] = (),
) -> StartResult:
    """Start the service detached from this terminal, or return the one already running."""
    from filelock import FileLock

    host = host or os.environ.get("INGOT_REST_HOST") or "127.0.0.1"
    home.mkdir(parents=True, exist_ok=True)
    # Two commands that both need a service must not start two.
    with FileLock(str(home / "service-start.lock"), timeout=READY_TIMEOUT_S + 30):
        running = find_service(home)
        if running is not None:
            return StartResult(running, started=False)
        chosen, note = choose_port(host, port)
        log = log_path(home)
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "server.rest", "--host", host, "--port", str(chosen)]
        argv += ["--home", str(home)]
        if idle_timeout is not None:
            argv += ["--idle-timeout", str(idle_timeout)]
        argv += list(extra_args)
        with open(log, "ab") as out:
            out.write(f"\n--- ingot service start {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            out.flush()
            # The key travels in the environment, never on the command line (`ps` shows that).
            env = dict(os.environ, INGOT_API_KEY=api_key) if api_key else None
            proc = _spawn_detached(argv, out, env)
        state = _wait_ready(home, proc)
        return StartResult(state, started=True, note=note)


def _spawn_detached(
    argv: list[str], log: IO[bytes], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """The service outlives this command, and Ctrl-C in this terminal must not reach it."""
    if sys.platform == "win32":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, creationflags=flags, env=env
        )
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        close_fds=True,
        env=env,
    )


def _wait_ready(home: Path, proc: subprocess.Popen[bytes]) -> ServiceState:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            tail = _log_tail(home)
            raise CliError(
                f"The service exited during start-up (exit code {code})."
                + (f" Its log ends with:\n{tail}" if tail else ""),
                hint=f"The full log is {log_path(home)}.",
            )
        st = read_state(home)
        if st is not None and st.pid == proc.pid and st.url and answers(st.url) is True:
            return st
        time.sleep(0.1)
    with contextlib.suppress(OSError):
        proc.terminate()
    raise CliError(
        f"The service did not answer within {READY_TIMEOUT_S:.0f} s.",
        hint=f"See its log: {log_path(home)}.",
    )


def stop_service(home: Path, *, timeout: float = STOP_TIMEOUT_S) -> ServiceState | None:
    """Stop this home's service (SIGTERM, then SIGKILL after `timeout`). Returns what was stopped."""
    st = live_state(home)
    if st is None:
        return None
    if st.kind != "service":
        raise CliError(
            f"This home is served by an editor's engine (pid {st.pid}), not by `ingot service`.",
            hint="Close the editor (or its Ingot extension) to stop it.",
        )
    if not _is_our_service(st.pid):
        clear_state(home, st.pid)  # the pid was reused by an unrelated process
        return None
    import psutil

    # SIGTERM lets it finish in-flight requests and remove its state file (TerminateProcess on
    # Windows); SIGKILL only if it does not go in time.
    with contextlib.suppress(psutil.Error):
        psutil.Process(st.pid).terminate()
    deadline = time.monotonic() + timeout
    while pid_alive(st.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(st.pid):
        with contextlib.suppress(psutil.Error):
            psutil.Process(st.pid).kill()
        deadline = time.monotonic() + 5
        while pid_alive(st.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    clear_state(home, st.pid)
    return st
