"""Helpers for the CLI's end-to-end tests: run `ingot` as a real subprocess (pipes or a
pseudo-terminal), free ports, and a service that is always stopped at teardown."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from server.state import read_state
from tests.support.paths import REPO

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\r")


def ingot_argv() -> list[str]:
    """The installed console script (what users run); `python -m` only if it is missing."""
    script = Path(sys.executable).parent / "ingot"
    return [str(script)] if script.exists() else [sys.executable, "-m", "server.cli.main"]


def cli_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("INGOT_API_KEY", "INGOT_REST_HOST", "INGOT_REST_PORT", "HF_TOKEN", "COLUMNS"):
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


def run(
    home: Path,
    *args: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = 300,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`ingot ARGS` with pipes (so not a terminal: plain output)."""
    proc = subprocess.run(
        [*ingot_argv(), *args],
        cwd=REPO,
        env=cli_env(home, env),
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"ingot {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
            f"stderr:\n{proc.stderr}"
        )
    return proc


def run_json(home: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    proc = run(home, *args, "-o", "json", env=env, check=True)
    return json.loads(proc.stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kill_service(home: Path) -> None:
    """Teardown: `ingot service stop`, then make sure (a failed test may leave one running)."""
    st = read_state(home)
    with contextlib.suppress(Exception):
        run(home, "service", "stop", timeout=60)
    if st is not None and st.pid != os.getpid():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(st.pid, signal.SIGKILL)


@contextlib.contextmanager
def service(home: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """`ingot service start` on a free port; yields its `-o json` status; always stopped."""
    port = free_port()
    try:
        proc = run(home, "service", "start", "--port", str(port), *args, "-o", "json", env=env)
        assert proc.returncode == 0, proc.stderr
        yield json.loads(proc.stdout)
    finally:
        kill_service(home)


class PtyProcess:
    """`ingot` on a pseudo-terminal, as a person at a terminal runs it: rich output, readline,
    and Ctrl-C delivered by the terminal as SIGINT."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        argv = [*ingot_argv(), *args]
        environment = cli_env(home, {"TERM": "xterm", "COLUMNS": "120", **(env or {})})
        pid, fd = pty.fork()
        if pid == 0:  # the child: exec at once (nothing else is safe after fork)
            try:
                os.chdir(REPO)
                os.execve(argv[0], argv, environment)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.raw = ""
        self.pos = 0  # read_until consumes up to here
        self.returncode: int | None = None

    @property
    def text(self) -> str:
        """The output without terminal escapes (an escape still arriving is left out, so that
        positions in this text never move)."""
        raw = self.raw
        esc = raw.rfind("\x1b")
        if esc >= 0 and not ANSI.match(raw, esc):
            raw = raw[:esc]
        return ANSI.sub("", raw)

    def _pump(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError as e:
            if e.errno == errno.EIO:  # the child closed the terminal
                return False
            raise
        if not data:
            return False
        self.raw += data.decode("utf-8", errors="replace")
        return True

    def read_until(self, pattern: str, timeout: float = 60) -> str:
        """Wait for `pattern` (a regex) in the output after the last match; returns that output."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.text
            m = rx.search(text, self.pos)
            if m:
                out = text[self.pos : m.end()]
                self.pos = m.end()
                return out
            left = deadline - time.monotonic()
            if (left <= 0 or not self._pump(min(left, 0.2))) and not rx.search(self.text, self.pos):
                raise AssertionError(
                    f"{pattern!r} did not appear; output since the last match:\n"
                    f"{self.text[self.pos :]}"
                )

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 60) -> bool:
        """Wait for `predicate` while reading the output (a full terminal buffer would block
        the child's writes and so stall what the test waits for)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self._pump(0.05)
        return predicate()

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def sendline(self, text: str) -> None:
        self.send(text + "\r")

    # A person never presses a key within microseconds of a prompt appearing; a test does. In that
    # window CPython's readline has printed the prompt but not yet entered its select(), so a
    # SIGINT is only noticed at the next key press and an EOF can be lost in the switch out of
    # canonical mode. Pause briefly, as a person would.
    KEY_DELAY_S = 0.3

    def ctrl_c(self) -> None:
        time.sleep(self.KEY_DELAY_S)
        self.send("\x03")

    def ctrl_d(self) -> None:
        time.sleep(self.KEY_DELAY_S)
        self.send("\x04")

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"ingot did not exit; output:\n{self.text}")
            self._pump(0.1)
        return self.returncode

    def close(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.returncode = -9
        with contextlib.suppress(OSError):
            os.close(self.fd)
