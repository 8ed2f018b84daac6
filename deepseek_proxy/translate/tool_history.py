"""Tool calls in a history sent back upstream: every call answered right after it, in the calls' order. Pure.

DeepSeek 400s on an assistant tool call whose answers do not follow it at once, and on a `tool` message whose call
is not right before it. Clients break both rules (a result lost to an interrupt, results listed in the order they
finished, a result resent on resume), so every door repairs its history with the pieces here:

- `tool_answers`: one tool message per call, in the calls' order, a placeholder for a call without an answer, the
  images a tool returned following the answers as a user message (a tool message carries text only);
- `stray_output_text`: what an output whose call is not right before it becomes (user text, never a bare `tool`
  message);
- `answer_every_tool_call`: the two above applied to a Chat history (the Chat and Responses doors' client
  histories are Chat-shaped already; the upstream layer runs it for every door, upstream/prepare.py). The Messages
  and Gemini translators pair their client's own shapes (tool_result blocks of the next user turn; functionResponse
  parts matched by id or by name, repeats on resume dropped) and build their answers with `tool_answers`;
- `assistant_message`, `tool_call_entries`, `arguments_json`: an assistant turn with its calls, written the same
  way by every translator (the same history must give the same bytes: DeepSeek's prefix cache);
- `needs_repair`: which thinking-mode assistant turns that came back without reasoning get some;
- `HistoryBuilder`: the walk the Messages and Gemini translators share: each turn in order, an assistant turn's
  calls answered right after it from the turns that follow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..config import ModelConfig
from ..core.chat import TOOL_IMAGES, ChatMessage
from ..jsonfast import dumps_str
from .reasoning import ReasoningCache, ReasoningCodec
from .tools import flat_tool_name

NO_TOOL_OUTPUT = "[no output was recorded for this tool call]"


def stray_output_text(call_id: Any, output: Any) -> str:
    """A tool output whose call is not in the assistant turn right before it, as user text."""
    return f"Output of tool call {call_id}:\n{output}"


def tool_answers(call_ids: Iterable[str], answers: Mapping[str, Any]) -> list[Any]:
    """The messages that answer an assistant turn's calls: per call, in the calls' order, its `tool` message from
    `answers` (by call id) or one saying no output was recorded. A tool message's TOOL_IMAGES (image parts) move
    into one user message after all the answers, each call's images behind a line naming the call."""
    out: list[Any] = []
    images: list[dict] = []
    for call_id in call_ids:
        answer = answers.get(call_id) or {"role": "tool", "tool_call_id": call_id, "content": NO_TOOL_OUTPUT}
        if TOOL_IMAGES in answer:
            answer = dict(answer)
            images += [{"type": "text", "text": f"Image output of tool call {call_id}:"}, *answer.pop(TOOL_IMAGES)]
        out.append(answer)
    if images:  # tool messages cannot carry images: they follow the answers as a user message
        out.append({"role": "user", "content": images})
    return out


def answer_every_tool_call(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Each assistant tool-call message is followed by exactly its answers; missing ones are filled in,
    outputs whose call is unknown become user text (a `tool` message without its call is a 400)."""
    out: list[ChatMessage] = []
    i = 0
    while i < len(messages):
        message = messages[i]
        i += 1
        if message["role"] == "tool":
            out.append(_stray_output(message))
            continue
        calls = message.get("tool_calls")
        if not calls:
            out.append(message)
            continue
        named = [call["id"] for call in calls]
        ids = distinct_call_ids(named)
        if ids is not None:  # a turn that names one call id twice: the upstream would take a second answer for a stray
            calls = [{**call, "id": new_id} for call, new_id in zip(calls, ids, strict=True)]
            message = {**message, "tool_calls": calls}
        out.append(message)
        # The n-th answer to an id answers the n-th call that had that id (one call each, unless the turn repeated it).
        unanswered: dict[str, list[str]] = {}
        for name, call in zip(named, calls, strict=True):
            unanswered.setdefault(name, []).append(call["id"])
        answers: dict[str, dict] = {}
        strays: list[dict] = []
        while i < len(messages) and messages[i]["role"] == "tool":
            answer: dict = messages[i]  # type: ignore[assignment]
            i += 1
            waiting = unanswered.get(answer["tool_call_id"])
            if waiting:
                call_id = waiting.pop(0)
                answers[call_id] = answer if call_id == answer["tool_call_id"] else {**answer, "tool_call_id": call_id}
            else:
                strays.append(answer)
        out += tool_answers((call["id"] for call in calls), answers)
        for stray in strays:
            out.append(_stray_output(stray))
    return out


def distinct_call_ids(ids: list[str]) -> list[str] | None:
    """None when no id repeats (the common case); else the ids with each repeat renamed `ID~2`, `ID~3`, … (skipping
    names the turn already uses), so every call can get its own answer and the same history stays the same bytes."""
    if len(set(ids)) == len(ids):
        return None
    taken, seen = set(ids), set()
    out = []
    for call_id in ids:
        if call_id in seen:
            n = 2
            while f"{call_id}~{n}" in taken:
                n += 1
            call_id = f"{call_id}~{n}"
            taken.add(call_id)
        seen.add(call_id)
        out.append(call_id)
    return out


def _stray_output(message: Any) -> ChatMessage:
    """A tool output whose call is not in the preceding assistant message, as user text (plus its images)."""
    text = stray_output_text(message["tool_call_id"], message["content"])
    if TOOL_IMAGES not in message:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "text", "text": text}, *message[TOOL_IMAGES]]}


def arguments_json(value: Any) -> str:
    """A tool call's input as the client sent it → the Chat arguments string: a string as it is, else compact JSON
    in the client's key order (deterministic)."""
    if isinstance(value, str):
        return value
    return dumps_str(value if value is not None else {})


def tool_call_entries(calls: Iterable[tuple[str, str, Any]]) -> list[dict]:
    """(call id, the client's tool name, input) → an assistant message's `tool_calls`, upstream names flattened."""
    return [{"id": call_id, "type": "function", "function": {"name": flat_tool_name(name),
                                                             "arguments": arguments_json(value)}}
            for call_id, name, value in calls]


def assistant_message(content: str, reasoning: str | None, calls: Iterable[tuple[str, str, Any]]) -> dict[str, Any]:
    """An assistant turn as a Chat message: content, then reasoning_content (None: no such key), then its tool calls
    (see tool_call_entries; none: no such key)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    entries = tool_call_entries(calls)
    if entries:
        message["tool_calls"] = entries
    return message


def needs_repair(repair: str, has_calls: bool) -> bool:
    """Whether a thinking-mode assistant turn that came back without reasoning gets some (cached or a placeholder):
    `repair` "off" never, "fallback" on tool-call turns (the ones DeepSeek checks), "always" on every turn."""
    return repair != "off" and (has_calls or repair == "always")


def user_message(parts: list[dict]) -> dict[str, Any]:
    """A user turn's Chat content parts as one message: plain text when every part is text (the lines joined), else
    the parts."""
    if all(part["type"] == "text" for part in parts):
        return {"role": "user", "content": "\n".join(part["text"] for part in parts)}
    return {"role": "user", "content": parts}


class HistoryBuilder:
    """Builds the Chat messages of a client's history, walking its turns in order (`walk`). A subclass reads its
    client's turns: `_turn` emits one turn's messages and returns an assistant turn's calls; `_answer` emits their
    answers (tool_answers) from the turns right after it and says where the walk goes on."""

    def __init__(self, model: ModelConfig, codec: ReasoningCodec, cache: ReasoningCache | None, thinking: bool,
                 repair: str):
        self.model = model
        self.codec = codec
        self.cache = cache
        self.thinking = thinking  # assistant turns carry reasoning_content
        self.repair = repair  # see needs_repair
        self.messages: list[dict] = []
        self.repaired: list[int] = []  # the turns given cached or placeholder reasoning

    def walk(self, turns: list) -> None:
        i = 0
        while i < len(turns):
            calls = self._turn(turns[i])
            i += 1
            if calls:
                i = self._answer(calls, turns, i)

    def _turn(self, turn: Any) -> list:
        raise NotImplementedError

    def _answer(self, calls: list, turns: list, i: int) -> int:
        raise NotImplementedError
