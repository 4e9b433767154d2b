"""Handlers for `ingot/remote/attach`, `ingot/remote/list` and `ingot/remote/detach`."""

from __future__ import annotations

from typing import Any

from protocol.jsonrpc.remotes import RemoteAttachParams, RemoteDetachParams
from server import remotes
from server.jsonrpc.server import IngotServer, dump, parse


def register(server: IngotServer) -> None:
    @server.feature("ingot/remote/attach")
    async def attach(params: Any) -> Any:
        p = parse(RemoteAttachParams, params)
        return dump(await remotes.attach(server.service, p))

    @server.feature("ingot/remote/list")
    async def list_remotes(params: Any) -> Any:
        return dump(remotes.listing(server.service))

    @server.feature("ingot/remote/detach")
    async def detach(params: Any) -> Any:
        p = parse(RemoteDetachParams, params)
        return dump(await remotes.detach(server.service, p.remote))
