"""Chat Completions chunks → Gemini `GenerateContentResponse` objects. A small state machine; no I/O.

Feed it the parsed upstream chunks in order; each call returns the response objects that chunk produced, ready to
send (`encode_sse` frames them: data-only SSE, no `event:` lines, as Gemini CLI reads it). The same method names as
MessagesStream / ResponseStream, so one relay drives all doors. Each object is one streamed chunk:

    {"candidates": [{"content": {"role": "model", "parts": [...]}, "index": 0}], "modelVersion", "responseId"}

- reasoning: `{"text": ..., "thought": true}` parts, only when the client set includeThoughts; the whole reasoning
  also rides, authenticated, in a `thoughtSignature` on the turn's first non-thought part (the first text part, or
  the first functionCall part), where Gemini CLI keeps it and sends it back (thought parts it drops);
- text: one part per upstream delta, the last one held back so the final chunk carries content with its
  finishReason (as Gemini does; the chunks Gemini CLI was seen to accept look so);
- function calls: `{"functionCall": {"name", "args", "id"}}`, each its own part, sent when its arguments are complete
  (the next call starts, or the reply ends): Gemini sends args whole. Arguments that are not a JSON object are not
  sent; the reply then ends with finishReason MALFORMED_FUNCTION_CALL, which Gemini CLI retries.
- the last chunk: finishReason (STOP, MAX_TOKENS, SAFETY, MALFORMED_FUNCTION_CALL) and usageMetadata.
A failure mid-stream is the bare `{"error": {...}}` object (gemini_errors.error_chunk), never a silently cut answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from ..jsonfast import dumps
from .chat_deltas import ChatDeltaReader
from .gemini_errors import error_chunk
from .gemini_request import encode_signature, turn_key
from .messages_tokens import estimate_text_tokens
from .reasoning import ReasoningCodec
from .tools import ToolMap

Response = dict[str, Any]

_FINISH_REASONS = {"stop": "STOP", "tool_calls": "STOP", "function_call": "STOP", "length": "MAX_TOKENS",
                   "content_filter": "SAFETY"}
MALFORMED_MESSAGE = "The model called {name} with arguments that are not a JSON object."


def new_response_id() -> str:
    return uuid.uuid4().hex[:22]


def new_call_id(name: str) -> str:
    return f"{name}_{uuid.uuid4().hex[:12]}"


def encode_sse(objects: Iterable[Response]) -> bytes:
    """`data: <json>` + a blank line per response object. An error object is written bare (no `data:`), on its own
    line: that is the only form both google-genai SDKs raise from mid-stream (the Python SDK's line buffer, the JS
    SDK's parse of a network read that is one whole JSON object — so the door must flush before and after it)."""
    out = []
    for obj in objects:
        if "error" in obj and "candidates" not in obj:
            out.append(dumps(obj) + b"\n")
        else:
            out.append(b"data: " + dumps(obj) + b"\n\n")
    return b"".join(out)


class _Call:
    __slots__ = ("args", "fragments", "id", "name", "sent")

    def __init__(self, call_id: str, name: str):
        self.id = call_id
        self.name = name  # the client's name
        self.fragments: list[str] = []
        self.args: dict | None = None  # parsed when complete; None if malformed
        self.sent = False


class GeminiStream(ChatDeltaReader):
    def __init__(
        self,
        *,
        model: str,
        tool_map: ToolMap,
        codec: ReasoningCodec,
        input_tokens: int | Callable[[], int] = 0,
        thinking: bool = True,
        include_thoughts: bool = False,
        response_id: str | None = None,
        make_call_id: Callable[[str], str] = new_call_id,
    ):
        """`model` is the name the client asked for (modelVersion); `input_tokens` the estimate reported when the
        upstream reports no usage, or the function that makes it (counting a long history takes tens of ms, so it
        is only worth doing when needed); `thinking` False drops reasoning an upstream sends anyway; `include_thoughts`
        streams the reasoning as thought parts."""
        self.model = model
        self.tool_map = tool_map
        self.codec = codec
        self.input_estimate = input_tokens
        self.thinking = thinking
        self.include_thoughts = include_thoughts and thinking
        self.response_id = response_id or new_response_id()
        self.make_call_id = make_call_id
        self._reasoning: list[str] = []
        self._text: list[str] = []
        self._held: str | None = None  # the newest text delta, not sent yet
        self._calls: dict[int, _Call] = {}  # upstream tool_call index → call, in arrival order
        self._signed = False  # the thoughtSignature went out on a part
        self._malformed: list[str] = []
        self._finish_reason: str | None = None
        self._usage: dict | None = None
        self._final: Response | None = None
        self.finished = False

    # ---- public API --------------------------------------------------------------------------------------------
    def start(self) -> list[Response]:
        """Gemini sends nothing before the first content."""
        return []

    def feed(self, chunk: dict) -> list[Response]:
        if self.finished:
            return []
        parts: list[dict] = []
        self._read(chunk, parts)
        return [self._chunk(parts)] if parts else []

    def keepalive(self) -> list[Response]:
        """Something to send through an upstream silence (a queued DeepSeek request): a response object with no
        candidates. google-genai (Python and JS) parse it as an empty GenerateContentResponse and Gemini CLI skips it
        (no candidates: not a valid response, no finishReason); an SSE comment instead would stall the JS SDK, whose
        parser only ever consumes `data:` lines from the front of its buffer."""
        return [] if self.finished else [{"modelVersion": self.model, "responseId": self.response_id}]

    def _finish(self) -> list[Response]:
        """The upstream ended the reply normally: the last content, finishReason and usageMetadata."""
        parts: list[dict] = []
        if self._held is not None:
            parts.append(self._text_part(self._held))
            self._held = None
        for call in self._calls.values():
            if not call.sent:
                self._complete(call, parts)
        if not self._signed and self._reasoning:
            # A reply that is all reasoning (cut by max tokens): the signature still goes out, on an empty text part.
            parts.append(self._text_part(""))
        self.finished = True
        last = self._chunk(parts)
        candidate = last["candidates"][0]
        if not parts:
            del candidate["content"]
        candidate["finishReason"] = self._gemini_finish_reason()
        if self._malformed:
            candidate["finishMessage"] = " ".join(self._malformed)
        last["usageMetadata"] = self._usage_metadata()
        self._final = self._complete_response(candidate["finishReason"], last["usageMetadata"])
        return [last]

    def fail(self, kind: str, message: str) -> list[Response]:
        """The upstream broke mid-reply. `kind` is a neutral error kind (see gemini_errors.KINDS)."""
        return self._end_with_error(error_chunk(kind, message))

    @property
    def response(self) -> Response | None:
        """The complete GenerateContentResponse (after finish(); None after fail()): the non-streaming reply."""
        return self._final

    def reasoning_entries(self) -> list[tuple[str, str]]:
        """(reasoning cache key, reasoning) for a reply with function calls, or with text and no calls: what restores
        this turn when it comes back without our signature (Gemini CLI's skip_thought_signature_validator, a resumed
        session)."""
        calls = [(c.id, c.name, c.args) for c in self._calls.values() if c.args is not None]
        reasoning = "".join(self._reasoning)
        text = "".join(self._text)
        if not reasoning or not (calls or text):
            return []
        return [(turn_key(calls, text), reasoning)]

    # ---- the pieces of a chunk (chat_deltas.ChatDeltaReader) ---------------------------------------------------
    def _reasoning_delta(self, text: str, parts: list[dict]) -> None:
        if not self.thinking:
            return
        self._reasoning.append(text)
        if self.include_thoughts:
            parts.append({"text": text, "thought": True})

    def _text_delta(self, text: str, parts: list[dict]) -> None:
        if self._held is not None:
            parts.append(self._text_part(self._held))
        self._held = text
        self._text.append(text)

    # ---- parts -------------------------------------------------------------------------------------------------
    def _signature(self) -> str | None:
        if self._signed or not self._reasoning:
            return None
        self._signed = True
        return encode_signature(self.codec, "".join(self._reasoning))

    def _text_part(self, text: str) -> dict:
        part: dict[str, Any] = {"text": text}
        signature = self._signature()
        if signature:
            part["thoughtSignature"] = signature
        return part

    def _tool_call_delta(self, call: dict, parts: list[dict]) -> None:
        index = call.get("index", len(self._calls))
        function = call.get("function") or {}
        current = self._calls.get(index)
        if current is None:
            if self._held is not None:  # text before the calls goes out first, in order
                parts.append(self._text_part(self._held))
                self._held = None
            for earlier in self._calls.values():
                if not earlier.sent:
                    self._complete(earlier, parts)  # DeepSeek streams calls one after the other
            name = self.tool_map.origin(function.get("name") or "").name
            upstream_id = call.get("id")
            call_id = upstream_id if isinstance(upstream_id, str) and upstream_id else self.make_call_id(name)
            current = self._calls[index] = _Call(call_id, name)
        if function.get("arguments"):
            current.fragments.append(function["arguments"])

    def _complete(self, call: _Call, parts: list[dict]) -> None:
        call.sent = True
        text = "".join(call.fragments)
        try:
            parsed = orjson.loads(text) if text.strip() else {}
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            self._malformed.append(MALFORMED_MESSAGE.format(name=call.name))
            return
        call.args = parsed
        part: dict[str, Any] = {"functionCall": {"name": call.name, "args": parsed, "id": call.id}}
        signature = self._signature()
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)

    def _chunk(self, parts: list[dict]) -> Response:
        return {"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
                "modelVersion": self.model, "responseId": self.response_id}

    # ---- the end -----------------------------------------------------------------------------------------------
    def _gemini_finish_reason(self) -> str:
        if self._malformed:
            return "MALFORMED_FUNCTION_CALL"
        return _FINISH_REASONS.get(self._finish_reason or "stop", "OTHER")

    def _complete_response(self, finish_reason: str, usage: dict) -> Response:
        parts: list[dict] = []
        reasoning = "".join(self._reasoning)
        if self.include_thoughts and reasoning:
            parts.append({"text": reasoning, "thought": True})
        signature = encode_signature(self.codec, reasoning) if reasoning else None
        text = "".join(self._text)
        if text or (signature and not any(c.args is not None for c in self._calls.values())):
            parts.append({"text": text})
        for call in self._calls.values():
            if call.args is not None:
                parts.append({"functionCall": {"name": call.name, "args": call.args, "id": call.id}})
        if signature:
            first = next(p for p in parts if not p.get("thought"))
            first["thoughtSignature"] = signature
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "finishReason": finish_reason,
                                     "index": 0}
        if self._malformed:
            candidate["finishMessage"] = " ".join(self._malformed)
        return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": self.model,
                "responseId": self.response_id}

    def _usage_metadata(self) -> dict:
        usage = self._usage
        if not usage:
            # An upstream that reports no usage: our estimates, never a made-up constant.
            thoughts = estimate_text_tokens("".join(self._reasoning))
            output = estimate_text_tokens("".join(self._text)) + sum(
                estimate_text_tokens("".join(c.fragments)) for c in self._calls.values())
            estimate = self.input_estimate
            prompt, cached = (estimate() if callable(estimate) else estimate), 0
        else:
            prompt = usage.get("prompt_tokens") or 0
            details_cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
            cached = details_cached if details_cached is not None else usage.get("prompt_cache_hit_tokens") or 0
            completion = usage.get("completion_tokens") or 0
            thoughts = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
            thoughts = min(thoughts, completion)
            output = completion - thoughts
        # Gemini's promptTokenCount includes the cached tokens (cachedContentTokenCount is a part of it), as
        # DeepSeek's prompt_tokens does; candidatesTokenCount excludes the thoughts.
        metadata: dict[str, Any] = {"promptTokenCount": prompt, "candidatesTokenCount": output,
                                    "totalTokenCount": prompt + output + thoughts}
        if cached:
            metadata["cachedContentTokenCount"] = cached
        if thoughts:
            metadata["thoughtsTokenCount"] = thoughts
        return metadata
