"""Anthropic Messages request → Chat Completions request. Pure: no I/O, no clock, no randomness.

The output has the same shape as the Responses door's ChatRequest.body, so both doors share one relay. The same
Messages history always yields the same Chat messages, byte for byte: turn N's upstream prompt is a prefix of turn
N+1's and DeepSeek's prefix cache keeps hitting. What that takes, beyond deterministic serialization:
- Claude Code's `x-anthropic-billing-header:` system block (always the first) is dropped: its suffix changes from
  session to session (and, in some releases, on every request), and it sits in front of everything else.
- `role: "system"` entries inside `messages` stay where they are; moving them to the front rewrites the prefix.
- `cache_control` markers, which Claude Code moves to the newest block on every turn, are ignored.
- tool results are emitted in the order of the assistant's tool calls, not in the (timing-dependent) order in which
  Claude Code lists them.

Reasoning comes back to the upstream as `reasoning_content` (DeepSeek rejects a thinking-mode tool-call turn
without it): from a thinking block whose signature we issued (it carries the reasoning, authenticated), else from
the block's visible text, else — for a turn that has no thinking at all (a model switch, a resumed session, a
sub-agent) — from the reasoning cache (keyed by a fingerprint of the turn's tool calls) or a placeholder.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..config import ModelConfig
from ..core.chat import TOOL_IMAGES
from ..jsonfast import dumps_str
from ..upstream.profiles import ThinkingChoice
from .errors import RequestError, each_object
from .reasoning import ReasoningCache, ReasoningCodec
from .responses_request import (
    IMAGE_FOLLOWS,
    IMAGE_PLACEHOLDER,
    JSON_SCHEMA_INSTRUCTION,
)
from .tool_history import HistoryBuilder, assistant_message, needs_repair, stray_output_text, tool_answers, user_message
from .tools import ToolMap, ToolOrigin, flat_tool_name, offer_tools

BILLING_HEADER_PREFIX = "x-anthropic-billing-header:"
# The top-level fields of the Messages create call (anthropic SDK 2.15, beta params included). Fields outside this
# set are ignored, not refused: Claude Code adds new ones often and Anthropic accepts them behind beta headers. They
# are reported (MessagesChatRequest.unknown_fields) so the door can log them.
KNOWN_FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature", "top_k",
    "top_p", "tools", "tool_choice", "thinking", "service_tier", "container", "context_management", "mcp_servers",
    "output_config", "output_format", "inference_geo", "speed", "betas", "cache_control", "compaction",
    "diagnostics", "fallbacks", "fallback_credit_token", "billing_policy", "thread", "user_profile_id",
    "workspace_id",
})
REPAIR_MODES = ("off", "fallback", "always")
# Stands in for reasoning we never saw, on a thinking-mode assistant turn that must carry some. Not empty: an empty
# reasoning is what the upstream's own check looks for in some versions.
REASONING_PLACEHOLDER = "(The reasoning for this step is not available.)"
PDF_PLACEHOLDER = "[PDF document omitted: this model does not read PDF files{title}]"
DOCUMENT_PLACEHOLDER = "[document omitted: this model cannot read it{title}]"
TOOL_ERROR_PREFIX = "[tool error] "
UNPARSED_ARGUMENTS = "_unparsed_arguments"  # where a tool call's arguments go when they are not a JSON object
_REASONING_KEY_PREFIX = "msgfp1:"
_IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_SERVER_TOOL_BLOCKS = ("server_tool_use", "mcp_tool_use")
_SERVER_RESULT_BLOCK = re.compile(r"^[a-z_]+_tool_result$")


@dataclass
class MessagesChatRequest:
    body: dict[str, Any]  # what goes to the upstream (the same shape as ChatRequest.body)
    tool_map: ToolMap  # to restore tool names coming back; tool_map.dropped lists the server tools dropped
    thinking: bool  # assistant turns carry reasoning_content
    stream: bool  # the client asked for SSE
    stop_sequences: tuple[str, ...] = ()  # to report which one stopped the reply, when the upstream says
    repaired_turns: list[int] = field(default_factory=list)  # indexes in `messages` given cached/placeholder reasoning
    unknown_fields: list[str] = field(default_factory=list)  # top-level fields outside KNOWN_FIELDS, ignored

    @property
    def dropped_tools(self) -> list[str]:
        return self.tool_map.dropped


# --------------------------------------------------------------------------------------------------------------------
# What both directions share: how a turn's tool calls are recognised when they come back
# --------------------------------------------------------------------------------------------------------------------


def canonical_input(value: Any) -> str:
    """A tool call's input as one canonical string (sorted keys, compact), whatever spacing produced it."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def reasoning_key(calls: Iterable[tuple[str, str, Any]]) -> str:
    """The reasoning cache key of an assistant turn: a digest of its tool calls (id, name, input), in order.

    The stream computes it from what it sent; the request translator from what the client sent back. Ids alone
    would do for ours, but names and inputs make a stranger's reused id miss instead of fetching the wrong reasoning.
    """
    digest = hashlib.sha256()
    for call_id, name, value in calls:
        for part in (call_id, name, canonical_input(value)):
            digest.update(part.encode("utf-8"))
            digest.update(b"\x00")
        digest.update(b"\x01")
    return _REASONING_KEY_PREFIX + digest.hexdigest()[:40]


def tool_input_object(arguments: str) -> dict:
    """The `input` object of a tool_use block from the arguments string the upstream produced."""
    if not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    # Not an object: hand it over as it is, so the client's schema check tells the model what went wrong.
    return {UNPARSED_ARGUMENTS: arguments}


# --------------------------------------------------------------------------------------------------------------------
# The translation
# --------------------------------------------------------------------------------------------------------------------


def translate_messages_request(
    body: Any,
    model: ModelConfig,
    profile,
    codec: ReasoningCodec,
    cache: ReasoningCache | None = None,
    *,
    repair: str = "fallback",
    upstream_stream: bool | None = None,
) -> MessagesChatRequest:
    """Translate one Messages body for `model` on an upstream described by `profile`.

    `repair` decides what a thinking-mode assistant turn without reasoning carries: "off" nothing (the upstream may
    refuse the request), "fallback" (default) the cached reasoning or a placeholder on tool-call turns (the ones
    DeepSeek checks), "always" the same on every assistant turn. `upstream_stream` forces the upstream call's mode;
    by default it follows the model's config.
    """
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if repair not in REPAIR_MODES:
        raise ValueError(f"repair must be one of {REPAIR_MODES}, not {repair!r}")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise RequestError("max_tokens: a positive integer is required", param="max_tokens")

    thinking = messages_thinking(body, model, profile)
    tools, tool_map = translate_anthropic_tools(body.get("tools"), profile)
    if body.get("mcp_servers"):
        tool_map.dropped.append("mcp_servers")  # Anthropic's MCP connector runs at Anthropic, not here
    choice, parallel = translate_anthropic_tool_choice(body.get("tool_choice"), tool_map)
    if thinking.enabled and choice is not None and choice not in ("auto", "none"):
        # Anthropic refuses this combination too, so clients already know the message.
        raise RequestError("Thinking may not be enabled when tool_choice forces tool use.", param="tool_choice")

    builder = _MessageBuilder(model, codec, cache, thinking.enabled, repair)
    messages = builder.build(body.get("system"), body.get("messages"))
    chat: dict[str, Any] = {"model": model.upstream_model or model.id, "messages": messages}
    _apply_output_format(chat, body)
    offer_tools(chat, tools, choice, parallel if profile.accepts_parallel_tool_calls else None)
    chat.update(thinking.fields)
    chat["max_tokens"] = min(max_tokens, model.max_output_tokens)

    stop_sequences = _stop_sequences(body.get("stop_sequences"))
    if stop_sequences:
        chat["stop"] = list(stop_sequences)
    for key in ("temperature", "top_p", "top_k"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise RequestError(f"{key}: a number is required", param=key)
        if key != "top_k" or profile.accepts_top_k:
            chat[key] = value

    stream = bool(body.get("stream", False))
    chat["stream"] = model.stream if upstream_stream is None else upstream_stream
    if chat["stream"]:
        chat["stream_options"] = {"include_usage": True}
    return MessagesChatRequest(body=chat, tool_map=tool_map, thinking=thinking.enabled, stream=stream,
                               stop_sequences=stop_sequences, repaired_turns=builder.repaired,
                               unknown_fields=[key for key in body if key not in KNOWN_FIELDS])


def messages_thinking(body: dict, model: ModelConfig, profile) -> ThinkingChoice:
    """`thinking` + `output_config.effort` → the upstream's thinking fields.

    adaptive / enabled → thinking on, with the effort mapped through the model's effort_map (budget_tokens has no
    DeepSeek counterpart); disabled or absent (Anthropic's default is no extended thinking) → off, and then no
    reasoning_effort either (DeepSeek refuses "disabled" together with an effort).
    """
    thinking = body.get("thinking")
    if thinking is not None and not isinstance(thinking, dict):
        raise RequestError("thinking: an object is required", param="thinking")
    kind = (thinking or {}).get("type")
    if kind not in (None, "enabled", "adaptive", "disabled"):
        raise RequestError(f"thinking.type: unknown value {kind!r}", param="thinking.type")
    effort = _effort(body)
    if kind in ("enabled", "adaptive"):
        return profile.thinking(model, effort)
    return profile.thinking_off(model)


def thinking_off(profile, model: ModelConfig) -> ThinkingChoice:
    """The fields that switch thinking off: the profile's (kept as a function for the Gemini door's imports)."""
    return profile.thinking_off(model)


def _effort(body: dict) -> str | None:
    output_config = body.get("output_config")
    if output_config is None:
        return None
    if not isinstance(output_config, dict):
        raise RequestError("output_config: an object is required", param="output_config")
    effort = output_config.get("effort")
    if effort is not None and not isinstance(effort, str):
        raise RequestError("output_config.effort: a string is required", param="output_config.effort")
    return effort


def _stop_sequences(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise RequestError("stop_sequences: an array of strings is required", param="stop_sequences")
    return tuple(s for s in value if s)


def _apply_output_format(chat: dict, body: dict) -> None:
    """Structured output (`output_config.format`, or the older `output_format`) → json_object plus the schema stated
    in a system message at the end (the leading messages stay those of the turns without a format)."""
    fmt = (body.get("output_config") or {}).get("format") or body.get("output_format")
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise RequestError("output_config.format: only {\"type\": \"json_schema\", ...} is supported",
                           param="output_config.format")
    instruction = JSON_SCHEMA_INSTRUCTION.format(name="", schema=dumps_str(fmt.get("schema") or {}))
    chat["messages"].append({"role": "system", "content": instruction})
    chat["response_format"] = {"type": "json_object"}


# --------------------------------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------------------------------


def translate_anthropic_tools(tools: Any, profile) -> tuple[list[dict], ToolMap]:
    """Client tools → function tools, in the client's order. Server tools (web_search_*, code_execution_*, an MCP
    toolset, ...: any `type` but "custom") run at Anthropic, not here: they are dropped and listed in
    tool_map.dropped."""
    tool_map = ToolMap()
    if tools is None:
        return [], tool_map
    if not isinstance(tools, list):
        raise RequestError("tools: an array is required", param="tools")
    out: list[dict] = []
    for _, where, tool in each_object(tools, "tools.{}"):
        kind = tool.get("type")
        if kind not in (None, "custom"):
            tool_map.dropped.append(str(kind))
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise RequestError(f"{where}.name: a non-empty string is required", param=f"{where}.name")
        schema = tool.get("input_schema")
        if schema is not None and not isinstance(schema, dict):
            raise RequestError(f"{where}.input_schema: an object is required", param=f"{where}.input_schema")
        upstream_name = flat_tool_name(name)
        out.append(profile.function_tool(upstream_name, tool.get("description"), schema, tool.get("strict")))
        tool_map.by_upstream_name[upstream_name] = ToolOrigin("function", name)
    return out, tool_map


def translate_anthropic_tool_choice(choice: Any, tool_map: ToolMap) -> tuple[Any, bool | None]:
    """(Chat tool_choice or None for "send none", parallel_tool_calls or None)."""
    if choice is None:
        return None, None
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise RequestError("tool_choice: an object with a `type` is required", param="tool_choice")
    parallel = False if choice.get("disable_parallel_tool_use") is True else None
    kind = choice["type"]
    if kind == "auto":
        return None, parallel  # the default: sending nothing keeps the body the same as without it
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str):
            raise RequestError("tool_choice.name: a string is required", param="tool_choice.name")
        upstream_name = flat_tool_name(name)
        if upstream_name in tool_map.by_upstream_name:
            return {"type": "function", "function": {"name": upstream_name}}, parallel
        if tool_map.dropped:
            return None, parallel  # most likely a server tool that was dropped: let the model choose
        raise RequestError(f"tool_choice.name: no tool named {name!r} in `tools`", param="tool_choice.name")
    raise RequestError(f"tool_choice.type: unknown value {kind!r}", param="tool_choice.type")


# --------------------------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Turn:
    role: str
    blocks: list[dict]
    where: str


@dataclass
class _Call:
    id: str
    name: str  # the client's name
    input: Any


class _MessageBuilder(HistoryBuilder):
    """Walks the Messages turns in order and builds Chat messages.

    Consecutive user (or assistant) turns are one turn, as Anthropic treats them. An assistant turn's tool calls are
    answered right after it, in the calls' order, by the tool_result blocks of the next user turn (system entries in
    between follow the answers): DeepSeek 400s on a tool call without its answer right after it, so a call without a
    result gets a placeholder answer, and a result without its call becomes user text.
    """

    def build(self, system: Any, messages: Any) -> list[dict]:
        system_text = self._system_text(system, "system", drop_billing_header=True)
        if system_text:
            self.messages.append({"role": "system", "content": system_text})
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages: a non-empty array is required", param="messages")
        self.walk(self._turns(messages))
        return self.messages

    def _turn(self, turn: _Turn) -> list[_Call]:
        if turn.role == "system":
            self.messages.append({"role": "system", "content": self._system_text(turn.blocks, turn.where)})
        elif turn.role == "user":
            self._user(turn.blocks, turn.where)
        else:
            return self._assistant(turn)
        return []

    # ---- turns -------------------------------------------------------------------------------------------------
    def _turns(self, messages: list) -> list[_Turn]:
        turns: list[_Turn] = []
        for _, where, message in each_object(messages, "messages.{}"):
            role = message.get("role")
            if role not in ("user", "assistant", "system"):
                raise RequestError(f"{where}.role: must be user, assistant or system", param=f"{where}.role")
            blocks = _blocks(message.get("content"), f"{where}.content")
            if role != "system" and turns and turns[-1].role == role:
                turns[-1].blocks = turns[-1].blocks + blocks
            else:
                turns.append(_Turn(role, blocks, where))
        return turns

    def _system_text(self, system: Any, where: str, *, drop_billing_header: bool = False) -> str:
        if system is None:
            return ""
        texts = []
        blocks = _blocks(system, where)
        # Claude Code's per-session attribution line would defeat the prefix cache: it goes (only that block).
        first = 1 if drop_billing_header and isinstance(system, list) and starts_with_billing_header(blocks) else 0
        for j, block in enumerate(blocks[first:], start=first):
            if block.get("type") != "text" or not isinstance(block.get("text"), str):
                raise RequestError(f"{where}.{j}: only text blocks are allowed in a system prompt", param=where)
            texts.append(block["text"])
        return "\n".join(texts)

    def _assistant(self, turn: _Turn) -> list[_Call]:
        texts: list[str] = []
        reasoning: list[str] = []
        calls: list[_Call] = []
        for j, block in enumerate(turn.blocks):
            kind = block.get("type")
            where = f"{turn.where}.content.{j}"
            if kind == "text":
                texts.append(_string(block, "text", where))
            elif kind == "thinking":
                text = self.codec.decode(block.get("signature"))  # ours: the reasoning exactly as it came
                if text is None:
                    text = block.get("thinking") if isinstance(block.get("thinking"), str) else ""
                if text:
                    reasoning.append(text)
            elif kind == "redacted_thinking":
                pass  # Anthropic's encrypted reasoning: nothing the upstream can read
            elif kind == "tool_use":
                call_id = _string(block, "id", where)
                name = _string(block, "name", where)
                calls.append(_Call(call_id, name, block.get("input", {})))
            elif kind in _SERVER_TOOL_BLOCKS:
                texts.append(f"[{block.get('name', kind)} {dumps_str(block.get('input', {}))}]")
            elif isinstance(kind, str) and _SERVER_RESULT_BLOCK.match(kind):
                texts.append(f"[{kind} omitted]")
            else:
                raise RequestError(f"{where}.type: {kind!r} is not allowed in an assistant message",
                                   param=f"{where}.type")
        text = ("".join(reasoning) or self._repair(calls)) if self.thinking else None
        self.messages.append(assistant_message("".join(texts), text, ((c.id, c.name, c.input) for c in calls)))
        return calls

    def _repair(self, calls: list[_Call]) -> str | None:
        """Reasoning for a thinking-mode assistant turn that came back without any."""
        if not needs_repair(self.repair, bool(calls)):
            return None
        self.repaired.append(len(self.messages))
        if calls and self.cache is not None:
            cached = self.cache.get(reasoning_key((c.id, c.name, c.input) for c in calls))
            if cached:
                return cached
        return REASONING_PLACEHOLDER

    def _answer(self, calls: list[_Call], turns: list[_Turn], i: int) -> int:
        """Emit one tool message per call, in the calls' order; return the index of the next turn to walk."""
        deferred: list[_Turn] = []
        while i < len(turns) and turns[i].role == "system":
            deferred.append(turns[i])
            i += 1
        results: dict[str, dict] = {}
        rest: list[dict] = []
        user: _Turn | None = turns[i] if i < len(turns) and turns[i].role == "user" else None
        if user is not None:
            wanted = {call.id for call in calls}
            for block in user.blocks:
                call_id = block.get("tool_use_id")
                if block.get("type") == "tool_result" and call_id in wanted and call_id not in results:
                    results[call_id] = block
                else:
                    rest.append(block)
            i += 1
        answers: dict[str, dict] = {}
        for call in calls:  # in the calls' order: a malformed result is reported as it always was
            result = results.get(call.id)
            if result is not None:
                content, found = self._tool_result_content(result, user.where if user else "")
                answers[call.id] = {"role": "tool", "tool_call_id": call.id, "content": content,
                                    **({TOOL_IMAGES: found} if found else {})}
        self.messages += tool_answers((call.id for call in calls), answers)
        for turn in deferred:
            self.messages.append({"role": "system", "content": self._system_text(turn.blocks, turn.where)})
        if user is not None and rest:
            self._user(rest, user.where)
        return i

    def _user(self, blocks: list[dict], where: str) -> None:
        parts: list[dict] = []
        for j, block in enumerate(blocks):
            kind = block.get("type")
            block_where = f"{where}.content.{j}"
            if kind == "tool_result":
                # A result whose call is not in the assistant turn right before: user text, never a bare `tool`
                # message (a 400 at DeepSeek).
                call_id = _string(block, "tool_use_id", block_where)
                content, images = self._tool_result_content(block, block_where)
                parts.append({"type": "text", "text": stray_output_text(call_id, content)})
                parts += images
            else:
                parts += self._content_parts(block, block_where)
        if parts:
            self.messages.append(user_message(parts))

    # ---- content -----------------------------------------------------------------------------------------------
    def _content_parts(self, block: dict, where: str) -> list[dict]:
        """One user content block → Chat content parts (text, or image_url for a model that takes images)."""
        kind = block.get("type")
        if kind == "text":
            return [{"type": "text", "text": _string(block, "text", where)}]
        if kind == "image":
            image = self._image(block, where)
            return [image] if image else [{"type": "text", "text": IMAGE_PLACEHOLDER}]
        if kind == "document":
            return [{"type": "text", "text": self._document(block, where)}]
        if kind == "search_result":
            texts = [b.get("text", "") for b in block.get("content") or [] if isinstance(b, dict)]
            header = f"[search result: {block.get('title', '')} {block.get('source', '')}]".replace("  ", " ")
            return [{"type": "text", "text": "\n".join([header, *texts])}]
        if kind in ("thinking", "redacted_thinking"):
            return []  # only meaningful on assistant turns
        raise RequestError(f"{where}.type: {kind!r} is not allowed in a user message", param=f"{where}.type")

    def _image(self, block: dict, where: str) -> dict | None:
        if not self.model.images:
            return None
        source = block.get("source")
        if not isinstance(source, dict):
            raise RequestError(f"{where}.source: an object is required", param=f"{where}.source")
        if source.get("type") == "base64":
            media_type = source.get("media_type")
            if media_type not in _IMAGE_MEDIA_TYPES:
                raise RequestError(f"{where}.source.media_type: must be one of {', '.join(_IMAGE_MEDIA_TYPES)}",
                                   param=f"{where}.source.media_type")
            url = f"data:{media_type};base64,{_string(source, 'data', where + '.source')}"
        elif source.get("type") == "url":
            url = _string(source, "url", where + ".source")
        else:
            return None  # a Files API id: nothing the upstream can fetch
        return {"type": "image_url", "image_url": {"url": url}}

    def _document(self, block: dict, where: str) -> str:
        source = block.get("source")
        if not isinstance(source, dict):
            raise RequestError(f"{where}.source: an object is required", param=f"{where}.source")
        title = block.get("title") if isinstance(block.get("title"), str) else None
        kind = source.get("type")
        if kind == "text":
            text = _string(source, "data", where + ".source")
        elif kind == "content":
            content = source.get("content")
            blocks = _blocks(content, where + ".source.content")
            text = "\n".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        else:
            label = f": {title}" if title else (f": {source['url']}" if isinstance(source.get("url"), str) else "")
            placeholder = PDF_PLACEHOLDER if source.get("media_type") == "application/pdf" or kind == "url" else (
                DOCUMENT_PLACEHOLDER)
            return placeholder.format(title=label)
        if title:
            text = f"[document: {title}]\n{text}"
        if isinstance(block.get("context"), str) and block["context"]:
            text = f"{text}\n[context: {block['context']}]"
        return text

    def _tool_result_content(self, block: dict, where: str) -> tuple[str, list[dict]]:
        """(text of a tool message, image parts that follow it in a user message)."""
        content = block.get("content")
        images: list[dict] = []
        if content is None or isinstance(content, str):
            text = content or ""
        else:
            texts: list[str] = []
            for j, inner in enumerate(_blocks(content, f"{where}.content")):
                inner_where = f"{where}.content.{j}"
                if inner.get("type") == "image":
                    image = self._image(inner, inner_where)
                    if image:
                        images.append(image)
                        texts.append(IMAGE_FOLLOWS)
                    else:
                        texts.append(IMAGE_PLACEHOLDER)
                elif inner.get("type") == "tool_reference":
                    texts.append(f"[tool reference: {inner.get('tool_name', '')}]")
                else:
                    texts += [p["text"] for p in self._content_parts(inner, inner_where) if p["type"] == "text"]
            text = "\n".join(texts)
        if block.get("is_error") is True:
            text = TOOL_ERROR_PREFIX + text
        return text, images


def starts_with_billing_header(system: list) -> bool:
    """Whether a system prompt's block list starts with Claude Code's attribution block: a text block whose text
    STARTS with `x-anthropic-billing-header:`. Claude Code always puts it first; a later block, or one that only
    mentions the header, is the client's own text and stays (as does a plain-string system prompt)."""
    head = system[0] if system else None
    return (isinstance(head, dict) and head.get("type") == "text" and isinstance(head.get("text"), str)
            and head["text"].startswith(BILLING_HEADER_PREFIX))


def _blocks(content: Any, where: str) -> list[dict]:
    """Content as a list of blocks: a string is one text block."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise RequestError(f"{where}: a string or an array of content blocks is required", param=where)
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise RequestError(f"{where}.{j}: a content block with a `type` is required", param=f"{where}.{j}")
    return content


def _string(block: dict, key: str, where: str) -> str:
    value = block.get(key)
    if not isinstance(value, str):
        raise RequestError(f"{where}.{key}: a string is required", param=f"{where}.{key}")
    return value

