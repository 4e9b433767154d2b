"""Entry point of the JSON-RPC engine: `python -m server` / `ingot engine`."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

from lsprotocol import types

from server.jsonrpc.handlers import register_all
from server.jsonrpc.server import IngotServer
from server.jsonrpc.transport import StdoutWriter, read_messages

log = logging.getLogger("ingot.jsonrpc")

METHODS_NOTE = "Ingot methods are listed in capabilities.experimental.ingot.methods."


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pygls logs whole message bodies (prompts, completions) at INFO/DEBUG: keep it quiet.
    logging.getLogger("pygls").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def claim_stdout() -> Any:
    """Take fd 1 for the protocol and point fd 1 at stderr, so that nothing else — a print(), a
    native library — can put a stray byte on the wire."""
    wire = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return wire


async def serve(server: IngotServer, wire: Any) -> int:
    writer = StdoutWriter(wire)
    server.protocol.set_writer(writer)
    reader = asyncio.ensure_future(read_messages(server.protocol, writer))
    exit_wait = asyncio.ensure_future(server.protocol.exit_event.wait())
    await asyncio.wait({reader, exit_wait}, return_when=asyncio.FIRST_COMPLETED)
    reader.cancel()
    exit_wait.cancel()
    if reader.done() and not reader.cancelled() and (failure := reader.exception()) is not None:
        # The reader must never end the engine as if the client had left (exit 0): the client
        # would not restart it and could not tell why its requests go unanswered.
        log.error("the stdin reader failed; exiting", exc_info=failure)
        server.protocol.exit_code = server.protocol.exit_code or 1
    await server.close()
    code = server.protocol.exit_code
    # End of input without `exit`: the client went away; that is a clean exit.
    return 0 if code is None else code


def add_capabilities(server: IngotServer) -> None:
    """Advertise Ingot's methods in the initialize result (capabilities.experimental)."""
    from protocol.registry import REGISTRY

    original = server.protocol.lsp_initialize

    def lsp_initialize(params: types.InitializeParams) -> Any:
        result = yield from original(params)
        result.capabilities.experimental = {
            "ingot": {
                "version": server.version,
                "methods": sorted(m.name for m in REGISTRY),
            }
        }
        return result

    server.protocol.fm.builtin_features[types.INITIALIZE] = lsp_initialize


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    configure_logging("DEBUG" if "--debug" in args else os.environ.get("INGOT_LOG_LEVEL", "INFO"))
    wire = claim_stdout()
    server = IngotServer()
    register_all(server)
    add_capabilities(server)
    return asyncio.run(serve(server, wire))


def run_stdio(argv: list[str] | None = None) -> int:
    return main(argv)
