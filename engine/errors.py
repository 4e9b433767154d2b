"""The engine's error hierarchy: every message says what happened and what to do next."""

from __future__ import annotations

from typing import Any


class IngotError(Exception):
    """Base of every error the engine raises on purpose.

    `kind` is a stable machine-readable name (the wire layers map it to JSON-RPC codes and OpenAI
    error types); `hint` says what the user can do about it; `data` carries structured details.
    """

    kind = "internal"

    def __init__(self, message: str, *, hint: str | None = None, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.data: dict[str, Any] = data

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class InvalidRequest(IngotError):
    kind = "invalid_request"


class ModelNotFound(IngotError):
    kind = "model_not_found"


class ModelNotCached(IngotError):
    kind = "model_not_cached"


class WrongModelTask(IngotError):
    """A chat or completion request to an embedding model, or an embedding request to a chat
    model."""

    kind = "wrong_model_task"


class ModelNotLoaded(IngotError):
    kind = "model_not_loaded"


class ModelDoesNotFit(IngotError):
    kind = "model_does_not_fit"


class InvalidModelFolder(IngotError):
    kind = "invalid_model_folder"


class LoadFailed(IngotError):
    kind = "load_failed"


class ModelBusy(IngotError):
    """The model (or the cache) is in use: an unload without `force` while generations run, a
    delete while the variant is being downloaded or built, a cache move while anything is."""

    kind = "model_busy"


class ContextTooLong(IngotError):
    kind = "context_length_exceeded"


class EngineBusy(IngotError):
    kind = "engine_busy"


class Cancelled(IngotError):
    kind = "cancelled"


class RuntimeUnavailable(IngotError):
    kind = "runtime_unavailable"


class ToolchainMissing(IngotError):
    kind = "toolchain_missing"


class CompileFailed(IngotError):
    kind = "compile_failed"


class DownloadFailed(IngotError):
    kind = "download_failed"


class DiskFull(IngotError):
    kind = "disk_full"


class CacheError(IngotError):
    kind = "cache_error"


class GenerationFailed(IngotError):
    kind = "generation_failed"


class RemoteUnavailable(LoadFailed):
    """A remote deployment (an attached vLLM) did not answer, stalled, or refused Ingot's key,
    while attaching it or serving a request (a load failure of its own kind: a 502, not a 500)."""

    kind = "remote_unavailable"
