"""Chat preparation: message normalisation, tools, response formats, tool-call parsing, stops."""

from __future__ import annotations

import json

import pytest

from engine.chat import StopMatcher, normalize_messages, parse_tool_calls, prepare_chat
from engine.errors import InvalidRequest
from engine.generate import feed_stops
from engine.generation import TextDelta

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def test_content_parts_and_roles_are_normalised() -> None:
    msgs = normalize_messages(
        [
            {"role": "developer", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"x": 1}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ]
    )
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[1]["content"] == "ab"
    assert json.loads(msgs[2]["content"]) == {"name": "f", "arguments": {"x": 1}}
    assert "c1" in msgs[3]["content"] and "42" in msgs[3]["content"]


@pytest.mark.parametrize(
    "bad",
    [
        [],
        [{"role": "wizard", "content": "x"}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        [{"role": "user", "content": 5}],
    ],
)
def test_bad_messages_are_clear_errors(bad: list[dict[str, object]]) -> None:
    with pytest.raises(InvalidRequest):
        normalize_messages(bad)


def test_forced_tool_call_builds_a_constraint_for_that_function() -> None:
    p = prepare_chat(
        [{"role": "user", "content": "weather in Paris?"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert p.tool_mode == "required" and p.constraint is not None
    schema = json.loads(p.constraint.text)
    assert schema["properties"]["name"] == {"const": "get_weather"}
    assert "get_weather" in p.messages[0]["content"]
    calls = parse_tool_calls('{"name": "get_weather", "arguments": {"city": "Paris"}}', p)
    assert len(calls) == 1 and json.loads(calls[0].arguments) == {"city": "Paris"}
    assert calls[0].id.startswith("call_")


def test_tool_choice_none_hides_tools_and_unknown_names_fail() -> None:
    p = prepare_chat([{"role": "user", "content": "hi"}], tools=[WEATHER], tool_choice="none")
    assert p.tool_mode == "none" and p.constraint is None
    assert parse_tool_calls('{"name": "get_weather", "arguments": {}}', p) == []
    with pytest.raises(InvalidRequest):
        prepare_chat(
            [{"role": "user", "content": "hi"}],
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )


def test_auto_mode_only_parses_calls_to_known_functions() -> None:
    p = prepare_chat([{"role": "user", "content": "hi"}], tools=[WEATHER])
    assert p.tool_mode == "auto" and p.constraint is None
    assert parse_tool_calls("Hello!", p) == []
    assert parse_tool_calls('{"name": "other", "arguments": {}}', p) == []
    assert (
        len(
            parse_tool_calls(
                '<tool_call>{"name": "get_weather", "arguments": {"city": "X"}}</tool_call>', p
            )
        )
        == 1
    )


def test_response_formats() -> None:
    p = prepare_chat([{"role": "user", "content": "x"}], response_format={"type": "json_object"})
    assert p.constraint is not None and json.loads(p.constraint.text) == {"type": "object"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    p = prepare_chat(
        [{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    )
    assert p.constraint is not None and json.loads(p.constraint.text) == schema
    with pytest.raises(InvalidRequest):
        prepare_chat([{"role": "user", "content": "x"}], response_format={"type": "yaml"})


def test_a_batch_of_tokens_is_cut_and_counted_at_the_token_that_completed_the_stop() -> None:
    m = StopMatcher(("END",))
    # tokens 4..8 arrive in one batch; "E" (6) starts the stop, "ND" (7) completes it.
    assert feed_stops(m, TextDelta.batch(["a", "b", "E", "ND", "zz"], 8)) == (7, "ab")
    assert m.matched
    plain = StopMatcher(("END",))
    assert feed_stops(plain, TextDelta.batch(["a", "b"], 2)) == (2, "ab")
    assert feed_stops(plain, TextDelta("c", 3)) == (3, "c")


def test_stop_matcher_holds_back_partial_matches() -> None:
    m = StopMatcher(("END",))
    assert m.feed("abc E") == "abc "
    assert m.feed("N") == ""
    assert m.feed("x") == "ENx"
    assert m.feed("yy EN") == "yy "
    assert m.feed("D and more") == ""
    assert m.matched
    m2 = StopMatcher(("\n\n",))
    assert m2.feed("line\n") == "line"
    assert m2.flush() == "\n"


def test_batch_row_sampling_follows_the_search_options() -> None:
    import numpy as np

    from engine.runtimes.onnx_batch import sample

    logits = np.array([1.0, 5.0, 4.9, -2.0], np.float32)
    rng = np.random.default_rng(0)
    base = {"greedy": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    assert sample(logits, {**base, "repetition_penalty": 1.0}, rng, set()) == 1
    # A repetition penalty on token 1 hands greedy decoding to token 2.
    assert sample(logits, {**base, "repetition_penalty": 2.0}, rng, {1}) == 2
    sampled = {**base, "greedy": False, "repetition_penalty": 1.0}
    assert {sample(logits, {**sampled, "top_k": 1}, rng, set()) for _ in range(20)} == {1}
    assert {sample(logits, {**sampled, "top_p": 0.3}, rng, set()) for _ in range(20)} == {1}
    wide = {sample(logits, {**sampled, "temperature": 5.0}, rng, set()) for _ in range(200)}
    assert wide == {0, 1, 2, 3}
    assert logits[1] == 5.0  # the caller's logits are left alone
