"""Chat Completions chunks → Anthropic Messages stream events. A small state machine; no I/O.

Feed it the parsed upstream chunks in order; each call returns the events that chunk produced, ready to send
(`encode_sse` frames them). The same method names as ResponseStream, so one relay drives both:

    message_start, ping
    per block: content_block_start → content_block_delta* → content_block_stop
        thinking: thinking_delta*, then signature_delta (our signature: the reasoning, authenticated) before stop
        text:     text_delta*
        tool_use: input_json_delta* (the upstream's argument fragments, as they come)
    message_delta (stop_reason, stop_sequence, usage), message_stop

One block is open at a time and every block gets its content_block_stop: without it Claude Code reports "tool call
could not be parsed". A failure mid-stream is an `error` event, as Anthropic sends it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from ..jsonfast import dumps
from .chat_deltas import ChatDeltaReader
from .messages_errors import error_event
from .messages_request import reasoning_key, tool_input_object
from .messages_tokens import estimate_text_tokens
from .reasoning import ReasoningCodec
from .tools import ToolMap

Event = dict[str, Any]

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                 "content_filter": "refusal"}
_SAFE_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def encode_sse(events: Iterable[Event]) -> bytes:
    """Anthropic SSE frames: `event: <type>` then `data: <json>` and a blank line."""
    return b"".join(b"event: " + event["type"].encode() + b"\ndata: " + dumps(event) + b"\n\n" for event in events)


class _Block:
    __slots__ = ("closed", "id", "index", "kind", "name", "parts")

    def __init__(self, index: int, kind: str, block_id: str = "", name: str = ""):
        self.index = index
        self.kind = kind  # thinking | text | tool_use
        self.parts: list[str] = []  # thinking text, text, or argument fragments
        self.id = block_id
        self.name = name
        self.closed = False


class MessagesStream(ChatDeltaReader):
    def __init__(
        self,
        *,
        model: str,
        tool_map: ToolMap,
        codec: ReasoningCodec,
        input_tokens: int = 0,
        thinking: bool = True,
        stop_sequences: Iterable[str] = (),
        message_id: str | None = None,
        make_id: Callable[[str], str] = new_id,
    ):
        """`model` is the name the client asked for; `input_tokens` the estimate that message_start reports (the
        upstream counts only at the end); `thinking` False (the client did not ask for thinking) drops reasoning an
        upstream sends anyway, as Anthropic would not show it."""
        self.model = model
        self.tool_map = tool_map
        self.codec = codec
        self.make_id = make_id
        self.message_id = message_id or make_id("msg")
        self.input_estimate = input_tokens
        self.stop_sequences = tuple(stop_sequences)
        self.thinking = thinking
        self._blocks: list[_Block] = []
        self._open: _Block | None = None
        self._calls: dict[int, _Block] = {}  # upstream tool_call index → block
        self._finish_reason: str | None = None
        self._matched_stop: str | None = None
        self._usage: dict | None = None
        self._final: dict | None = None
        self.finished = False

    # ---- public API --------------------------------------------------------------------------------------------
    def start(self) -> list[Event]:
        message = {**self._message_fields([], None, None), "usage": self._usage_fields(self.input_estimate, 0, 0)}
        return [{"type": "message_start", "message": message}, {"type": "ping"}]

    def feed(self, chunk: dict) -> list[Event]:
        out: list[Event] = []
        if not self.finished:
            self._read(chunk, out)
        return out

    def keepalive(self) -> list[Event]:
        """Something to send through an upstream silence (a queued DeepSeek request)."""
        return [] if self.finished else [{"type": "ping"}]

    def _finish(self) -> list[Event]:
        """The upstream ended the reply normally: close the open block, then message_delta and message_stop."""
        out: list[Event] = []
        self._close_open(out)
        stop_reason, stop_sequence = self._stop()
        usage = self._final_usage()
        self._final = {**self._message_fields(self._content(), stop_reason, stop_sequence), "usage": usage}
        self.finished = True
        out.append({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                    "usage": usage})
        out.append({"type": "message_stop"})
        return out

    def fail(self, kind: str, message: str) -> list[Event]:
        """The upstream broke mid-reply. `kind` is a neutral error kind (see messages_errors.KINDS)."""
        return self._end_with_error(error_event(kind, message))

    @property
    def message(self) -> dict | None:
        """The complete Messages response (after finish(); None after fail()): the non-streaming reply."""
        return self._final

    def reasoning_entries(self) -> list[tuple[str, str]]:
        """(reasoning cache key, reasoning) for a reply with tool calls: what repairs this turn if it comes back
        without its thinking blocks."""
        calls = [(b.id, b.name, tool_input_object("".join(b.parts))) for b in self._blocks if b.kind == "tool_use"]
        reasoning = "".join(t for b in self._blocks if b.kind == "thinking" for t in b.parts)
        if not calls or not reasoning:
            return []
        return [(reasoning_key(calls), reasoning)]

    # ---- the pieces of a chunk (chat_deltas.ChatDeltaReader) ---------------------------------------------------
    def _reasoning_delta(self, text: str, out: list[Event]) -> None:
        if self.thinking:
            self._append("thinking", text, out)

    def _text_delta(self, text: str, out: list[Event]) -> None:
        self._append("text", text, out)

    def _finished_choice(self, choice: dict) -> None:
        # vLLM (`stop_reason`) and SGLang (`matched_stop`) say which stop string ended the reply; DeepSeek and
        # OpenAI do not, and then the reply is reported as an end_turn.
        for key in ("stop_reason", "matched_stop"):
            if choice.get(key) in self.stop_sequences:
                self._matched_stop = choice[key]

    # ---- blocks ------------------------------------------------------------------------------------------------
    def _append(self, kind: str, text: str, out: list[Event]) -> None:
        block = self._open
        if block is None or block.kind != kind:
            self._close_open(out)
            block = self._start(kind, out, {"thinking": "", "signature": ""} if kind == "thinking" else {"text": ""})
        block.parts.append(text)
        if kind == "thinking":
            out.append(self._delta(block, {"type": "thinking_delta", "thinking": text}))
        else:
            out.append(self._delta(block, {"type": "text_delta", "text": text}))

    def _tool_call_delta(self, call: dict, out: list[Event]) -> None:
        index = call.get("index", len(self._calls))
        function = call.get("function") or {}
        block = self._calls.get(index)
        if block is None:
            self._close_open(out)
            name = self.tool_map.origin(function.get("name") or "").name
            upstream_id = call.get("id")
            # The upstream's id is kept when Anthropic's id rules allow it: the same id then goes back upstream
            # next turn, byte for byte.
            if isinstance(upstream_id, str) and upstream_id and set(upstream_id) <= _SAFE_ID:
                call_id = upstream_id
            else:
                call_id = self.make_id("toolu")
            block = self._calls[index] = self._start("tool_use", out, {"id": call_id, "name": name, "input": {}},
                                                     block_id=call_id, name=name)
        fragment = function.get("arguments")
        if not fragment:
            return
        block.parts.append(fragment)
        if not block.closed:
            # A fragment for a call already closed (an upstream that interleaves parallel calls, which DeepSeek does
            # not) is kept for the final message but cannot be streamed any more.
            out.append(self._delta(block, {"type": "input_json_delta", "partial_json": fragment}))

    def _start(self, kind: str, out: list[Event], fields: dict, *, block_id: str = "", name: str = "") -> _Block:
        block = _Block(len(self._blocks), kind, block_id, name)
        self._blocks.append(block)
        self._open = block
        out.append({"type": "content_block_start", "index": block.index, "content_block": {"type": kind, **fields}})
        return block

    @staticmethod
    def _delta(block: _Block, delta: dict) -> Event:
        return {"type": "content_block_delta", "index": block.index, "delta": delta}

    def _close_open(self, out: list[Event]) -> None:
        block = self._open
        if block is None:
            return
        if block.kind == "thinking":
            out.append(self._delta(block, {"type": "signature_delta", "signature": self._signature(block)}))
        block.closed = True
        out.append({"type": "content_block_stop", "index": block.index})
        self._open = None

    def _signature(self, block: _Block) -> str:
        return self.codec.encode("".join(block.parts))

    # ---- the final message -------------------------------------------------------------------------------------
    def _content(self) -> list[dict]:
        content: list[dict] = []
        for block in self._blocks:
            text = "".join(block.parts)
            if block.kind == "thinking":
                content.append({"type": "thinking", "thinking": text, "signature": self._signature(block)})
            elif block.kind == "text":
                content.append({"type": "text", "text": text})
            else:
                content.append({"type": "tool_use", "id": block.id, "name": block.name,
                                "input": tool_input_object(text)})
        return content

    def _stop(self) -> tuple[str, str | None]:
        if self._matched_stop is not None:
            return "stop_sequence", self._matched_stop
        has_calls = any(block.kind == "tool_use" for block in self._blocks)
        reason = _STOP_REASONS.get(self._finish_reason or "stop", "end_turn")
        if reason in ("end_turn", "tool_use"):
            # Some upstreams say "stop" after tool calls, or "tool_calls" after none: the blocks decide.
            reason = "tool_use" if has_calls else "end_turn"
        return reason, None

    def _message_fields(self, content: list, stop_reason: str | None, stop_sequence: str | None) -> dict:
        return {"id": self.message_id, "type": "message", "role": "assistant", "model": self.model,
                "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence}

    @staticmethod
    def _usage_fields(input_tokens: int, cached: int, output_tokens: int) -> dict:
        # Anthropic's input_tokens excludes cache reads (total input = input + cache_creation + cache_read);
        # DeepSeek bills no cache writes.
        return {"input_tokens": input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached,
                "output_tokens": output_tokens}

    def _final_usage(self) -> dict:
        usage = self._usage
        if not usage:
            # An upstream that reports no usage: our estimates, never a made-up constant.
            output = sum(estimate_text_tokens("".join(b.parts)) for b in self._blocks)
            return self._usage_fields(self.input_estimate, 0, output)
        prompt = usage.get("prompt_tokens") or 0
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if cached is None:
            cached = usage.get("prompt_cache_hit_tokens") or 0
        return self._usage_fields(max(prompt - cached, 0), cached, usage.get("completion_tokens") or 0)
