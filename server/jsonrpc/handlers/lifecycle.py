"""Lifecycle handlers: initialize (engine options, capabilities), initialized (REST), shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

from lsprotocol import types

from server.jsonrpc.handlers.progress import cancel_token
from server.jsonrpc.server import IngotServer


def register(server: IngotServer) -> None:
    @server.feature(types.INITIALIZE)
    def initialize(params: types.InitializeParams) -> None:
        server.start_engine(params)

    @server.feature(types.INITIALIZED)
    async def initialized(params: Any) -> None:
        # A tracked task: `close` (exit, parent gone) waits for it before clearing the state.
        task = server.spawn(server.on_initialized())
        try:
            await task
        except asyncio.CancelledError:
            # `close` stopped the start-up (exit, parent gone, a framing error on stdin): an
            # orderly end, not a failure for pygls to log with a traceback.
            if not task.cancelled():
                raise

    @server.feature(types.SHUTDOWN)
    async def shutdown(params: Any) -> None:
        await server.close()

    @server.feature(types.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    def work_done_cancel(params: types.WorkDoneProgressCancelParams) -> None:
        cancel_token(params.token)
