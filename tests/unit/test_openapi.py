"""The OpenAPI description of the REST port stays complete: every route the real app registers is
in it (and the reverse), it says which routes change state exactly as the guard decides, it loads
as OpenAPI, and its request examples are valid requests."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from aiohttp import hdrs, web
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_urldispatcher import UrlMappingMatchInfo
from pydantic import BaseModel

from engine.bootstrap import build_engine
from engine.config import EngineConfig
from server.rest.app import create_app
from server.rest.openapi import OPERATIONS, PATH, openapi_document, operation
from server.rest.security import SAFE_METHODS, needs_secret
from server.rest.settings import RestSettings


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> web.Application:
    home = tmp_path_factory.mktemp("openapi-home")
    return create_app(build_engine(EngineConfig(home=home)), RestSettings(port=0))


def _registered(app: web.Application) -> dict[tuple[str, str], Any]:
    """(METHOD, path template) -> handler of every route, without aiohttp's implicit HEADs."""
    routes: dict[tuple[str, str], Any] = {}
    for route in app.router.routes():
        info = route.get_info()
        path = info.get("formatter") or info.get("path")
        if route.method == hdrs.METH_HEAD or not isinstance(path, str):
            continue
        routes[(route.method, path)] = route.handler
    return routes


def _documented() -> set[tuple[str, str]]:
    doc = openapi_document()
    return {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}


def test_every_registered_route_is_documented(app: web.Application) -> None:
    missing = sorted(set(_registered(app)) - _documented())
    assert not missing, f"routes missing from server/rest/openapi.py: {missing}"


def test_every_documented_route_is_registered(app: web.Application) -> None:
    extra = sorted(_documented() - set(_registered(app)))
    assert not extra, f"documented but not served: {extra}"


def test_the_app_serves_the_document(app: web.Application) -> None:
    assert ("GET", PATH) in _registered(app), (
        "create_app must register GET /openapi.json (server.rest.openapi.add_to(app.router))"
    )


def test_state_changing_routes_are_marked_as_the_guard_decides(app: web.Application) -> None:
    """`x-ingot-changes-state` is what security.Guard refuses cross-site: every POST and DELETE,
    and the GETs marked with @changes_state."""
    doc = openapi_document()
    for (method, path), handler in _registered(app).items():
        guard_says = method not in SAFE_METHODS or bool(getattr(handler, "changes_state", False))
        op = doc["paths"].get(path, {}).get(method.lower())
        if op is None:
            continue  # reported by test_every_registered_route_is_documented
        assert op["x-ingot-changes-state"] is guard_says, (method, path)
        assert operation(method, path).state_changing is guard_says


def test_routes_that_need_the_secret_say_so_as_the_guard_decides(app: web.Application) -> None:
    doc = openapi_document()
    for route in app.router.routes():
        info = route.get_info()
        path = info.get("formatter") or info.get("path")
        if route.method == hdrs.METH_HEAD or not isinstance(path, str):
            continue
        op = doc["paths"].get(path, {}).get(route.method.lower())
        if op is None:
            continue  # reported by test_every_registered_route_is_documented
        concrete = path.replace("{model}", "smollm2-135m")
        request = make_mocked_request(route.method, concrete, app=app)
        request._match_info = UrlMappingMatchInfo({}, route)  # the route, not a stand-in
        assert ("security" in op) is needs_secret(request), (route.method, path)


def test_the_document_loads_as_openapi_with_every_operation() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.1")
    schema = schemathesis.openapi.from_dict(doc)
    loaded = []
    for result in schema.get_all_operations():
        op = result.ok()
        loaded.append((op.method.upper(), op.path))
    assert sorted(loaded) == sorted(op.key for op in OPERATIONS)


def test_refs_all_resolve() -> None:
    doc = openapi_document()
    names = set(doc["components"]["schemas"])

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                assert ref.startswith("#/components/schemas/"), ref
                assert ref.rsplit("/", 1)[1] in names, ref
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)


@pytest.mark.parametrize("op", [op for op in OPERATIONS if op.example], ids=lambda op: op.path)
def test_request_examples_are_valid_requests(op: Any) -> None:
    assert op.example is not None
    if isinstance(op.body, type) and issubclass(op.body, BaseModel):
        body = dict(op.example)
        for name in op.from_path:
            body[name] = "smollm2-135m"
        op.body.model_validate(body)
