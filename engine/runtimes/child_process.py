"""ChildProcess: what the ONNX worker and the vLLM server have in common as child processes.

Each runs in its own session (a terminal's Ctrl-C reaches the engine, which decides, and the
engine can stop everything the child started), is read by tasks started with it, is stopped by
closing its stdin and then by SIGKILL to its process group, and reports an exit nobody asked for
(a crash, the OOM killer) once, with a reason, so the loader can mark the model failed and load
it again next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

log = logging.getLogger(__name__)

# asyncio's default line limit for the child's pipes.
DEFAULT_LIMIT = 2**16

# Secrets a model's process never needs: it reads a local folder, offline. Whatever a child holds
# in its environment, everything that can read the child can read (its own plugins and custom
# model code, a crash dump, /proc/<pid>/environ of a process that dropped privileges less), so the
# engine's REST key and the user's hub and cloud tokens stay with the engine.
SECRET_NAMES = frozenset(
    {"INGOT_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "VLLM_API_KEY"}
)
# ... and anything named like a secret: GITHUB_TOKEN, AWS_SECRET_ACCESS_KEY, ANTHROPIC_API_KEY.
# Whole words between underscores, so TOKENIZERS_PARALLELISM stays; TOKEN and KEY only as the last
# word, since settings count tokens (INGOT_MAX_TOKENS_LIMIT, INGOT_TOKEN_FLUSH_MS must reach the
# worker) and a variable named by `ingot model attach --api-key-env` (VLLM_KEY) must not.
SECRET_WORDS = re.compile(
    r"(?:^|_)(?:SECRETS?|PASSWORDS?|PASSWD|API_?KEYS?|ACCESS_KEYS?|PRIVATE_KEYS?|"
    r"CREDENTIALS?)(?:_|$)|(?:^|_)(?:TOKENS?|KEYS?)$",
    re.IGNORECASE,
)


def is_secret(name: str) -> bool:
    return name.upper() in SECRET_NAMES or SECRET_WORDS.search(name) is not None


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """`env` less every variable that holds, or is named like, a secret (see SECRET_NAMES)."""
    return {k: v for k, v in env.items() if not is_secret(k)}


def describe_exit(code: int) -> str:
    return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"


def kill_group(pgid: int | None) -> None:
    if pgid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


class ChildProcess:
    def __init__(self, argv: list[str], *, env: dict[str, str] | None, name: str) -> None:
        """`env`: the child's whole environment, as given; None: the engine's, less secrets."""
        self.argv = argv
        self.env = env if env is not None else without_secrets(os.environ)
        self.name = name
        self.proc: asyncio.subprocess.Process | None = None
        self.exit_reason: str | None = None
        self._on_exit: list[Callable[[str], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def on_exit(self, callback: Callable[[str], None]) -> None:
        """Called once, with a reason, if the process ends without close() being asked for."""
        self._on_exit.append(callback)

    async def _spawn(
        self,
        readers: dict[str, Callable[[], Coroutine[Any, Any, None]]],
        *,
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        """Start the process and one task per reader (named `<name>-<key>`)."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            limit=limit,
            start_new_session=True,
        )
        self._tasks = [
            asyncio.create_task(read(), name=f"{self.name}-{key}") for key, read in readers.items()
        ]

    def _ending(self, code: int) -> bool:
        """Note, the moment the exit is seen, whether close() asked for it (a close() that
        starts while the child's last lines are read must not turn a crash into a stop), and
        give the exit a reason at once (the child's last words follow in `_exited`)."""
        closing = self._closing
        if not closing:
            self.exit_reason = f"The {self.name} {describe_exit(code)}."
        return closing

    def _exited(self, code: int, tail: str, closing: bool) -> str:
        """Set exit_reason for an exit with `code` (and the log `tail` that may say why), and
        report it to the on_exit callbacks unless close() asked for it (`closing`, from
        `_ending`)."""
        if closing:
            self.exit_reason = f"The {self.name} was stopped."
            return self.exit_reason
        self.exit_reason = f"The {self.name} {describe_exit(code)}" + (f": {tail}" if tail else ".")
        log.warning("%s", self.exit_reason)
        for cb in self._on_exit:
            try:
                cb(self.exit_reason)
            except Exception:
                log.exception("%s: exit callback failed", self.name)
        return self.exit_reason

    def _kill(self) -> None:
        """Stop everything the child started (its process group)."""
        kill_group(self.pid)

    async def close(self, grace_s: float = 5.0) -> None:
        """Ask the process to end (close its stdin), stop its whole group if it lingers past
        `grace_s`, and return once it and its readers are done."""
        self._closing = True
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
            try:
                async with asyncio.timeout(grace_s):
                    await proc.wait()
            except TimeoutError:
                self._kill()
                await proc.wait()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5.0)
