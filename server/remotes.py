"""Remote deployments between the engine and the wire, for every adapter (JSON-RPC, REST, CLI)."""

from __future__ import annotations

from engine.remotes import RemoteView
from engine.service import EngineService
from protocol.jsonrpc.remotes import (
    RemoteAttachParams,
    RemoteInfo,
    RemoteListResult,
    RemoteModel,
)


def remote_info(service: EngineService, r: RemoteView) -> RemoteInfo:
    """An attached deployment on the wire, with each model's load state and health."""
    models = []
    for v in r.variants:
        view = service.view(v)
        info = view.runtime_info or {}
        health = info.get("health")
        error = info.get("health_error")
        models.append(
            RemoteModel(
                id=v.id,
                name=v.name,
                served_model=v.source.served_model or v.name,
                context_length=v.context_length,
                loaded=view.loaded,
                health=health if health in ("ok", "down") else None,
                health_error=error if isinstance(error, str) else None,
            )
        )
    return RemoteInfo(name=r.name, url=r.url, key=r.key, api_key_env=r.api_key_env, models=models)


async def attach(service: EngineService, p: RemoteAttachParams) -> RemoteInfo:
    view = await service.attach_remote(
        p.url, api_key=p.api_key, api_key_env=p.api_key_env, name=p.name
    )
    return remote_info(service, view)


async def detach(service: EngineService, remote: str) -> RemoteInfo:
    return remote_info(service, await service.detach_remote(remote))


def listing(service: EngineService) -> RemoteListResult:
    return RemoteListResult(remotes=[remote_info(service, r) for r in service.list_remotes()])
