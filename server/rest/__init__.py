"""The OpenAI-compatible REST server (aiohttp): OpenAI, Foundry Local and Ingot management routes."""

from __future__ import annotations

from server.rest.runner import RunningRest, start_rest_server
from server.rest.settings import RestSettings

__all__ = ["RestSettings", "RunningRest", "start_rest_server"]
