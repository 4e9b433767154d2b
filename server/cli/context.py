"""CliContext: the Ingot home, output mode and engine connection one command runs with."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from server.cli.bridge import LoopThread
    from server.cli.client import EngineClient
    from server.secret import HomeSecret
    from server.state import ServiceState

T = TypeVar("T")


@dataclass
class CliContext:
    home: Path
    debug: bool = False
    json: bool = False
    _loop: LoopThread | None = field(default=None, repr=False)
    _client: EngineClient | None = field(default=None, repr=False)

    @property
    def stdout_tty(self) -> bool:
        return sys.stdout.isatty()

    @property
    def stderr_tty(self) -> bool:
        return sys.stderr.isatty()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the CLI's engine loop (Ctrl-C cancels it)."""
        if self._loop is None:
            from server.cli.bridge import LoopThread

            self._loop = LoopThread()
        return self._loop.run(coro)

    def client(self, *, need_service: bool = False) -> EngineClient:
        """The running service when there is one (so the CLI acts on what the REST port serves);
        otherwise a new one when the command needs a long-lived process, or the engine in-process."""
        if self._client is not None:
            if need_service and not self._client.remote:
                raise RuntimeError("an in-process client was opened before a service one")
            return self._client
        from server.cli.launcher import find_service

        st = find_service(self.home)
        if st is None and need_service:
            st = self.ensure_service()
        if st is not None:
            from server.cli.http import HttpClient

            self._client = HttpClient(st.url, secret=self.secret())
        else:
            from server.cli.inprocess import InProcessClient

            self._client = self.run(InProcessClient.create(self.home))
        return self._client

    def service_client(self, st: ServiceState) -> EngineClient:
        """A client for the service `st` describes (never the in-process engine: a command that
        reports on the service must not silently describe a fresh engine instead)."""
        if self._client is None or self._client.where != st.url.rstrip("/"):
            from server.cli.http import HttpClient

            if self._client is not None:
                self.run(self._client.close())
            self._client = HttpClient(st.url, secret=self.secret())
        return self._client

    def secret(self) -> HomeSecret | None:
        """The home's secret, for the service that owns this home (`find_service` checked that
        it is the one answering at its URL); a file that must not be used is an error."""
        from server.cli.client import CliError
        from server.secret import SecretFileError, read_secret

        try:
            return read_secret(self.home)
        except SecretFileError as e:
            raise CliError(e.message, hint=e.hint) from None

    def ensure_service(self) -> ServiceState:
        from server.cli.launcher import start_service
        from server.cli.render import note

        res = start_service(self.home)
        if res.started:
            note(f"Started the Ingot service at {res.state.url} (pid {res.state.pid}).")
        if res.note:
            note(res.note)
        return res.state

    def close(self) -> None:
        if self._client is not None and self._loop is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception, KeyboardInterrupt):
                self._loop.run(client.close())
        if self._loop is not None:
            self._loop.close()
            self._loop = None
