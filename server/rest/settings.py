"""RestSettings (where the REST server listens, what it lets in) and ServerInfo (its runtime facts)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any

from server.secret import HomeSecret

DEFAULT_HOST = "127.0.0.1"
# A stable port for `ingot service start`, so tools can be configured once (the JSON-RPC engine
# asks for port 0 and announces whatever it got).
DEFAULT_PORT = 8745
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    h = host.strip("[]").lower()
    if h in LOOPBACK_NAMES or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _split(v: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in (v or "").split(",") if s.strip())


@dataclass(frozen=True)
class RestSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # Required (and then checked on every route but /health) when set; mandatory off loopback.
    api_key: str | None = field(default=None, repr=False)
    # The home's secret, required on management and native routes (see server/secret.py); None
    # (an app built without a home) refuses those routes to everyone.
    secret: HomeSecret | None = field(default=None, repr=False)
    # Extra names accepted in the Host header besides loopback ones; "*" accepts any.
    allowed_hosts: tuple[str, ...] = ()
    # Browser origins allowed to call the API (CORS); empty = no cross-origin use; "*" = any.
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 8 * 1024 * 1024
    # Upper bound on max_tokens / max_completion_tokens a request may ask for.
    max_tokens_limit: int = 32_768
    # Seconds in-flight requests get to finish when the server stops.
    shutdown_timeout_s: float = 5.0
    # Seconds a client gets to send a request's headers, or its body, and that an idle keep-alive
    # connection stays open: a slow or silent client cannot hold a connection for long.
    read_timeout_s: float = 30.0
    # Open connections at once; more are answered 503 and closed.
    max_connections: int = 256

    def check(self) -> None:
        """Refuse settings that would expose the engine without protection."""
        if not 0 <= self.port <= 65535:
            raise ValueError(f"Port {self.port} is out of range (0-65535).")
        if not is_loopback(self.host) and not self.api_key:
            raise ValueError(
                f"Refusing to listen on {self.host} without an API key: anyone on the network "
                "could use the engine. Set --api-key (or INGOT_API_KEY), or bind 127.0.0.1."
            )
        if self.max_body_bytes < 1024 or self.max_tokens_limit < 1:
            raise ValueError("max_body_bytes must be at least 1024 and max_tokens_limit >= 1.")
        if self.read_timeout_s <= 0 or self.max_connections < 1:
            raise ValueError("read_timeout_s must be positive and max_connections at least 1.")

    def with_overrides(self, **changes: Any) -> RestSettings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @staticmethod
    def from_env(**overrides: Any) -> RestSettings:
        env: dict[str, Any] = {}
        if v := os.environ.get("INGOT_REST_HOST"):
            env["host"] = v
        if v := os.environ.get("INGOT_REST_PORT"):
            env["port"] = int(v)
        if v := os.environ.get("INGOT_API_KEY"):
            env["api_key"] = v
        if v := os.environ.get("INGOT_ALLOWED_HOSTS"):
            env["allowed_hosts"] = _split(v)
        if v := os.environ.get("INGOT_CORS_ORIGINS"):
            env["cors_origins"] = _split(v)
        if v := os.environ.get("INGOT_MAX_BODY_BYTES"):
            env["max_body_bytes"] = int(v)
        if v := os.environ.get("INGOT_MAX_TOKENS_LIMIT"):
            env["max_tokens_limit"] = int(v)
        if v := os.environ.get("INGOT_READ_TIMEOUT_S"):
            env["read_timeout_s"] = float(v)
        if v := os.environ.get("INGOT_MAX_CONNECTIONS"):
            env["max_connections"] = int(v)
        return RestSettings().with_overrides(**env).with_overrides(**overrides)


@dataclass
class ServerInfo:
    """What handlers need to know about the running server: its URL once bound, readiness,
    activity (for the idle timeout) and the shutdown signal long-lived streams wait on."""

    url: str | None = None
    ready: bool = False
    in_flight: int = 0
    last_activity: float = field(default_factory=time.monotonic)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
