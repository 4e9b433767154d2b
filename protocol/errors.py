"""Error codes: each engine error kind with its JSON-RPC code, HTTP status and OpenAI error type.

The kinds match `engine.errors.*.kind` (protocol never imports engine; a test keeps them in step).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCode:
    kind: str
    # JSON-RPC error code: -32000 and -32010..-32099 (LSP reserves -32001/-32002). -32800 (LSP's
    # RequestCancelled) is only for requests the client cancelled with `$/cancelRequest`; a
    # request the engine stopped (forced unload, shutdown) has kind `cancelled` and data.reason.
    code: int
    http_status: int
    openai_type: str
    summary: str

    @property
    def openai_code(self) -> str:
        return self.kind


ERRORS: list[ErrorCode] = [
    ErrorCode("internal", -32000, 500, "server_error", "An unexpected engine error."),
    ErrorCode("invalid_request", -32010, 400, "invalid_request_error", "The request is not valid."),
    ErrorCode(
        "model_not_found", -32011, 404, "invalid_request_error", "No such model in the catalog."
    ),
    ErrorCode(
        "model_not_cached", -32012, 400, "invalid_request_error", "The model is not downloaded yet."
    ),
    ErrorCode(
        "wrong_model_task",
        -32030,
        400,
        "invalid_request_error",
        "The model does not do this task (a chat request to an embedding model, or the reverse).",
    ),
    ErrorCode("model_not_loaded", -32013, 400, "invalid_request_error", "The model is not loaded."),
    ErrorCode(
        "model_does_not_fit", -32014, 507, "server_error", "Not enough memory for the model."
    ),
    ErrorCode(
        "invalid_model_folder",
        -32015,
        400,
        "invalid_request_error",
        "A registered folder is not a usable model.",
    ),
    ErrorCode("load_failed", -32016, 500, "server_error", "The runtime could not load the model."),
    ErrorCode("model_busy", -32017, 409, "invalid_request_error", "The model is running requests."),
    ErrorCode(
        "context_length_exceeded",
        -32018,
        400,
        "invalid_request_error",
        "The prompt does not fit the context.",
    ),
    ErrorCode(
        "engine_busy", -32019, 503, "server_error", "Too many requests are waiting; retry later."
    ),
    ErrorCode(
        "cancelled",
        -32029,
        499,
        "invalid_request_error",
        "The engine stopped the request (forced unload, shutdown); data.reason says why.",
    ),
    ErrorCode(
        "runtime_unavailable",
        -32020,
        501,
        "server_error",
        "The model's runtime is not available here.",
    ),
    ErrorCode(
        "toolchain_missing", -32021, 501, "server_error", "The compile toolchain is not installed."
    ),
    ErrorCode("compile_failed", -32022, 500, "server_error", "Compiling the model failed."),
    ErrorCode("download_failed", -32023, 502, "server_error", "Downloading the model failed."),
    ErrorCode("disk_full", -32024, 507, "server_error", "Not enough free disk space."),
    ErrorCode("cache_error", -32025, 500, "server_error", "The model cache could not be changed."),
    ErrorCode(
        "generation_failed", -32026, 500, "server_error", "The runtime failed while generating."
    ),
    ErrorCode(
        "remote_unavailable",
        -32031,
        502,
        "server_error",
        "The remote deployment (an attached vLLM) did not answer, stalled, or refused the key.",
    ),
    ErrorCode("unauthorized", -32027, 401, "authentication_error", "A valid API key is required."),
    ErrorCode("not_found", -32028, 404, "invalid_request_error", "No such resource."),
]

BY_KIND: dict[str, ErrorCode] = {e.kind: e for e in ERRORS}


def error_for(kind: str) -> ErrorCode:
    return BY_KIND.get(kind, BY_KIND["internal"])
