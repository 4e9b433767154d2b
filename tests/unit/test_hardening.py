"""Unit: the pure pieces of the hardening work — where the cache may move, which runtime failures
are the request's fault, and the REST generation caps and priority rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.cache_dest import check_cache_destination
from engine.errors import GenerationFailed, InvalidRequest
from engine.generation import Constraint
from engine.runtimes.onnx_errors import generation_error
from protocol import openai as oa
from protocol.jsonrpc import generation as g
from server.jsonrpc.handlers.generation import check_max_tokens, max_tokens_limit
from server.rest.errors import ApiError
from server.rest.limits import check_native, rest_priority


@pytest.mark.parametrize(
    "dest",
    ["/", "/etc", "/etc/ingot", "/proc", "/proc/self/fd", "/sys", "/dev/shm/x", "/usr", "/tmp"],
)
def test_system_folders_cannot_hold_the_cache(tmp_path: Path, dest: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        check_cache_destination(Path(dest), tmp_path / "cache")
    assert e.value.data["param"] == "path"


def test_cache_destination_rules(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    assert (
        check_cache_destination(tmp_path / "new" / "deeper", cache) == tmp_path / "new" / "deeper"
    )
    assert check_cache_destination(cache, cache) == cache
    (tmp_path / "empty").mkdir()
    assert check_cache_destination(tmp_path / "empty", cache) == tmp_path / "empty"
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("x")
    refused = {
        "relative": Path("relative/dir"),
        "inside": cache / "models" / "x",
        "file": tmp_path / "file",
        "under a file": tmp_path / "file" / "sub",
        "full": tmp_path / "full",
        "nul": Path(str(tmp_path) + "/a\x00b"),
    }
    for case, dest in refused.items():
        with pytest.raises(InvalidRequest) as e:
            check_cache_destination(dest, cache)
        assert e.value.data["param"] == "path", case


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_a_read_only_parent_is_refused(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InvalidRequest, match="not writable"):
            check_cache_destination(ro / "cache", tmp_path / "cache")
    finally:
        ro.chmod(0o700)


def test_runtime_failures_that_are_the_requests_fault() -> None:
    empty = generation_error("Generation failed in ONNX Runtime GenAI: input_ids is empty", None)
    assert isinstance(empty, InvalidRequest) and empty.data["param"] == "prompt"
    lexer = (
        "Generation failed in ONNX Runtime GenAI: Error committing tokens: lexer error: too many "
        "expressions constructed\n<state>\nTokens: ...</state>"
    )
    err = generation_error(lexer, Constraint("regex", "a{1000000}"))
    assert isinstance(err, InvalidRequest) and err.data["param"] == "response_format"
    assert "regex" in err.message and "<state>" not in err.message
    grammar = 'Error creating grammar: at 1(8): unknown name: "foo"'
    err = generation_error(grammar, Constraint("lark_grammar", "start: foo"))
    assert isinstance(err, InvalidRequest) and "Lark grammar" in err.message
    # Without a constraint, a grammar-looking failure is still the runtime's.
    assert isinstance(generation_error(lexer, None), GenerationFailed)
    assert isinstance(generation_error("CUDA out of memory", None), GenerationFailed)


def test_native_caps_and_priority() -> None:
    chat = g.ChatParams.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "priority": "interactive"}
    )
    assert rest_priority(chat, trusted=False).priority == "chat"
    assert rest_priority(chat, trusted=True).priority == "interactive"
    batch = chat.model_copy(update={"priority": "batch"})
    assert rest_priority(batch, trusted=False).priority == "batch"
    check_native(chat, 100)
    for update in ({"max_tokens": 101}, {"stop": ["x" * 1001]}, {"kind": "other"}):
        with pytest.raises(ApiError) as e:
            check_native(chat.model_copy(update=update), 100)
        assert e.value.status == 400


@pytest.mark.parametrize(
    "update",
    [
        {"kind": "x" * 100},
        {"stop": ["x" * 1001]},
        {"stop": ["s"] * 17},
        {"messages": [{"role": "user", "content": "hi"}] * 4097},
    ],
)
def test_the_editor_channel_has_the_same_caps(update: dict[str, object]) -> None:
    """ingot/chat's wire model (also the native REST route's) caps kind, stop and messages."""
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    g.ChatParams.model_validate({**base, "kind": "edit"})
    with pytest.raises(ValidationError):
        g.ChatParams.model_validate({**base, **update})


def test_one_long_stop_string_is_refused_on_the_openai_route_too() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    oa.ChatCompletionRequest.model_validate({**body, "stop": "x" * 1000})
    with pytest.raises(ValidationError):
        oa.ChatCompletionRequest.model_validate({**body, "stop": "x" * 1001})


def test_json_rpc_max_tokens_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGOT_MAX_TOKENS_LIMIT", "100")
    limit = max_tokens_limit()
    assert limit == 100
    p = g.CompleteParams.model_validate({"model": "m", "prompt": "x", "maxTokens": 100})
    check_max_tokens(p, limit)
    with pytest.raises(InvalidRequest) as e:
        check_max_tokens(p.model_copy(update={"max_tokens": 101}), limit)
    assert "INGOT_MAX_TOKENS_LIMIT" in str(e.value)


def test_a_search_option_the_runtime_refuses_is_the_requests_fault() -> None:
    msg = "top_k (99999) must be less than or equal to vocab_size (49152)"
    err = generation_error(msg, None)
    assert isinstance(err, InvalidRequest) and err.data["param"] == "top_k"
    assert "vocab_size (49152)" in err.message
