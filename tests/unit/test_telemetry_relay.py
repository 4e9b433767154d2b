"""Unit: a forwarding engine's telemetry relay outlives an owner that refuses its event stream or
sends something that is not JSON, logging each refusal once."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import Any, cast

import pytest

from server.jsonrpc.forwarding import Forwarder
from server.jsonrpc.handlers.telemetry import relay_owner_events
from server.jsonrpc.protocol import RpcError
from server.jsonrpc.server import IngotServer

SAMPLE = {"at": 1.0, "cpu": 3}


class FakeForwarder:
    """events() fails with each of `failures` in turn, then yields one sample and ends."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures

    async def events(self) -> AsyncGenerator[tuple[str, Any]]:
        if self.failures:
            raise self.failures.pop(0)
        yield "sample", SAMPLE


class FakeServer:
    def __init__(self) -> None:
        self.forwarder: Any = None
        self.sent: list[tuple[str, Any]] = []

    def notify(self, method: str, params: Any) -> None:
        self.sent.append((method, params))

    async def take_over(self) -> bool:
        raise AssertionError("only a refused connection takes the home over")


@pytest.mark.parametrize(
    "failure",
    [RpcError(-32001, "Missing API key.", {"status": 401}), ValueError("Expecting value")],
    ids=["http-401", "not-json"],
)
async def test_a_refused_or_garbled_stream_is_retried_and_logged_once(
    failure: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    fwd = FakeForwarder([failure, failure, failure])
    server = FakeServer()
    server.forwarder = fwd
    warned: set[str] = set()
    caplog.set_level(logging.WARNING, logger="ingot.jsonrpc")
    for _ in range(4):  # what push() does: call again after each return
        await relay_owner_events(cast(IngotServer, server), cast(Forwarder, fwd), 0.001, warned)
    assert server.sent == [("ingot/telemetry/sample", SAMPLE)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(failure) in warnings[0].getMessage(), warnings
