"""Anthropic Messages stream events checked as Claude Code needs them, for the translator's unit tests and the real
server's alike: each event against the anthropic SDK's own typed models (the beta and the plain stream event unions,
discriminated by `type`, no unknown fields at any depth), and a whole stream for the block lifecycle."""

from __future__ import annotations

from typing import Annotated, Any

from anthropic.types import RawMessageStreamEvent
from anthropic.types.beta import BetaRawMessageStreamEvent
from anthropic.types.beta_error_response import BetaErrorResponse
from pydantic import BaseModel, Field, TypeAdapter

BETA_EVENT = TypeAdapter(Annotated[BetaRawMessageStreamEvent, Field(discriminator="type")])
PLAIN_EVENT = TypeAdapter(Annotated[RawMessageStreamEvent, Field(discriminator="type")])


def no_extra(model: Any, path: str) -> None:
    """`model` (an SDK model, or a list of them) and everything in it has only fields the SDK knows."""
    if isinstance(model, BaseModel):
        assert not model.model_extra, f"{path} has fields the SDK does not know: {sorted(model.model_extra or {})}"
        for name in type(model).model_fields:
            no_extra(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, (list, tuple)):
        for i, value in enumerate(model):
            no_extra(value, f"{path}[{i}]")


def validate_event(event: dict) -> None:
    if event["type"] == "ping":
        assert event == {"type": "ping"}
    elif event["type"] == "error":
        no_extra(BetaErrorResponse.model_validate(event), "error")
    else:
        for adapter in (BETA_EVENT, PLAIN_EVENT):
            no_extra(adapter.validate_python(event), event["type"])


def check_lifecycle(events: list[dict]) -> None:
    """The order Claude Code relies on: start → deltas → stop for every block, one block open at a time, indexes
    counting up from 0, a thinking block signed before its stop, no block open when the message ends, and a
    message_delta the last event before message_stop."""
    assert events[0]["type"] == "message_start"
    open_index = None
    seen: list[int] = []
    kinds: dict[int, str] = {}
    signed: set[int] = set()
    for event in events[1:]:
        kind = event["type"]
        if kind == "content_block_start":
            assert open_index is None, "a block started while another was open"
            assert event["index"] == len(seen), "block indexes count up from 0"
            open_index = event["index"]
            seen.append(open_index)
            kinds[open_index] = event["content_block"]["type"]
        elif kind == "content_block_delta":
            assert event["index"] == open_index, "a delta for a block that is not open"
            if event["delta"]["type"] == "signature_delta":
                signed.add(open_index)
        elif kind == "content_block_stop":
            assert event["index"] == open_index
            if kinds[open_index] == "thinking":
                assert open_index in signed, "a thinking block stopped without its signature"
            open_index = None
        elif kind in ("message_delta", "message_stop"):
            assert open_index is None, "the message ended with a block still open"
    if events[-1]["type"] == "message_stop":  # a ping may come anywhere, even between the last two
        assert [e["type"] for e in events[:-1] if e["type"] != "ping"][-1] == "message_delta"
