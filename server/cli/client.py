"""EngineClient: what the CLI asks of an engine, answered in-process or by the running service."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.errors import IngotError

if TYPE_CHECKING:
    from protocol.jsonrpc import models as m
    from protocol.jsonrpc.embeddings import EmbedParams, EmbedResult
    from protocol.jsonrpc.remotes import RemoteAttachParams, RemoteInfo, RemoteListResult
    from protocol.jsonrpc.service import ServiceStatus


class CliError(IngotError):
    """A user-facing failure decided by the CLI itself (bad argument value, no service...)."""

    kind = "cli"

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


class Interrupted(CliError):
    """Ctrl-C ended an operation cleanly (exit code 130); reported as a note, not as an error."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, exit_code=130)


class RemoteError(IngotError):
    """An error the service answered with (OpenAI-shaped JSON); `kind` is the engine's kind."""

    def __init__(self, message: str, *, kind: str, hint: str | None, status: int) -> None:
        super().__init__(message, hint=hint, status=status)
        self.kind = kind  # shadows the class attribute: the kind travels on the wire


@dataclass(frozen=True)
class ProgressReport:
    """One progress report, whichever side produced it (engine Progress or an SSE event)."""

    stage: str
    message: str
    fraction: float | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None
    file: str | None = None


ProgressSink = Callable[[ProgressReport], None]


def ignore_progress(_: ProgressReport) -> None:
    """A sink that drops every report."""


@dataclass
class ChatTurn:
    """One chat request: the whole conversation so far and OpenAI-style sampling fields."""

    model: str
    messages: list[dict[str, Any]]
    # max_tokens, temperature, top_p, top_k, seed: only the ones the user set.
    params: dict[str, Any] = field(default_factory=dict)
    ttl: float | None = None


@dataclass(frozen=True)
class ChatOutcome:
    """The finished answer and the engine's measurements of it (ms, tokens/s)."""

    model: str
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None = None
    prefill_tps: float | None = None
    decode_tps: float | None = None
    total_ms: float | None = None


TextSink = Callable[[str], None]


class EngineClient(abc.ABC):
    """The engine operations the CLI needs. Results are the wire models (camelCase JSON), so that
    `-o json` prints exactly what the REST API returns, whichever implementation answered."""

    #: "in-process" or the service URL; shown in messages so users know what acted.
    where: str

    @property
    def remote(self) -> bool:
        return self.where != "in-process"

    @abc.abstractmethod
    async def catalog(self, params: m.CatalogListParams) -> m.CatalogListResult: ...

    @abc.abstractmethod
    async def model_info(self, model: str) -> m.ModelInfo: ...

    @abc.abstractmethod
    async def download(self, model: str, progress: ProgressSink) -> m.ModelInfo:
        """Cancelling the calling task cancels the download; what was fetched stays resumable."""

    @abc.abstractmethod
    async def load(self, model: str, ttl: float | None, progress: ProgressSink) -> m.ModelInfo: ...

    @abc.abstractmethod
    async def unload(self, model: str, force: bool) -> m.ModelUnloadResult: ...

    @abc.abstractmethod
    async def delete(self, model: str) -> m.ModelDeleteResult: ...

    @abc.abstractmethod
    async def register(self, params: m.ModelRegisterParams) -> m.ModelInfo: ...

    @abc.abstractmethod
    async def compile(
        self, params: m.ModelCompileParams, progress: ProgressSink
    ) -> m.ModelInfo: ...

    @abc.abstractmethod
    async def import_gguf(
        self, params: m.ModelImportParams, progress: ProgressSink
    ) -> m.ModelInfo: ...

    @abc.abstractmethod
    async def verify_fidelity(self, model: str, progress: ProgressSink) -> m.FidelityResult: ...

    @abc.abstractmethod
    async def cache_info(self) -> m.CacheInfoResult: ...

    @abc.abstractmethod
    async def cache_move(self, path: str) -> m.CacheInfoResult: ...

    @abc.abstractmethod
    async def cache_verify(self, model: str | None) -> m.CacheVerifyResult: ...

    @abc.abstractmethod
    async def hardware(self) -> m.HardwareResult: ...

    @abc.abstractmethod
    async def status(self) -> ServiceStatus: ...

    @abc.abstractmethod
    async def chat(self, turn: ChatTurn, on_text: TextSink) -> ChatOutcome:
        """Stream the answer's text to `on_text`; cancelling the calling task stops generation."""

    @abc.abstractmethod
    async def embed(self, params: EmbedParams) -> EmbedResult:
        """Vectors from an embedding model (`ingot/embed`'s params and result)."""

    @abc.abstractmethod
    async def attach_remote(self, params: RemoteAttachParams) -> RemoteInfo:
        """Attach a remote vLLM deployment (`ingot/remote/attach`)."""

    @abc.abstractmethod
    async def detach_remote(self, remote: str) -> RemoteInfo: ...

    @abc.abstractmethod
    async def remotes(self) -> RemoteListResult: ...

    @abc.abstractmethod
    async def close(self) -> None: ...
