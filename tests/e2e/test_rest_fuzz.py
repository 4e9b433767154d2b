"""End-to-end: generated requests against the real REST server (`python -m server.rest`) on a
seeded home with the default model loaded. schemathesis reads server/rest/openapi.py's description
of every route and sends valid-ish and invalid requests (wrong types, missing fields, huge numbers,
odd strings, methods a route does not take); none may get a 5xx, a traceback or an internal error
inside a stream, and the server answers /health afterwards. Every state-changing route also refuses
cross-site callers.

Bounded: the server caps max_tokens (INGOT_MAX_TOKENS_LIMIT) and requests without one ask for a
few tokens; the routes that delete, move, build, fetch or attach run against a second server on a
throwaway home, with every path they are given put inside a scratch folder; nothing is downloaded
and a remote to attach is always a closed port on 127.0.0.1.
"""

from __future__ import annotations

import os
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error

from server.rest.openapi import OPERATIONS, openapi_document
from server.secret import HEADER as SECRET_HEADER
from server.secret import read_secret
from tests.e2e.rest_server import RestServer, copy_home, running

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
MAX_TOKENS_LIMIT = 8
# A request without max_tokens asks for this many (the limit refuses more than MAX_TOKENS_LIMIT).
FEW_TOKENS = 3
EXAMPLES = int(os.environ.get("INGOT_FUZZ_EXAMPLES", "25"))

# Routes that delete, move, build or fetch: only the throwaway server gets them.
DESTRUCTIVE = {
    ("DELETE", "/ingot/v1/models/{model}"),
    ("POST", "/ingot/v1/cache/move"),
    ("POST", "/ingot/v1/models/register"),
    ("POST", "/ingot/v1/models/import"),
    ("POST", "/ingot/v1/models/compile"),
    ("POST", "/ingot/v1/models/{model}/download"),
    ("POST", "/ingot/v1/models/{model}/verify"),
    ("POST", "/openai/download"),
    ("POST", "/ingot/v1/remotes"),
    ("DELETE", "/ingot/v1/remotes/{remote}"),
}
ATTACH = ("POST", "/ingot/v1/remotes")
# Nothing listens there: an attach fails at once, and no request leaves this machine.
NOWHERE = "http://127.0.0.1:9/"
# Never given a real model's name: a download would go to the network, a verify runs for minutes.
NO_REAL_MODEL = {
    ("POST", "/ingot/v1/models/{model}/download"),
    ("POST", "/ingot/v1/models/{model}/verify"),
    ("POST", "/openai/download"),
}
NATIVE_GENERATION = {("POST", "/ingot/v1/chat"), ("POST", "/ingot/v1/complete")}
OPENAI_GENERATION = {("POST", "/v1/chat/completions"), ("POST", "/v1/completions")}

CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            "mode": "all",  # valid-ish and invalid requests
            "max-examples": EXAMPLES,
            "database": "none",  # nothing written into the checkout
            "allow-x00": True,
            # The real secret goes in every request (auth_headers); no generated stand-in.
            "with-security-parameters": False,
        },
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},  # boundaries, wrong types, missing fields, methods
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        "suppress-health-check": ["all"],
        "request-timeout": 120,
        "max-stream-events": 3,  # /ingot/v1/events never ends by itself
    }
)
SCHEMA = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)


def auth_headers(home: Path) -> dict[str, str]:
    """Headers that authorise a request to the server of `home`: its secret (which /ingot/v1/* and
    Foundry's state-changing routes need), as the CLI sends it. Every request here uses them."""
    secret = read_secret(home)
    return {SECRET_HEADER: secret.value} if secret is not None else {}


@dataclass
class Target:
    server: RestServer
    scratch: Path  # where the throwaway server's paths point


@dataclass
class Servers:
    main: Target
    throwaway: Target

    def for_operation(self, method: str, path: str) -> Target:
        return self.throwaway if (method.upper(), path) in DESTRUCTIVE else self.main


def _post(server: RestServer, path: str, body: dict[str, Any]) -> Any:
    import json

    req = urllib.request.Request(
        server.url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **auth_headers(server.home)},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, seeded_home_template: Path
) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("fuzz")
    env = {"INGOT_MAX_TOKENS_LIMIT": str(MAX_TOKENS_LIMIT), "INGOT_LOG_LEVEL": "WARNING"}
    with ExitStack() as stack:
        targets = []
        for name in ("main", "throwaway"):
            home = copy_home(seeded_home_template, root / name / "home")
            scratch = root / name / "scratch"
            scratch.mkdir()
            server = stack.enter_context(running(home, env=env))
            targets.append(Target(server, scratch))
        main, throwaway = targets
        assert _post(main.server, f"/ingot/v1/models/{MODEL}/load", {"ttl": -1})["loaded"] is True
        yield Servers(main, throwaway)
        for t in targets:
            assert _health(t.server) == 200, t.server.log_text()[-3000:]


def _health(server: RestServer) -> int:
    with urllib.request.urlopen(server.url + "/health", timeout=30) as r:
        return int(r.status)


def _sometimes(value: str) -> bool:
    """Deterministically, about one generated name in three is swapped for the real model, so
    requests reach the engine as well as its validation."""
    return zlib.crc32(value.encode("utf-8", "replace")) % 3 == 0


def _inside(scratch: Path, value: str) -> str:
    """A generated path, kept inside the scratch folder (odd characters and all)."""
    return str(scratch) + "/" + value.lstrip("/~").replace("..", "__")


def _unset(body: dict[str, Any], *names: str) -> bool:
    return all(body.get(name) is None for name in names)


def _bound(case: schemathesis.Case, target: Target) -> None:
    """Adjust a generated case so that it stays cheap and harmless (see the module docstring)."""
    key = (case.method.upper(), case.path)
    body = case.body
    if isinstance(body, dict):
        # An absent or null max_tokens means "up to the context" (INGOT_MAX_TOKENS_LIMIT only
        # refuses larger explicit ones): ask for a few instead.
        if key in OPENAI_GENERATION and _unset(body, "max_tokens", "max_completion_tokens"):
            body["max_tokens"] = FEW_TOKENS
        if key in NATIVE_GENERATION and _unset(body, "maxTokens", "max_tokens"):
            body["maxTokens"] = FEW_TOKENS
        model = body.get("model")
        if key not in NO_REAL_MODEL and isinstance(model, str) and _sometimes(model):
            body["model"] = MODEL
        if key == ATTACH and isinstance(body.get("url"), str):
            body["url"] = NOWHERE + quote(body["url"][:200], safe="")
        if key in DESTRUCTIVE:
            for field in ("path", "source"):
                if isinstance(body.get(field), str):
                    body[field] = _inside(target.scratch, body[field])
    params = case.path_parameters
    model = params.get("model") if params else None
    if isinstance(model, str) and key not in NO_REAL_MODEL and _sometimes(model):
        params["model"] = MODEL


def _reproduction(case: schemathesis.Case, response: Any) -> str:
    return f"{case.as_curl_command()}\n-> {response.status_code}\n{response.text[:2000]}"


@SCHEMA.parametrize()
def test_no_generated_request_gets_a_server_error(
    case: schemathesis.Case, servers: Servers
) -> None:
    target = servers.for_operation(case.method, case.path)
    _bound(case, target)
    headers = auth_headers(target.server.home)
    response = case.call(base_url=target.server.url, headers=headers)
    case.validate_response(response, checks=[not_a_server_error], headers=headers)
    text = response.text
    assert "Traceback" not in text, _reproduction(case, response)
    # A failure after a stream started arrives inside it (SSE `error` event, Foundry's text).
    for sign in ('"code": "internal"', '"code":"internal"', "Internal error ("):
        assert sign not in text, _reproduction(case, response)


@pytest.mark.parametrize(
    "op", [op for op in OPERATIONS if op.state_changing], ids=lambda op: f"{op.method} {op.path}"
)
@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}, "cross_site_request"),
        ({"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"}, "cross_site_request"),
        ({"Sec-Fetch-Mode": "no-cors"}, "cross_site_request"),
        ({"Referer": "https://evil.example/page"}, "cross_site_request"),
        ({"Origin": "https://evil.example"}, "origin_not_allowed"),
    ],
    ids=["cross-site", "same-site", "no-cors", "referer", "origin"],
)
def test_every_state_changing_route_refuses_cross_site_callers(
    servers: Servers, op: Any, headers: dict[str, str], code: str
) -> None:
    target = servers.for_operation(op.method, op.path)
    path = op.path.replace("{model}", MODEL)
    body = op.example if op.example is not None else ({} if op.body is not None else None)
    response = requests.request(
        op.method.upper(),
        target.server.url + path,
        json=body,
        headers={**auth_headers(target.server.home), **headers},
        timeout=60,
    )
    assert response.status_code == 403, (op.key, response.status_code, response.text[:500])
    assert response.json()["error"]["code"] == code, response.text[:500]


def test_the_servers_still_answer_and_the_model_is_still_there(servers: Servers) -> None:
    for target in (servers.main, servers.throwaway):
        assert _health(target.server) == 200
    info = servers.main.server.get_json(f"/ingot/v1/models/{MODEL}")
    assert info["cached"] is True, info
