"""Chat Completions chunks → Responses API stream events. A small state machine; no I/O.

Feed it the parsed upstream chunks in order; each call returns the events that chunk produced, ready to send.
The item lifecycle is what Codex and the openai SDK need:

    response.created, response.in_progress
    per item: output_item.added → (content_part.added) → deltas → *.done → (content_part.done) → output_item.done
    response.completed | response.incomplete | response.failed   (with id, output and usage)

Codex takes items ONLY from `response.output_item.done`, so every item gets one, and a delta is never sent for
an item that was not `added` first. Reasoning (`delta.reasoning_content`) opens a reasoning item whose full text
also rides, encoded, in `encrypted_content` so it can be replayed to the upstream on the next turn. It streams as
`reasoning_text` content, or, when the request asked for `reasoning.summary` (`summaries=True`), as a summary part
(`response.reasoning_summary_part.added`, `response.reasoning_summary_text.delta` / `.done`,
`response.reasoning_summary_part.done`): what the Vercel AI SDK and Codex's TUI show.

`replay_events(response)` rebuilds a stored Response object's stream (`GET /v1/responses/{id}?stream=true`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from ..core.chat import completion_as_chunks
from ..jsonfast import JSONDecodeError, loads
from .chat_deltas import OVERLOADED_MESSAGE, OVERLOADED_REASON, ChatDeltaReader
from .partial_json import StringFieldStream
from .reasoning import ReasoningCodec
from .tools import CUSTOM_INPUT_ARG, ToolMap

Event = dict[str, Any]
__all__ = ["ResponseStream", "completion_as_chunks", "new_id", "replay_events", "responses_usage"]

# finish_reason → (final event, incomplete reason or failure code)
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
_FAILED = {OVERLOADED_REASON: ("server_is_overloaded", OVERLOADED_MESSAGE)}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class _Item:
    """One output item being streamed."""

    __slots__ = ("call_id", "done", "id", "index", "input_stream", "kind", "name", "namespace", "streamed", "text")

    def __init__(self, item_id: str, index: int, kind: str):
        self.id = item_id
        self.index = index
        self.kind = kind  # reasoning | message | function_call | custom_tool_call
        self.text: list[str] = []  # reasoning text, message text, or call arguments
        self.call_id = ""
        self.name = ""
        self.namespace: str | None = None
        self.input_stream: StringFieldStream | None = None
        self.streamed = ""  # the custom tool input already sent as deltas
        self.done = False


class ResponseStream(ChatDeltaReader):
    def __init__(
        self,
        *,
        model: str,
        tool_map: ToolMap,
        codec: ReasoningCodec,
        response_fields: dict[str, Any] | None = None,
        response_id: str | None = None,
        created_at: int | None = None,
        make_id: Callable[[str], str] = new_id,
        summaries: bool = False,
    ):
        self.tool_map = tool_map
        self.codec = codec
        self.make_id = make_id
        self.response_id = response_id or make_id("resp")
        self.model = model
        # The request asked for reasoning summaries: reasoning streams as summary parts (what the Vercel AI SDK
        # and Codex's TUI show) instead of reasoning_text content. The item still carries the text as content and
        # in encrypted_content, so a replay is the same either way.
        self.summaries = summaries
        self._base = {
            "id": self.response_id,
            "object": "response",
            "created_at": created_at if created_at is not None else int(time.time()),
            "model": model,
            "completed_at": None,
            **(response_fields or {}),
        }
        self._seq = 0
        self._items: list[_Item] = []  # in output_index order
        self._reasoning: _Item | None = None
        self._message: _Item | None = None
        self._calls: dict[int, _Item] = {}  # upstream tool_call index → item
        self._last_call_index = -1  # the call the last tool_call fragment belonged to
        self._upstream_ids: dict[int, str | None] = {}  # upstream tool_call index → the id the upstream gave it
        self._output: list[tuple[int, dict]] = []  # (output_index, finished item)
        self._finish_reason: str | None = None
        self._usage: dict | None = None
        self.finished = False

    # ---- public API --------------------------------------------------------------------------------------
    def start(self) -> list[Event]:
        return [self._event("response.created", response=self._snapshot("in_progress")),
                self._event("response.in_progress", response=self._snapshot("in_progress"))]

    def feed(self, chunk: dict) -> list[Event]:
        out: list[Event] = []
        self._read(chunk, out)
        return out

    def keepalive(self) -> list[Event]:
        """Something Codex's idle timer counts (SSE comments do not reset it): a repeat of response.in_progress."""
        return [self._event("response.in_progress", response=self._snapshot("in_progress"))]

    def finish(self) -> list[Event]:
        """The upstream ended the reply: close what is open, then the terminal event (response.failed when the
        upstream ran out of capacity). Not ChatDeltaReader's: a Response always ends with its terminal event."""
        out: list[Event] = []
        self._close_all(out)
        reason = self._finish_reason
        if reason in _FAILED:
            code, message = _FAILED[reason]
            out.append(self._terminal("response.failed", "failed", error={"code": code, "message": message}))
        elif reason in _INCOMPLETE:
            out.append(self._terminal("response.incomplete", "incomplete",
                                      incomplete_details={"reason": _INCOMPLETE[reason]}))
        else:
            out.append(self._terminal("response.completed", "completed"))
        return out

    def fail(self, code: str, message: str) -> list[Event]:
        """The upstream broke mid-reply. Items already done stay done (Codex keeps them); open ones are dropped."""
        return [self._terminal("response.failed", "failed", error={"code": code, "message": message})]

    @property
    def response(self) -> dict:
        """The final Response object (after finish() or fail())."""
        return self._final

    def calls_with_reasoning(self) -> Iterable[tuple[str, str]]:
        """(call_id, reasoning text) for each tool call of this reply, for the reasoning fallback cache."""
        call_ids = [item.call_id for item in self._items if item.call_id]
        if not call_ids:
            return []
        reasoning = "".join(self._reasoning_text_of_reply())
        return [(call_id, reasoning) for call_id in call_ids]

    # ---- deltas ------------------------------------------------------------------------------------------
    def _reasoning_delta(self, text: str, out: list[Event]) -> None:
        item = self._reasoning
        if item is None:
            self._close_message(out)
            if self.summaries:
                item = self._reasoning = self._open("reasoning", "rs", out, {"summary": []})
                out.append(self._event("response.reasoning_summary_part.added", item_id=item.id,
                                       output_index=item.index, summary_index=0,
                                       part={"type": "summary_text", "text": ""}))
            else:
                item = self._reasoning = self._open("reasoning", "rs", out, {"summary": [], "content": []})
                out.append(self._event("response.content_part.added", item_id=item.id, output_index=item.index,
                                       content_index=0, part={"type": "reasoning_text", "text": ""}))
        item.text.append(text)
        if self.summaries:
            out.append(self._event("response.reasoning_summary_text.delta", item_id=item.id,
                                   output_index=item.index, summary_index=0, delta=text))
        else:
            out.append(self._event("response.reasoning_text.delta", item_id=item.id, output_index=item.index,
                                   content_index=0, delta=text))

    def _text_delta(self, text: str, out: list[Event]) -> None:
        item = self._message
        if item is None:
            self._close_reasoning(out)
            item = self._message = self._open("message", "msg", out,
                                              {"status": "in_progress", "role": "assistant", "content": []})
            out.append(self._event("response.content_part.added", item_id=item.id, output_index=item.index,
                                   content_index=0, part={"type": "output_text", "text": "", "annotations": []}))
        item.text.append(text)
        out.append(self._event("response.output_text.delta", item_id=item.id, output_index=item.index,
                               content_index=0, delta=text, logprobs=[]))

    def _tool_call_delta(self, call: dict, out: list[Event]) -> None:
        index = call.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            # Some OpenAI-compatible servers send no `index`: a fragment continues the last call unless it
            # carries a new `id`.
            fresh = self._last_call_index not in self._calls or (
                call.get("id") is not None and call["id"] != self._upstream_ids.get(self._last_call_index))
            index = max(self._calls, default=-1) + 1 if fresh else self._last_call_index
        self._last_call_index = index
        function = call.get("function") or {}
        item = self._calls.get(index)
        if item is None:
            self._close_reasoning(out)
            self._close_message(out)
            origin = self.tool_map.origin(function.get("name") or "")
            kind = "custom_tool_call" if origin.kind == "custom" else "function_call"
            # The SDK's ResponseCustomToolCall has no `status` (and Codex does not need one): function calls only.
            fields: dict[str, Any] = {"status": "in_progress"} if kind == "function_call" else {}
            self._upstream_ids[index] = call.get("id")
            # Each item needs its own call_id (the client answers by it): a missing or repeated one is made up.
            call_id = call.get("id")
            while not call_id or any(other.call_id == call_id for other in self._calls.values()):
                call_id = self.make_id("call")
            fields.update(call_id=call_id, name=origin.name)
            if origin.namespace:
                fields["namespace"] = origin.namespace
            fields["input" if kind == "custom_tool_call" else "arguments"] = ""
            item = self._calls[index] = self._open(kind, "ctc" if kind == "custom_tool_call" else "fc", out, fields)
            item.call_id, item.name, item.namespace = fields["call_id"], origin.name, origin.namespace
            if kind == "custom_tool_call":
                item.input_stream = StringFieldStream(CUSTOM_INPUT_ARG)
        fragment = function.get("arguments")
        if not fragment:
            return
        item.text.append(fragment)
        if item.input_stream is not None:
            decoded = item.input_stream.feed(fragment)
            if decoded:
                item.streamed += decoded
                out.append(self._event("response.custom_tool_call_input.delta", item_id=item.id,
                                       output_index=item.index, delta=decoded))
        else:
            out.append(self._event("response.function_call_arguments.delta", item_id=item.id,
                                   output_index=item.index, delta=fragment))

    # ---- item lifecycle ----------------------------------------------------------------------------------
    def _open(self, kind: str, prefix: str, out: list[Event], fields: dict) -> _Item:
        item = _Item(self.make_id(prefix), len(self._items), kind)
        self._items.append(item)
        out.append(self._event("response.output_item.added", output_index=item.index,
                               item={"id": item.id, "type": kind, **fields}))
        return item

    def _close_reasoning(self, out: list[Event]) -> None:
        item = self._reasoning
        if item is None or item.done:
            return
        text = "".join(item.text)
        part = {"type": "reasoning_text", "text": text}
        summary: list[dict] = []
        if self.summaries:
            summary = [{"type": "summary_text", "text": text}]
            out.append(self._event("response.reasoning_summary_text.done", item_id=item.id,
                                   output_index=item.index, summary_index=0, text=text))
            out.append(self._event("response.reasoning_summary_part.done", item_id=item.id,
                                   output_index=item.index, summary_index=0, part=summary[0]))
        else:
            out.append(self._event("response.reasoning_text.done", item_id=item.id, output_index=item.index,
                                   content_index=0, text=text))
            out.append(self._event("response.content_part.done", item_id=item.id, output_index=item.index,
                                   content_index=0, part=part))
        self._done(item, out, {"summary": summary, "content": [part], "encrypted_content": self.codec.encode(text)})
        self._reasoning = None  # a later reasoning burst (after a tool call) opens a new item

    def _close_message(self, out: list[Event]) -> None:
        item = self._message
        if item is None or item.done:
            return
        text = "".join(item.text)
        out.append(self._event("response.output_text.done", item_id=item.id, output_index=item.index,
                               content_index=0, text=text, logprobs=[]))
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        out.append(self._event("response.content_part.done", item_id=item.id, output_index=item.index,
                               content_index=0, part=part))
        self._done(item, out, {"status": "completed", "role": "assistant", "content": [part]})
        self._message = None

    def _close_call(self, item: _Item, out: list[Event]) -> None:
        arguments = "".join(item.text)
        fields: dict[str, Any] = {"status": "completed"} if item.kind == "function_call" else {}
        fields.update(call_id=item.call_id, name=item.name)
        if item.namespace:
            fields["namespace"] = item.namespace
        if item.kind == "custom_tool_call":
            fields["input"] = raw_input = _custom_input(arguments)
            if len(raw_input) > len(item.streamed) and raw_input.startswith(item.streamed):
                # arguments that could not be decoded as they came (raw text, another key): the deltas must
                # still add up to the input
                out.append(self._event("response.custom_tool_call_input.delta", item_id=item.id,
                                       output_index=item.index, delta=raw_input[len(item.streamed):]))
            out.append(self._event("response.custom_tool_call_input.done", item_id=item.id,
                                   output_index=item.index, input=raw_input))
        else:
            fields["arguments"] = arguments
            out.append(self._event("response.function_call_arguments.done", item_id=item.id,
                                   output_index=item.index, arguments=arguments))
        self._done(item, out, fields)

    def _close_all(self, out: list[Event]) -> None:
        self._close_reasoning(out)
        self._close_message(out)
        for index in sorted(self._calls):
            if not self._calls[index].done:
                self._close_call(self._calls[index], out)

    def _done(self, item: _Item, out: list[Event], fields: dict) -> None:
        item.done = True
        final = {"id": item.id, "type": item.kind, **fields}
        self._output.append((item.index, final))
        out.append(self._event("response.output_item.done", output_index=item.index, item=final))

    # ---- response objects --------------------------------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event

    def _snapshot(self, status: str, **extra: Any) -> dict:
        return {**self._base, "status": status, "output": [], "usage": None, "error": None,
                "incomplete_details": None, **extra}

    def _terminal(self, kind: str, status: str, **extra: Any) -> Event:
        self.finished = True
        extra.setdefault("error", None)
        extra.setdefault("incomplete_details", None)
        output = [item for _, item in sorted(self._output, key=lambda pair: pair[0])]
        self._final = {**self._base, "status": status, "output": output, "usage": responses_usage(self._usage), **extra}
        if status == "completed":
            self._final["completed_at"] = int(time.time())
        return self._event(kind, response=self._final)

    def _reasoning_text_of_reply(self) -> list[str]:
        return [t for item in self._items if item.kind == "reasoning" for t in item.text]


def replay_events(response: dict) -> list[Event]:
    """The stream of events a stored Response object came from (`GET /v1/responses/{id}?stream=true`): the same
    event types, item lifecycle and final object as the original stream, each item's text in one delta."""
    events: list[Event] = []

    def event(kind: str, **fields: Any) -> None:
        events.append({"type": kind, "sequence_number": len(events), **fields})

    def text_part(where: dict, part_events: str, text_events: str, slot: dict, empty: dict, part: dict,
                  **extra: Any) -> None:
        """One text part of an item: the part added (empty), its whole text as one delta, the text done, the part
        done. `slot` names the part's place (summary_index or content_index); `extra` goes with the text events."""
        text = part.get("text", "")
        event(f"response.{part_events}.added", **where, **slot, part=empty)
        event(f"response.{text_events}.delta", **where, **slot, delta=text, **extra)
        event(f"response.{text_events}.done", **where, **slot, text=text, **extra)
        event(f"response.{part_events}.done", **where, **slot, part=part)

    started = {**response, "status": "in_progress", "output": [], "usage": None, "error": None,
               "incomplete_details": None, "completed_at": None}
    event("response.created", response=started)
    event("response.in_progress", response=started)
    for index, item in enumerate(response.get("output") or []):
        where = {"item_id": item.get("id"), "output_index": index}
        kind = item.get("type")
        if kind == "reasoning":
            event("response.output_item.added", output_index=index,
                  item={"id": item.get("id"), "type": "reasoning", "summary": [],
                        **({} if item.get("summary") else {"content": []})})
            for summary_index, part in enumerate(item.get("summary") or []):
                text_part(where, "reasoning_summary_part", "reasoning_summary_text", {"summary_index": summary_index},
                          {"type": "summary_text", "text": ""}, part)
            if not item.get("summary"):
                for content_index, part in enumerate(item.get("content") or []):
                    text_part(where, "content_part", "reasoning_text", {"content_index": content_index},
                              {"type": "reasoning_text", "text": ""}, part)
        elif kind == "message":
            event("response.output_item.added", output_index=index,
                  item={**item, "status": "in_progress", "content": []})
            for content_index, part in enumerate(item.get("content") or []):
                text_part(where, "content_part", "output_text", {"content_index": content_index},
                          {"type": "output_text", "text": "", "annotations": []}, part, logprobs=[])
        elif kind == "function_call":
            event("response.output_item.added", output_index=index,
                  item={**item, "status": "in_progress", "arguments": ""})
            event("response.function_call_arguments.delta", **where, delta=item.get("arguments", ""))
            event("response.function_call_arguments.done", **where, arguments=item.get("arguments", ""))
        elif kind == "custom_tool_call":
            event("response.output_item.added", output_index=index, item={**item, "input": ""})
            event("response.custom_tool_call_input.delta", **where, delta=item.get("input", ""))
            event("response.custom_tool_call_input.done", **where, input=item.get("input", ""))
        else:
            event("response.output_item.added", output_index=index, item=item)
        event("response.output_item.done", output_index=index, item=item)
    status = response.get("status")
    terminal = {"completed": "response.completed", "incomplete": "response.incomplete",
                "failed": "response.failed"}.get(status or "", "response.completed")
    event(terminal, response=response)
    return events


def _custom_input(arguments: str) -> str:
    """The raw input of a freeform tool from the function arguments the upstream produced."""
    try:
        parsed = loads(arguments)
    except JSONDecodeError:
        return arguments  # the model wrote the raw text itself: pass it on as it is
    if isinstance(parsed, dict) and isinstance(parsed.get(CUSTOM_INPUT_ARG), str):
        return parsed[CUSTOM_INPUT_ARG]
    if isinstance(parsed, dict) and len(parsed) == 1 and isinstance(next(iter(parsed.values())), str):
        return next(iter(parsed.values()))  # the right shape under another name
    return arguments


def responses_usage(usage: dict | None) -> dict | None:
    """Chat usage → Responses usage (cached and reasoning tokens included)."""
    if not usage:
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    if cached is None:
        cached = usage.get("prompt_cache_hit_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        # cache_write_tokens is required by the SDK's model; DeepSeek bills no cache writes, so 0.
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": usage.get("total_tokens") or prompt + completion,
    }
