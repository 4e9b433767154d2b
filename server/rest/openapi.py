"""The OpenAPI 3.1 description of the REST port: every route the app registers, with the pydantic
wire models of protocol/ as request bodies and results (a unit test keeps it complete)."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from engine.distribution import ingot_version
from protocol import openai as oa
from protocol.jsonrpc import embeddings as e
from protocol.jsonrpc import generation as g
from protocol.jsonrpc import models as m
from protocol.jsonrpc import remotes as r
from protocol.jsonrpc import service as s
from protocol.openai_embeddings import CreateEmbeddingResponse, EmbeddingRequest
from server.secret import HEADER as SECRET_HEADER

PATH = "/openapi.json"
REF = "#/components/schemas/{model}"
Method = Literal["get", "post", "delete"]
Schema = dict[str, Any]
_PATH_PARAM = re.compile(r"{([^}/]+)}")

DEFAULT_MODEL = "smollm2-135m"
MODEL_PATH_HELP = "An id, a name or an alias; URL-encode it (`smollm2-135m-instruct-cpu-gguf%3A1`)."

_TEXT = {"type": "string"}
_STRINGS = {"type": "array", "items": _TEXT}
_BOOL_QUERY = {"type": "boolean"}


@dataclass(frozen=True)
class Query:
    name: str
    schema: Schema
    description: str = ""


@dataclass(frozen=True)
class Operation:
    """One route: what it takes and what it answers."""

    method: Method
    path: str
    summary: str
    tag: str
    body: type[BaseModel] | Schema | None = None
    # Fields of `body` that the path supplies (`/models/{model}/load` takes the model there).
    from_path: tuple[str, ...] = ()
    body_required: bool = True
    query: tuple[Query, ...] = ()
    result: type[BaseModel] | Schema | None = None
    media: str = "application/json"
    # A GET that changes the engine's state (Foundry's load/unload): refused cross-site like a POST.
    changes_state: bool = False
    example: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.method.upper(), self.path

    @property
    def state_changing(self) -> bool:
        return self.method != "get" or self.changes_state

    @property
    def needs_secret(self) -> bool:
        """Ingot's own routes and Foundry's state-changing ones need the home secret (or the API
        key); the OpenAI routes, /health, /metrics and Foundry's reads stay open on loopback."""
        if self.path.startswith("/ingot/"):
            return True
        if self.path.startswith("/v1/") or self.tag == SERVICE:
            return False
        return self.state_changing


def _sse(events: str) -> Schema:
    return {"type": "string", "description": f"Server-sent events: {events}."}


_FOUNDRY_STATUS: Schema = {
    "type": "object",
    "properties": {
        "Endpoints": _STRINGS,
        "ModelDirPath": _TEXT,
        "PipeName": _TEXT,
        "endpoints": _STRINGS,
        "modelDirPath": _TEXT,
        "pipeName": _TEXT,
    },
}
_FOUNDRY_LOAD: Schema = {
    "type": "object",
    "properties": {"model": _TEXT, "loaded": {"type": "boolean"}},
}
_FOUNDRY_UNLOAD: Schema = {
    "type": "object",
    "properties": {"model": _TEXT, "unloaded": {"type": "boolean"}},
}
_FOUNDRY_DOWNLOAD: Schema = {
    "type": "object",
    "required": ["model"],
    "properties": {
        "model": {
            "type": "object",
            "required": ["Name"],
            "properties": {"Name": _TEXT, "Uri": _TEXT, "ProviderType": _TEXT},
        }
    },
}
_CURRENT_STATUS: Schema = {
    "type": "object",
    "properties": {"modelCachePath": _TEXT, "endpoints": _STRINGS, "pid": {"type": "integer"}},
}
_MODEL_TTL = Query(
    "ttl", {"type": "number"}, "Seconds to keep the model loaded after its last use."
)
_EP = Query("ep", {"type": "string", "enum": ["cpu", "cuda", "gpu"]}, "The device to run it on.")
_FORCE = Query("force", _BOOL_QUERY, "Stop running generations instead of waiting for them.")

_CHAT_EXAMPLE = {
    "model": DEFAULT_MODEL,
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 4,
    "temperature": 0,
}
_COMPLETION_EXAMPLE = {"model": DEFAULT_MODEL, "prompt": "def add(a, b):", "max_tokens": 4}
_NATIVE_CHAT_EXAMPLE = {
    "model": DEFAULT_MODEL,
    "messages": [{"role": "user", "content": "Hi"}],
    "maxTokens": 4,
}

V1, IV1 = "/v1", "/ingot/v1"
OPENAI, FOUNDRY, MANAGE, NATIVE, SERVICE = (
    "OpenAI",
    "Foundry Local",
    "Ingot management",
    "Ingot generation",
    "Service",
)

OPERATIONS: tuple[Operation, ...] = (
    # -- service ---------------------------------------------------------------------------------
    Operation(
        "get",
        "/health",
        "200 when the engine is ready, 503 while it starts or stops.",
        SERVICE,
        result={"type": "object", "properties": {"status": _TEXT}},
    ),
    Operation("get", "/metrics", "Prometheus metrics.", SERVICE, media="text/plain"),
    Operation("get", PATH, "This document.", SERVICE, result={"type": "object"}),
    # -- OpenAI ----------------------------------------------------------------------------------
    Operation(
        "get", f"{V1}/models", "The models that can be used here.", OPENAI, result=oa.ModelList
    ),
    Operation("get", f"{V1}/models/{{model}}", "One model.", OPENAI, result=oa.Model),
    Operation(
        "post",
        f"{V1}/chat/completions",
        "A chat completion (server-sent events with `stream`).",
        OPENAI,
        body=oa.ChatCompletionRequest,
        result=oa.ChatCompletion,
        example=_CHAT_EXAMPLE,
    ),
    Operation(
        "post",
        f"{V1}/completions",
        "A text completion, or fill-in-the-middle with `suffix`.",
        OPENAI,
        body=oa.CompletionRequest,
        result=oa.Completion,
        example=_COMPLETION_EXAMPLE,
    ),
    Operation(
        "post",
        f"{V1}/embeddings",
        "Vectors for texts or token arrays.",
        OPENAI,
        body=EmbeddingRequest,
        result=CreateEmbeddingResponse,
        example={"model": "all-minilm-l6-v2", "input": ["def add(a, b):"]},
    ),
    # -- Foundry Local ---------------------------------------------------------------------------
    Operation(
        "get", "/openai/status", "Foundry's service status.", FOUNDRY, result=_FOUNDRY_STATUS
    ),
    Operation("get", "/openai/models", "Ids of the downloaded models.", FOUNDRY, result=_STRINGS),
    Operation("get", "/openai/loadedmodels", "Ids of the loaded models.", FOUNDRY, result=_STRINGS),
    Operation(
        "get",
        "/openai/load/{model}",
        "Loads a model.",
        FOUNDRY,
        query=(_MODEL_TTL, _EP),
        result=_FOUNDRY_LOAD,
        changes_state=True,
    ),
    Operation(
        "get",
        "/openai/unload/{model}",
        "Unloads a model.",
        FOUNDRY,
        query=(_FORCE,),
        result=_FOUNDRY_UNLOAD,
        changes_state=True,
    ),
    Operation(
        "get",
        "/openai/unloadall",
        "Unloads every model.",
        FOUNDRY,
        result={"type": "object", "properties": {"unloaded": _STRINGS}},
        changes_state=True,
    ),
    Operation(
        "post",
        "/openai/download",
        "Downloads a model: progress lines, then a JSON success object.",
        FOUNDRY,
        body=_FOUNDRY_DOWNLOAD,
        result={"type": "string"},
        media="text/plain",
    ),
    Operation(
        "get",
        "/foundry/list",
        "Catalog entries in Foundry's shape.",
        FOUNDRY,
        result={"type": "array", "items": {"type": "object"}},
    ),
    Operation(
        "post",
        f"{V1}/chat/completions/tokenizer/encode/count",
        "Counts the prompt tokens of `messages` (or `prompt`).",
        FOUNDRY,
        body=oa.TokenCountRequest,
        result={"type": "object", "properties": {"tokenCount": {"type": "integer"}}},
        example={"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "Hi"}]},
    ),
    Operation("get", "/status", "Foundry's current status.", FOUNDRY, result=_CURRENT_STATUS),
    Operation("get", "/models/loaded", "Ids of the loaded models.", FOUNDRY, result=_STRINGS),
    Operation(
        "get",
        "/models/load/{model}",
        "Loads a model.",
        FOUNDRY,
        query=(_MODEL_TTL, _EP),
        result=_FOUNDRY_LOAD,
        changes_state=True,
    ),
    Operation(
        "get",
        "/models/unload/{model}",
        "Unloads a model.",
        FOUNDRY,
        query=(_FORCE,),
        result=_FOUNDRY_UNLOAD,
        changes_state=True,
    ),
    # -- Ingot management ------------------------------------------------------------------------
    Operation(
        "get",
        f"{IV1}/catalog",
        "The catalog with each variant's state here.",
        MANAGE,
        query=(
            Query("device", {"type": "string", "enum": ["cpu", "cuda"]}),
            Query("task", _TEXT),
            Query("runtime", _TEXT),
            Query("cachedOnly", _BOOL_QUERY),
            Query("fitsOnly", _BOOL_QUERY),
            Query("includeAll", _BOOL_QUERY),
        ),
        result=m.CatalogListResult,
    ),
    Operation(
        "post",
        f"{IV1}/models/register",
        "Registers a model folder.",
        MANAGE,
        body=m.ModelRegisterParams,
        result=m.ModelInfo,
    ),
    Operation(
        "post",
        f"{IV1}/models/compile",
        "Compiles a model to ONNX (server-sent progress, then `done`: ModelInfo).",
        MANAGE,
        body=m.ModelCompileParams,
        media="text/event-stream",
        result=_sse("state, progress, then done (ModelInfo) or error"),
    ),
    Operation(
        "post",
        f"{IV1}/models/import",
        "Imports a .gguf file (server-sent progress, then `done`: ModelInfo).",
        MANAGE,
        body=m.ModelImportParams,
        media="text/event-stream",
        result=_sse("state, progress, then done (ModelInfo) or error"),
    ),
    Operation(
        "post",
        f"{IV1}/models/{{model}}/verify",
        "Measures a built model against its source weights (server-sent progress).",
        MANAGE,
        media="text/event-stream",
        result=_sse("progress, then done (FidelityResult) or error"),
    ),
    Operation("get", f"{IV1}/models/{{model}}", "One model.", MANAGE, result=m.ModelInfo),
    Operation(
        "delete",
        f"{IV1}/models/{{model}}",
        "Deletes a model from the cache.",
        MANAGE,
        result=m.ModelDeleteResult,
    ),
    Operation(
        "post",
        f"{IV1}/models/{{model}}/download",
        "Downloads a model (server-sent progress, then `done`: ModelInfo).",
        MANAGE,
        media="text/event-stream",
        result=_sse("state, progress, then done (ModelInfo) or error"),
    ),
    Operation(
        "post",
        f"{IV1}/models/{{model}}/load",
        "Loads a model.",
        MANAGE,
        body=m.ModelLoadParams,
        from_path=("model",),
        body_required=False,
        result=m.ModelInfo,
        example={"ttl": 600},
    ),
    Operation(
        "post",
        f"{IV1}/models/{{model}}/unload",
        "Unloads a model.",
        MANAGE,
        body=m.ModelUnloadParams,
        from_path=("model",),
        body_required=False,
        result=m.ModelUnloadResult,
    ),
    Operation(
        "get", f"{IV1}/remotes", "Attached remote deployments.", MANAGE, result=r.RemoteListResult
    ),
    Operation(
        "post",
        f"{IV1}/remotes",
        "Attaches a remote vLLM deployment (its models become usable here).",
        MANAGE,
        body=r.RemoteAttachParams,
        result=r.RemoteInfo,
    ),
    Operation(
        "delete",
        f"{IV1}/remotes/{{remote}}",
        "Detaches a remote deployment.",
        MANAGE,
        result=r.RemoteInfo,
    ),
    Operation("get", f"{IV1}/cache", "The model cache.", MANAGE, result=m.CacheInfoResult),
    Operation(
        "post",
        f"{IV1}/cache/move",
        "Moves the cache to a new, empty folder.",
        MANAGE,
        body=m.CacheMoveParams,
        result=m.CacheInfoResult,
    ),
    Operation(
        "post",
        f"{IV1}/cache/verify",
        "Checks cached files against their manifests.",
        MANAGE,
        body=m.CacheVerifyParams,
        body_required=False,
        result=m.CacheVerifyResult,
    ),
    Operation(
        "get",
        f"{IV1}/hardware",
        "CPU, memory and GPUs.",
        MANAGE,
        query=(Query("refresh", _BOOL_QUERY, "Probe again instead of the cached answer."),),
        result=m.HardwareResult,
    ),
    Operation("get", f"{IV1}/status", "The engine's status.", MANAGE, result=s.ServiceStatus),
    Operation(
        "get",
        f"{IV1}/telemetry/history",
        "The last 10 minutes of samples and requests.",
        MANAGE,
        result=s.TelemetryHistoryResult,
    ),
    Operation(
        "get",
        f"{IV1}/events",
        "Live events: state, sample, request (server-sent, until the client leaves).",
        MANAGE,
        media="text/event-stream",
        result=_sse("state (ModelStateChanged), sample (TelemetrySample), request"),
    ),
    # -- Ingot's native generation ---------------------------------------------------------------
    Operation(
        "post",
        f"{IV1}/chat",
        "ingot/chat over HTTP: server-sent `delta` events, then `done` (GenerationResult).",
        NATIVE,
        body=g.ChatParams,
        media="text/event-stream",
        result=_sse("delta (StreamDelta), then done (GenerationResult) or error"),
        example=_NATIVE_CHAT_EXAMPLE,
    ),
    Operation(
        "post",
        f"{IV1}/complete",
        "ingot/complete over HTTP: server-sent `delta` events, then `done`.",
        NATIVE,
        body=g.CompleteParams,
        media="text/event-stream",
        result=_sse("delta (StreamDelta), then done (GenerationResult) or error"),
        example={"model": DEFAULT_MODEL, "prompt": "def add(a, b):", "maxTokens": 4},
    ),
    Operation(
        "post",
        f"{IV1}/embed",
        "ingot/embed over HTTP.",
        NATIVE,
        body=e.EmbedParams,
        result=e.EmbedResult,
        example={"model": "all-minilm-l6-v2", "input": ["def add(a, b):"]},
    ),
)


def operation(method: str, path: str) -> Operation:
    """The documented operation for `method` `path` (a route template); KeyError if none."""
    for op in OPERATIONS:
        if op.key == (method.upper(), path):
            return op
    raise KeyError(f"{method.upper()} {path} is not described in server/rest/openapi.py")


def _models() -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    seen: list[tuple[type[BaseModel], JsonSchemaMode]] = [(oa.ErrorResponse, "serialization")]
    for op in OPERATIONS:
        for model, mode in ((op.body, "validation"), (op.result, "serialization")):
            if isinstance(model, type) and (model, mode) not in seen:
                seen.append((model, mode))  # type: ignore[arg-type]
    return seen


def _without(schema: Schema, fields: tuple[str, ...]) -> Schema:
    out = copy.deepcopy(schema)
    for name in fields:
        out.get("properties", {}).pop(name, None)
    required = [r for r in out.get("required", []) if r not in fields]
    if required:
        out["required"] = required
    else:
        out.pop("required", None)
    return out


def _parameters(op: Operation) -> list[Schema]:
    params: list[Schema] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1},
            "description": MODEL_PATH_HELP if name == "model" else "",
        }
        for name in _PATH_PARAM.findall(op.path)
    ]
    params += [
        {"name": q.name, "in": "query", "required": False, "schema": q.schema}
        | ({"description": q.description} if q.description else {})
        for q in op.query
    ]
    return params


def _operation_id(op: Operation) -> str:
    words = re.findall(r"[A-Za-z0-9]+", op.path)
    return op.method + "".join(w[:1].upper() + w[1:] for w in words)


@cache
def _document() -> Schema:
    refs, defs = models_json_schema(_models(), ref_template=REF)
    components: dict[str, Schema] = dict(defs.get("$defs", {}))

    def schema_of(model: type[BaseModel] | Schema, mode: JsonSchemaMode) -> Schema:
        if isinstance(model, dict):
            return model
        return dict(refs[(model, mode)])

    def body_schema(op: Operation) -> Schema:
        assert op.body is not None
        schema = schema_of(op.body, "validation")
        if not op.from_path or isinstance(op.body, dict):
            return schema
        # The path carries these fields: the body is the model's schema without them.
        name = f"{op.body.__name__}Body"
        target = schema["$ref"].rsplit("/", 1)[1]
        components[name] = _without(components[target], op.from_path)
        return {"$ref": REF.format(model=name)}

    error = {
        "description": "An OpenAI-shaped error (see docs/rest.md, Errors).",
        "content": {"application/json": {"schema": schema_of(oa.ErrorResponse, "serialization")}},
    }
    paths: dict[str, dict[str, Schema]] = {}
    for op in OPERATIONS:
        success: Schema = {"description": op.summary}
        if op.result is not None:
            success["content"] = {op.media: {"schema": schema_of(op.result, "serialization")}}
        elif op.media != "application/json":
            success["content"] = {op.media: {"schema": {"type": "string"}}}
        entry: Schema = {
            "operationId": _operation_id(op),
            "summary": op.summary,
            "tags": [op.tag],
            "x-ingot-changes-state": op.state_changing,
            "responses": {"200": success, "default": error},
        }
        if op.needs_secret:
            entry["security"] = [{"homeSecret": []}, {"apiKey": []}]
        if params := _parameters(op):
            entry["parameters"] = params
        if op.body is not None:
            media: Schema = {"schema": body_schema(op)}
            if op.example is not None:
                media["example"] = op.example
            entry["requestBody"] = {
                "required": op.body_required,
                "content": {"application/json": media},
            }
        paths.setdefault(op.path, {})[op.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Ingot REST API",
            "version": ingot_version(),
            "description": (
                "OpenAI-compatible API (`/v1`), Foundry Local's paths, Ingot's management and "
                "native generation API (`/ingot/v1`). See docs/rest.md. Operations with "
                "`security` need the Ingot home's secret (`<home>/rest-secret`, sent as "
                f"`{SECRET_HEADER}`) or, when the server has one, the API key (`Authorization: "
                "Bearer <key>`, which then every route but /health needs). State-changing "
                "operations (`x-ingot-changes-state`) refuse browser requests from other sites."
            ),
        },
        "tags": [{"name": t} for t in (OPENAI, FOUNDRY, MANAGE, NATIVE, SERVICE)],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "homeSecret": {"type": "apiKey", "in": "header", "name": SECRET_HEADER},
                "apiKey": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def openapi_document() -> Schema:
    """The document (a fresh copy: callers may change it)."""
    return copy.deepcopy(_document())


async def handle(request: web.Request) -> web.Response:
    """`GET /openapi.json`."""
    return web.json_response(_document())


def add_to(router: web.UrlDispatcher) -> None:
    router.add_get(PATH, handle)
