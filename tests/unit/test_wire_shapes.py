"""Wire shapes that hot paths build by hand must match the pydantic models they stand for."""

from __future__ import annotations

from protocol.jsonrpc.generation import StreamDelta


def test_partial_result_shape_matches_stream_delta() -> None:
    # server/jsonrpc/handlers/streaming.py sends {"text", "tokens"} without pydantic.
    by_hand = {"text": "Hé", "tokens": 3}
    assert StreamDelta(text="Hé", tokens=3).model_dump(mode="json", by_alias=True) == by_hand
    assert set(StreamDelta.model_fields) == {"text", "tokens"}
