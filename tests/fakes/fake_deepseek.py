"""A fake DeepSeek Chat Completions upstream: a real HTTP server on loopback.

It behaves like DeepSeek V4's ``POST /chat/completions`` closely enough that the proxy can be tested against it
without the network: streaming with keep-alive comments, ``reasoning_content`` deltas, tool-call fragments, a usage
chunk and ``data: [DONE]``; and DeepSeek's request rules, rejected with DeepSeek-shaped error bodies.

Only the standard library is used so the fake can also run as a subprocess next to the real Codex CLI::

    python -m tests.fakes.fake_deepseek --port 0 --script script.json
    # prints "LISTENING http://127.0.0.1:PORT", then serves until killed

Usage reports prompt-cache hits from a model of DeepSeek's context cache (``PromptCache``: the longest prefix shared
with the same key's earlier prompts for the same model, in 64-token blocks); each ``RecordedRequest`` keeps its
``prompt_tokens`` and ``cache_hit_tokens``. The Anthropic endpoint (pass-through mode) shares the model, on the prompt
rendered from the Messages body (``anthropic_prompt_body``), and reports hits as ``cache_read_input_tokens``.
``FakeDeepSeek(cache=PromptCache(block_tokens=..., ttl=...,
max_blocks=...))`` configures it; ``fake.cache.clear()`` (or ``reset()``) empties it.

``FakeDeepSeek(tls=(certfile, keyfile))`` serves HTTPS instead (``base_url`` is then ``https://...``), as the real
DeepSeek does; the client must trust that certificate.

In tests::

    with FakeDeepSeek() as fake:
        fake.script(Reply.tool_calls([("exec_command", {"cmd": "ls"})]), Reply.text("Done."))
        ...  # point the proxy at fake.base_url
        assert fake.rejections == []

Where the error texts come from
-------------------------------
Texts marked "verified" were copied from real DeepSeek responses quoted in public bug reports (the report is named
next to each). Texts marked "text not verified" are our faithful guess in DeepSeek's style.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import math
import re
import secrets
import select
import signal
import socket
import ssl
import string
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_API_KEY = "sk-fake-deepseek"
KNOWN_MODELS = ("deepseek-v4-pro", "deepseek-v4-flash", "deepseek-chat", "deepseek-reasoner")
ALLOWED_ROLES = ("system", "user", "assistant", "tool")
MAX_OUTPUT_TOKENS = 393216  # 384 K, DeepSeek V4's documented output limit
CACHE_UNIT_TOKENS = 64  # DeepSeek's context cache works in 64-token units
SYSTEM_FINGERPRINT = "fp_fake_deepseek_v4"
COMPACT = (",", ":")  # DeepSeek (serde) writes JSON without spaces
CHAT_PATHS = ("/chat/completions", "/v1/chat/completions")
BETA_CHAT_PATHS = ("/beta/chat/completions",)  # strict function calling is only allowed under the beta base URL
MODELS_PATHS = ("/models", "/v1/models")
ANTHROPIC_PATHS = ("/anthropic/v1/messages",)  # DeepSeek's Anthropic-compatible endpoint (the pass-through mode)

# The exact text DeepSeek returns when a thinking-mode tool-call turn is replayed without its reasoning.
# Verified: modelparams.dev#29, CodexPlusPlus#252, paper-chat-for-zotero#16 (all 2026).
REASONING_CONTENT_REQUIRED = "The `reasoning_content` in the thinking mode must be passed back to the API."
# Its Anthropic endpoint's version of the same rule (an assistant tool_use turn without its thinking block), as
# quoted in Claude Code users' reports of DeepSeek's /anthropic endpoint (text not verified beyond those reports).
THINKING_BLOCK_REQUIRED = "The content[].thinking in the thinking mode must be passed back to the API."


# --------------------------------------------------------------------------------------------------------------------
# Recorded traffic
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request as the fake received it (recorded even when it was rejected)."""

    method: str
    path: str  # without the query string
    headers: dict[str, str]  # lower-case keys
    body: Any  # parsed JSON, or None when absent / not JSON
    raw: bytes
    query: str = ""
    rejection: str | None = None  # reason code when the fake refused it (same strings as FakeDeepSeek.rejections)
    error_message: str | None = None  # the message of the error body it got, if any
    client_disconnected: bool = False  # the client went away before the stream ended
    client_port: int = 0  # the same port on two requests means the client reused a keep-alive connection
    prompt_tokens: int = 0  # an accepted chat request: its prompt, in the cache model's tokens
    cache_hit_tokens: int = 0  # ... and how many of them hit the modelled prefix cache


# --------------------------------------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ToolCall:
    """One tool call of a scripted reply, with its arguments already split into stream fragments."""

    id: str
    name: str
    arguments: str
    fragments: list[str]


@dataclass
class Reply:
    """What the fake answers to one chat request. Build it with the classmethods, not the constructor."""

    content: str = ""
    content_chunks: list[str] = field(default_factory=list)
    reasoning: str | None = None
    reasoning_chunks: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"
    usage: dict | None = None  # shallow-merged over the computed usage
    # "separate": a trailing chunk with choices [] (only with stream_options.include_usage), as DeepSeek sends today;
    # "on_finish": usage rides on the finish_reason chunk, which DeepSeek's docs have described at times.
    usage_style: str = "separate"
    keepalives: int = 0
    delay: float = 0.0  # seconds between stream events
    ttft: float = 0.0  # seconds before the first data event (keep-alives are spread over it)
    status: int = 200
    error_body: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)
    raw_lines: list[str] | None = None
    hang_up_after_chunks: int | None = None

    # ---- builders ---------------------------------------------------------------------------------------------------

    @classmethod
    def text(
        cls,
        text: str,
        *,
        reasoning: str | None = "thinking...",
        chunks: list[str] | None = None,
        finish_reason: str = "stop",
        usage: dict | None = None,
        usage_style: str = "separate",
        keepalives: int = 0,
        delay: float = 0.0,
        ttft: float = 0.0,
    ) -> Reply:
        """An assistant message. ``chunks`` controls how ``text`` is split into ``delta.content`` events."""
        if chunks is not None and "".join(chunks) != text:
            raise ValueError("Reply.text: chunks must join to text")
        return cls(
            content=text,
            content_chunks=list(chunks) if chunks is not None else _split_words(text),
            reasoning=reasoning,
            reasoning_chunks=_split_words(reasoning or ""),
            finish_reason=finish_reason,
            usage=usage,
            usage_style=_check_usage_style(usage_style),
            keepalives=keepalives,
            delay=delay,
            ttft=ttft,
        )

    @classmethod
    def tool_calls(
        cls,
        calls: Iterable[tuple[str, dict | str]],
        *,
        reasoning: str | None = "I should call a tool.",
        content: str | None = None,
        ids: list[str] | None = None,
        split_arguments: int = 2,
        finish_reason: str = "tool_calls",
        usage: dict | None = None,
        usage_style: str = "separate",
        keepalives: int = 0,
        delay: float = 0.0,
        ttft: float = 0.0,
    ) -> Reply:
        """Tool calls given as ``(name, arguments)``; a dict is JSON-encoded, a str is sent exactly as it is."""
        calls = list(calls)
        if ids is not None and len(ids) != len(calls):
            raise ValueError("Reply.tool_calls: need one id per call")
        built = []
        for index, (name, arguments) in enumerate(calls):
            text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
            call_id = ids[index] if ids is not None else _new_call_id(index)
            built.append(ToolCall(call_id, name, text, _split_even(text, split_arguments)))
        return cls(
            content=content or "",
            content_chunks=_split_words(content or ""),
            reasoning=reasoning,
            reasoning_chunks=_split_words(reasoning or ""),
            calls=built,
            finish_reason=finish_reason,
            usage=usage,
            usage_style=_check_usage_style(usage_style),
            keepalives=keepalives,
            delay=delay,
            ttft=ttft,
        )

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        *,
        type: str | None = None,  # noqa: A002 - the name DeepSeek's body uses
        code: str | None = "invalid_request_error",
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """An HTTP error with DeepSeek's body ``{"error": {"message", "type", "param", "code"}}``."""
        if type is None:
            type = "authentication_error" if status == 401 else "invalid_request_error"
        body = {"error": {"message": message, "type": type, "param": param, "code": code}}
        return cls(status=status, error_body=body, headers=dict(headers or {}))

    @classmethod
    def raw_sse(cls, lines: list[str], status: int = 200, *, delay: float = 0.0) -> Reply:
        """Send exactly these lines (each followed by ``\\n``; add ``""`` items for the blank separator lines)."""
        return cls(status=status, raw_lines=list(lines), delay=delay)

    @staticmethod
    def hang_up_after(n_chunks: int, base_reply: Reply) -> Reply:
        """Like ``base_reply``, but close the connection after ``n_chunks`` data events (never sends [DONE]).

        For a non-streaming request the connection is closed without any response.
        """
        return dataclasses.replace(base_reply, hang_up_after_chunks=n_chunks)


ReplySource = Reply | Callable[[dict], Reply]


def _check_usage_style(style: str) -> str:
    if style not in ("separate", "on_finish"):
        raise ValueError(f"usage_style must be 'separate' or 'on_finish', not {style!r}")
    return style


def _split_words(text: str) -> list[str]:
    """Split like a tokenizer would: each piece carries its leading whitespace (" world")."""
    return re.findall(r"\s*\S+|\s+$", text) if text else []


def _split_even(text: str, parts: int) -> list[str]:
    """Split ``text`` into at most ``parts`` non-empty fragments of about equal length ([""] for empty text)."""
    if not text:
        return [""]
    size = math.ceil(len(text) / max(1, parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _new_call_id(index: int) -> str:
    # DeepSeek V4 ids look like "call_00_ET_SpXxxavgyEWZu15ec5Tb1552": index, then random characters.
    alphabet = string.ascii_letters + string.digits
    return f"call_{index:02d}_" + "".join(secrets.choice(alphabet) for _ in range(24))


# --------------------------------------------------------------------------------------------------------------------
# DeepSeek's request rules
# --------------------------------------------------------------------------------------------------------------------


class Rejection(Exception):
    """A request DeepSeek would refuse. ``reason`` is a short code for assertions; the rest is the HTTP error."""

    def __init__(self, reason: str, status: int, message: str, *, type: str = "invalid_request_error"):  # noqa: A002
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.message = message
        self.type = type

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": None, "code": "invalid_request_error"}}


class DeepSeekRules:
    """Validates a chat request the way DeepSeek does, raising ``Rejection`` for the first broken rule.

    The order follows the server's layers: the gateway checks the key, then the body is parsed (syntax), then
    deserialized into typed structs (unknown roles / tool types), then the semantic checks run.
    """

    def __init__(self, api_key: str, thinking_default: bool, deserialize_status: int = 400):
        self.api_key = api_key
        self.thinking_default = thinking_default
        # DeepSeek answered struct-deserialization failures with 422 in 2024 (axum's default) and with 400 in every
        # report we found from 2026 (pi#1047, qwen-code#2158, LibreChat#12804).
        self.deserialize_status = deserialize_status

    # ---- entry points -----------------------------------------------------------------------------------------------

    def check_auth(self, headers: dict[str, str]) -> None:
        given = headers.get("authorization", "")
        key = given[len("Bearer ") :].strip() if given.startswith("Bearer ") else ""
        if key != self.api_key:
            # Verified shape: "Authentication Fails, Your api key: ****cd15 is invalid" (litellm#10403, py-gpt#112),
            # type authentication_error, code invalid_request_error. The text for a missing header is not verified.
            message = f"Authentication Fails, Your api key: ****{key[-4:]} is invalid"
            raise Rejection("auth", 401, message, type="authentication_error")

    def check_chat(self, raw: bytes, path: str) -> dict:
        """Returns the parsed body of a valid request."""
        text = self._parse_text(raw)
        body = self._parse_json(text)
        self._check_structure(body, text)
        self._check_model(body)
        self._check_max_tokens(body)
        self._check_tools(body, beta=path in BETA_CHAT_PATHS)
        self._check_response_format(body)
        self._check_conversation(body)
        return body

    def thinking_enabled(self, body: dict) -> bool:
        """Top-level ``thinking.type`` wins; the legacy aliases map to V4 flash without / with thinking."""
        thinking = body.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "disabled"):
            return thinking["type"] == "enabled"
        if body.get("model") == "deepseek-chat":
            return False
        if body.get("model") == "deepseek-reasoner":
            return True
        return self.thinking_default

    # ---- syntax -----------------------------------------------------------------------------------------------------

    @staticmethod
    def _parse_text(raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Rejection("invalid_json", 400, f"Failed to parse the request body as JSON: {exc}") from None

    @staticmethod
    def _parse_json(text: str) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            # Verified prefix: "Failed to parse the request body as JSON: messages[158].content: unexpected end of
            # hex escape at line 1 column 350781" (DeepSeek-Reasonix#1906). The detail after the colon is Python's
            # wording, not serde's (text not verified).
            detail = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            raise Rejection("invalid_json", 400, f"Failed to parse the request body as JSON: {detail}") from None

    # ---- deserialization into DeepSeek's typed request --------------------------------------------------------------

    def _deserialize_error(self, reason: str, detail: str, text: str, near: str | None = None) -> Rejection:
        # Verified prefix "Failed to deserialize the JSON body into the target type: <path>: <serde error> at line L
        # column C" (pi#1047, LibreChat#12804, litellm#30722). Our column is approximate.
        message = f"Failed to deserialize the JSON body into the target type: {detail} {_serde_position(text, near)}"
        return Rejection(reason, self.deserialize_status, message)

    def _check_structure(self, body: Any, text: str) -> None:
        if not isinstance(body, dict):
            # text not verified
            raise self._deserialize_error(
                "invalid_body", f"invalid type: {_json_kind(body)}, expected struct ChatCompletionRequest", text
            )
        for required in ("model", "messages"):
            if required not in body:
                # Verified shape: "messages[1]: missing field `content` at line 8 column 5" (deepseek4j#40).
                raise self._deserialize_error(f"missing_{required}", f"missing field `{required}`", text)
        if not isinstance(body["messages"], list):
            # text not verified
            raise self._deserialize_error(
                "invalid_messages", f"messages: invalid type: {_json_kind(body['messages'])}, expected a sequence", text
            )
        for index, message in enumerate(body["messages"]):
            self._check_message_structure(index, message, text)
        self._check_tool_structure(body.get("tools"), text)

    def _check_message_structure(self, index: int, message: Any, text: str) -> None:
        where = f"messages[{index}]"
        if not isinstance(message, dict) or "role" not in message:
            raise self._deserialize_error("invalid_message", f"{where}: missing field `role`", text)  # not verified
        role = message["role"]
        if role not in ALLOWED_ROLES:
            # Verified: "messages[0].role: unknown variant `developer`, expected one of `system`, `user`, `assistant`,
            # `tool`" (pi#1047, theia#15144). Since 2026-05 DeepSeek also lists `latest_reminder` (ccx#149).
            raise self._deserialize_error(
                "invalid_role",
                f"{where}.role: unknown variant `{role}`, expected one of `system`, `user`, `assistant`, `tool`",
                text,
                near=rf'"role"\s*:\s*"{re.escape(str(role))}"',
            )
        if role == "assistant":
            return  # an assistant may carry content null (with tool_calls); checked semantically later
        if "content" not in message:
            # Verified: "messages[1]: missing field `content`" (deepseek4j#40).
            raise self._deserialize_error("missing_content", f"{where}: missing field `content`", text)
        content = message["content"]
        if content is None:
            # DeepSeek wants "" rather than null (CLIENTS.md). text not verified (serde's usual wording).
            detail = f"{where}.content: invalid type: null, expected a string"
            raise self._deserialize_error("content_null", detail, text, near=r'"content"\s*:\s*null')
        if isinstance(content, list):
            self._check_content_parts(where, role, content, text)

    def _check_content_parts(self, where: str, role: str, parts: list, text: str) -> None:
        if role == "tool":
            # Verified: "messages[5]: invalid type: sequence, expected a string" (qwen-code#2158); that it is the tool
            # role that needs a plain string is our reading of those reports.
            raise self._deserialize_error("content_parts", f"{where}: invalid type: sequence, expected a string", text)
        for part in parts:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                # Verified: "messages[4].content: unknown variant tool_reference, expected text" (jetbrains-cc-gui#591)
                # and "... unknown variant `image_url`, expected `text`" (LibreChat#10756).
                raise self._deserialize_error(
                    "content_parts", f"{where}.content: unknown variant `{kind}`, expected `text`", text
                )

    def _check_tool_structure(self, tools: Any, text: str) -> None:
        if tools is None:
            return
        if not isinstance(tools, list):
            # text not verified
            detail = f"tools: invalid type: {_json_kind(tools)}, expected a sequence"
            raise self._deserialize_error("invalid_tools", detail, text)
        for index, tool in enumerate(tools):
            where = f"tools[{index}]"
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                # Verified: "tools[7].type: unknown variant `namespace`, expected `function` at line 1 column 80187"
                # (litellm#30722).
                raise self._deserialize_error(
                    "tool_type",
                    f"{where}.type: unknown variant `{kind}`, expected `function`",
                    text,
                    near=rf'"type"\s*:\s*"{re.escape(str(kind))}"',
                )
            if not isinstance(tool.get("function"), dict):
                # Verified: "tools[0]: missing field `function` at line 1 column 2949" (LibreChat#12804).
                raise self._deserialize_error("tool_function", f"{where}: missing field `function`", text)

    # ---- semantic checks --------------------------------------------------------------------------------------------

    @staticmethod
    def _check_model(body: dict) -> None:
        if body["model"] not in KNOWN_MODELS:
            # Verified: {"message":"Model Not Exist","type":"invalid_request_error","param":null,
            # "code":"invalid_request_error"} (LangBot#1643, deepwn/addi#13).
            raise Rejection("model_not_exist", 400, "Model Not Exist")

    @staticmethod
    def _check_max_tokens(body: dict) -> None:
        value = body.get("max_tokens")
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_OUTPUT_TOKENS:
            # Verified shape with other limits: "Invalid max_tokens value, the valid range of max_tokens is [1, 8192]"
            # (DeepSeek-V3#69) and [1, 65536] (aider#4125). The V4 number is from the docs (384 K), not seen in a body.
            message = f"Invalid max_tokens value, the valid range of max_tokens is [1, {MAX_OUTPUT_TOKENS}]"
            raise Rejection("max_tokens", 400, message)

    @staticmethod
    def _check_tools(body: dict, *, beta: bool) -> None:
        tools = body.get("tools")
        if tools is None:
            return
        if tools == []:
            # Verified: "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an empty array
            # instead." (marimo#6108, lobehub#9629).
            raise Rejection(
                "empty_tools",
                400,
                "Invalid 'tools': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
            )
        for index, tool in enumerate(tools):
            if "strict" in tool["function"] and not beta:
                # DeepSeek documents strict mode as beta-only (base_url https://api.deepseek.com/beta).
                # text not verified
                raise Rejection(
                    "strict_not_beta",
                    400,
                    f"Invalid 'tools[{index}].function.strict': strict mode is only supported with the beta "
                    "base_url https://api.deepseek.com/beta",
                )

    @staticmethod
    def _check_response_format(body: dict) -> None:
        response_format = body.get("response_format")
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind in (None, "text"):
            return
        if kind != "json_object":
            # Verified: "This response_format type is unavailable now" (Vane#969, for json_schema).
            raise Rejection("response_format", 400, "This response_format type is unavailable now")
        if "json" not in _all_message_text(body["messages"]).lower():
            # Verified: "Prompt must contain the word 'json' in some form to use 'response_format' of type
            # 'json_object'." (vercel/ai#7913, against deepseek-chat).
            raise Rejection(
                "json_object_without_json",
                400,
                "Prompt must contain the word 'json' in some form to use 'response_format' of type 'json_object'.",
            )

    def _check_conversation(self, body: dict) -> None:
        """Assistant turns must be well-formed and every tool call answered, in order."""
        thinking = self.thinking_enabled(body)
        pending: set[str] = set()  # tool_call ids still waiting for their tool message
        for message in body["messages"]:
            role = message["role"]
            if role == "tool":
                self._answer_tool_call(message, pending)
                continue
            if pending:
                raise _insufficient_tool_messages()
            if role == "assistant":
                pending = self._check_assistant(message, thinking)
        if pending:
            raise _insufficient_tool_messages()

    @staticmethod
    def _answer_tool_call(message: dict, pending: set[str]) -> None:
        call_id = message.get("tool_call_id")
        if call_id not in pending:
            # Verified: "Messages with role 'tool' must be a response to a preceding message with 'tool_calls'"
            # (OpenManus#227).
            message = "Messages with role 'tool' must be a response to a preceding message with 'tool_calls'"
            raise Rejection("orphan_tool_message", 400, message)
        pending.discard(call_id)

    @staticmethod
    def _check_assistant(message: dict, thinking: bool) -> set[str]:
        """Returns the ids of the tool calls this assistant message opens."""
        tool_calls = message.get("tool_calls")
        if tool_calls == []:
            # Seen relayed through OpenCode Go in front of DeepSeek (opencode#41860); text not verified at DeepSeek.
            raise Rejection(
                "empty_tool_calls",
                400,
                "Invalid 'messages.tool_calls': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
            )
        if not tool_calls:
            if message.get("content") is None:
                # Verified by direct calls (billion-context#719): content null / absent without tool_calls.
                raise Rejection("assistant_empty", 400, "Invalid assistant message: content or tool_calls must be set")
            return set()
        if thinking and message.get("reasoning_content") is None:
            raise Rejection("missing_reasoning_content", 400, REASONING_CONTENT_REQUIRED)
        return {call.get("id") for call in tool_calls if isinstance(call, dict)}


def _insufficient_tool_messages() -> Rejection:
    # Verified: TuriX-CUA#15, rig#856, dify#32222.
    return Rejection(
        "missing_tool_response",
        400,
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. "
        "(insufficient tool messages following tool_calls message)",
    )


def _serde_position(text: str, near: str | None) -> str:
    """serde reports where it stopped reading; approximate that with the end of the offending token (or the body)."""
    offset = len(text)
    if near:
        match = re.search(near, text)
        if match:
            offset = match.end()
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1)
    return f"at line {line} column {column}"


def _json_kind(value: Any) -> str:
    kinds = {list: "sequence", dict: "map", str: "string", bool: "boolean", type(None): "null"}
    return kinds.get(type(value), "number")


def _all_message_text(messages: list) -> str:
    pieces = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, list):
            pieces.extend(part.get("text", "") for part in content if isinstance(part, dict))
    return "\n".join(pieces)


# --------------------------------------------------------------------------------------------------------------------
# Building responses
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Turn:
    """What one accepted request asked for, as far as rendering the answer is concerned."""

    model: str
    stream: bool
    thinking: bool
    include_usage: bool
    prompt_tokens: int
    cache_hit_tokens: int
    completion_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: int = field(default_factory=lambda: int(time.time()))


def _count_tokens(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


def _usage(reply: Reply, turn: _Turn) -> dict:
    reasoning_tokens = _count_tokens(reply.reasoning or "") if turn.thinking else 0
    output_tokens = _count_tokens(reply.content) + sum(_count_tokens(c.name + c.arguments) for c in reply.calls)
    completion_tokens = max(1, reasoning_tokens + output_tokens)
    usage = {
        "prompt_tokens": turn.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": turn.prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": turn.cache_hit_tokens},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "prompt_cache_hit_tokens": turn.cache_hit_tokens,
        "prompt_cache_miss_tokens": turn.prompt_tokens - turn.cache_hit_tokens,
    }
    usage.update(reply.usage or {})
    return usage


def _chunk(turn: _Turn, delta: dict | None, finish_reason: str | None = None, usage: dict | None = None) -> str:
    """One ``data:`` event. ``delta=None`` means the usage-only chunk with ``choices: []``."""
    payload: dict[str, Any] = {
        "id": turn.completion_id,
        "object": "chat.completion.chunk",
        "created": turn.created,
        "model": turn.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        payload["usage"] = usage
    return "data: " + json.dumps(payload, ensure_ascii=False, separators=COMPACT) + "\n\n"


def _tool_call_deltas(reply: Reply, turn: _Turn) -> list[dict]:
    """First fragment: index, id, type, name and the start of the arguments; later ones: index and arguments."""
    deltas = []
    for index, call in enumerate(reply.calls):
        for number, fragment in enumerate(call.fragments):
            if number == 0:
                piece = {"index": index, "id": call.id, "type": "function",
                         "function": {"name": call.name, "arguments": fragment}}
            else:
                piece = {"index": index, "function": {"arguments": fragment}}
            delta = {"content": None, "tool_calls": [piece]}
            if turn.thinking:
                delta["reasoning_content"] = None
            deltas.append(delta)
    return deltas


def stream_events(reply: Reply, turn: _Turn) -> list[str]:
    """The ``data:`` events of a streamed answer, without keep-alives and without the final ``[DONE]``."""
    if turn.thinking:
        deltas = [{"role": "assistant", "content": None, "reasoning_content": ""}]
        deltas += [{"content": None, "reasoning_content": piece} for piece in reply.reasoning_chunks]
        deltas += [{"content": piece, "reasoning_content": None} for piece in reply.content_chunks]
    else:
        deltas = [{"role": "assistant", "content": ""}]
        deltas += [{"content": piece} for piece in reply.content_chunks]
    deltas += _tool_call_deltas(reply, turn)
    events = [_chunk(turn, delta) for delta in deltas]

    usage = _usage(reply, turn)
    finish_usage = usage if reply.usage_style == "on_finish" else None
    events.append(_chunk(turn, {}, reply.finish_reason, usage=finish_usage))
    if reply.usage_style == "separate" and turn.include_usage:
        events.append(_chunk(turn, None, usage=usage))
    return events


def completion_body(reply: Reply, turn: _Turn) -> dict:
    """The non-streaming ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if turn.thinking:
        message["reasoning_content"] = reply.reasoning or ""
    if reply.calls:
        message["tool_calls"] = [
            {"index": index, "id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}
            for index, call in enumerate(reply.calls)
        ]
    return {
        "id": turn.completion_id,
        "object": "chat.completion",
        "created": turn.created,
        "model": turn.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}],
        "usage": _usage(reply, turn),
    }


class PromptCache:
    """DeepSeek's context cache, modelled: a request hits the longest prefix it shares with earlier requests of the
    same account (the fake passes API key and model), counted in whole blocks of ``block_tokens`` tokens.

    DeepSeek documented its disk cache in 64-token storage units (a prefix shorter than a unit is never cached); the
    V4 docs describe "cache prefix units" persisted at the end of each request's input, at fixed token intervals and
    at common prefixes detected across requests. Storing every whole block of every prompt models both: after one
    request, any later request that starts with the same tokens hits them, a block at a time.

    The prompt is what DeepSeek's chat template renders, in its order (``prompt_pieces``): the leading system
    messages, then the tool definitions (the template appends them to the system prompt), then the conversation,
    where a mid-conversation system message stays in place. Within a message, JSON key order does not matter (the
    server parses the body), but every value does; tool definitions are rendered as sent (key order included).
    Tokens are a deterministic stand-in for DeepSeek's BPE pieces (``prompt_tokens``): consistency matters here, not
    the exact count.

    Not modelled: the unit DeepSeek V4 also persists at the end of the model's output (a client that replays the
    reply exactly would hit it one turn earlier; here the reply is first cached as part of the next prompt), and the
    "common prefix" units only being created once a second request shares them (here every block is cached at once).

    Entries expire ``ttl`` seconds after their last use (DeepSeek: "hours to days"), and at most ``max_blocks`` are
    kept (least recently used evicted first). Thread-safe.
    """

    def __init__(self, *, block_tokens: int = CACHE_UNIT_TOKENS, ttl: float = 3600.0, max_blocks: int = 500_000,
                 clock: Callable[[], float] = time.monotonic):
        if block_tokens < 1:
            raise ValueError("block_tokens must be at least 1")
        self.block_tokens = block_tokens
        self.ttl = ttl
        self.max_blocks = max_blocks
        self._clock = clock
        self._blocks: collections.OrderedDict[tuple[str, bytes], float] = collections.OrderedDict()  # -> expiry
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._blocks)

    def lookup(self, account: str, body: dict, *, store: bool = True) -> tuple[int, int]:
        """``(prompt_tokens, cache_hit_tokens)`` for a chat request body; with ``store``, its blocks are cached."""
        tokens = prompt_tokens(body)
        chain = _block_chain(tokens, self.block_tokens)
        now = self._clock()
        hit_blocks = 0
        with self._lock:
            for digest in chain:
                expiry = self._blocks.get((account, digest))
                if expiry is None or expiry <= now:
                    break
                hit_blocks += 1
            if store:
                for digest in chain:
                    self._blocks[(account, digest)] = now + self.ttl
                    self._blocks.move_to_end((account, digest))
                while len(self._blocks) > self.max_blocks:
                    self._blocks.popitem(last=False)
        return len(tokens), hit_blocks * self.block_tokens


# A word with its leading space, up to three digits, a run of punctuation, or a run of whitespace: roughly the pieces
# DeepSeek's pre-tokenizer cuts (BPE then splits long words further; that does not matter for prefix matching).
_TOKEN = re.compile(r" ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]+|_+|\s+")


def prompt_pieces(body: dict) -> list[str]:
    """The request as DeepSeek's template reads it, one string per part: leading system messages, then tools, then
    the rest of the conversation in its order."""
    messages = body.get("messages") or []
    lead = 0
    while lead < len(messages) and isinstance(messages[lead], dict) and messages[lead].get("role") == "system":
        lead += 1

    def message(m: Any) -> str:
        return json.dumps(m, sort_keys=True, ensure_ascii=False, separators=COMPACT)

    pieces = [message(m) for m in messages[:lead]]
    pieces += [json.dumps(tool, ensure_ascii=False, separators=COMPACT) for tool in body.get("tools") or []]
    pieces += [message(m) for m in messages[lead:]]
    return pieces


def prompt_tokens(body: dict) -> list[str]:
    """The prompt's tokens (stand-in): each part gets a role/framing marker token, then its pieces."""
    tokens: list[str] = []
    for piece in prompt_pieces(body):
        tokens.append("\x00")  # the template's separator between parts: a change of part boundary is a change
        tokens.extend(_TOKEN.findall(piece))
    return tokens


def _block_chain(tokens: list[str], block: int) -> list[bytes]:
    """One digest per whole block, each covering everything before it too (so equal digests = equal prefixes)."""
    chain = []
    digest = b""
    for start in range(0, len(tokens) - block + 1, block):
        digest = hashlib.blake2b(digest + "\x01".join(tokens[start : start + block]).encode("utf-8"),
                                 digest_size=16).digest()
        chain.append(digest)
    return chain


# --------------------------------------------------------------------------------------------------------------------
# The HTTP server
# --------------------------------------------------------------------------------------------------------------------


class _ClientGone(Exception):
    """The client closed the connection while we were streaming."""


class _Stopping(Exception):
    """The fake is shutting down; abandon the stream."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    fake: FakeDeepSeek
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        if self.tls is not None:
            # The handshake is left to the handler's thread: a slow or failing client must not stall accept().
            connection = self.tls.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return connection, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that drops a connection is normal traffic for a proxy's upstream; only report real bugs.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the proxy pools its upstream connections
    server_version = "fake-deepseek/1.0"
    server: _Server

    # ---- plumbing ---------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        # Headers and each SSE event are separate send()s; without TCP_NODELAY, Nagle's algorithm holds small
        # writes back until the client ACKs (up to 40 ms with delayed ACKs), which would hide streaming latency.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, add=True)

    def handle(self) -> None:
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # fails (quietly, an OSError) when the client rejects the certificate
        super().handle()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        self._response_started = True
        super().send_response(code, message)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked_body()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked_body(self) -> bytes:
        body = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(body)
            body += self.rfile.read(size)
            self.rfile.readline()

    # ---- routing ----------------------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        fake = self.server.fake
        self._response_started = False
        raw = self._read_body()  # always drain the body, or the next request on this connection breaks
        path, _, query = self.path.partition("?")
        record = RecordedRequest(
            method=self.command,
            path=path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=_parse_or_none(raw),
            raw=raw,
            query=query,
            client_port=self.client_address[1],
        )
        fake._record(record)
        try:
            if self.command == "GET" and path in MODELS_PATHS:
                fake.rules.check_auth(record.headers)
                self._send_json(200, _models_body())
            elif self.command == "POST" and path in CHAT_PATHS + BETA_CHAT_PATHS:
                fake.rules.check_auth(record.headers)
                body = fake.rules.check_chat(raw, path)
                self._answer_chat(record, body)
            elif self.command == "POST" and path in ANTHROPIC_PATHS:
                _check_anthropic_auth(fake.rules, record.headers)
                body = _check_anthropic_messages(fake.rules, record.body)
                self._answer_anthropic(record, body)
            else:
                # text not verified
                raise Rejection("not_found", 404, f"Not Found: {self.command} {path}")
        except Rejection as rejection:
            fake._reject(record, rejection)
            self._send_json(rejection.status, rejection.body())
        except OSError:
            self.close_connection = True  # the client went away while we answered
        except Exception as exc:  # a bug in the fake or in a callable reply: say so loudly instead of hanging up
            crash = Rejection("fake_internal_error", 500, f"fake_deepseek crashed: {exc!r}", type="internal_error")
            fake._reject(record, crash)
            if not self._response_started:
                self._send_json(500, crash.body())
            raise
        finally:
            fake._finished(record)

    def _answer_chat(self, record: RecordedRequest, body: dict) -> None:
        fake = self.server.fake
        reply = fake._next_reply(body)
        # The cache is per account (DeepSeek isolates users) and per model (a KV cache belongs to one model); a request
        # that fails does not fill it.
        account = f"{record.headers.get('authorization', '')}|{body.get('model')}"
        turn = fake._turn_for(body, account, store=reply.error_body is None)
        record.prompt_tokens, record.cache_hit_tokens = turn.prompt_tokens, turn.cache_hit_tokens
        if reply.error_body is not None:
            record.error_message = reply.error_body.get("error", {}).get("message")
            self._send_json(reply.status, reply.error_body, reply.headers)
        elif reply.raw_lines is not None:
            self._stream(record, reply, [line + "\n" for line in reply.raw_lines], done=False)
        elif turn.stream:
            self._stream(record, reply, stream_events(reply, turn), done=True)
        elif reply.hang_up_after_chunks is not None:
            self._hang_up()
        else:
            self._send_json(200, completion_body(reply, turn), reply.headers)

    def _answer_anthropic(self, record: RecordedRequest, body: dict) -> None:
        """The Anthropic endpoint: the same script, rendered as an Anthropic Message (SSE or JSON)."""
        fake = self.server.fake
        reply = fake._next_reply(body)
        thinking = _anthropic_thinking(fake.rules, body)
        if reply.error_body is not None:
            message = (reply.error_body.get("error") or {}).get("message", "")
            record.error_message = message
            kind = {401: "authentication_error", 402: "billing_error", 429: "rate_limit_error",
                    503: "overloaded_error"}.get(reply.status, "invalid_request_error")
            self._send_json(reply.status, {"type": "error", "error": {"type": kind, "message": message}},
                            reply.headers)
            return
        # The same cache model as the chat endpoint, on the prompt DeepSeek renders from the Messages body; a request
        # that fails does not fill it.
        key = record.headers.get("x-api-key") or record.headers.get("authorization", "")
        account = f"{key}|{body.get('model')}"
        record.prompt_tokens, record.cache_hit_tokens = fake.cache.lookup(account, anthropic_prompt_body(body))
        message = anthropic_message(reply, body, thinking=thinking, prompt_tokens=max(1, record.prompt_tokens),
                                    cache_hit_tokens=record.cache_hit_tokens)
        if body.get("stream"):
            self._stream(record, reply, anthropic_stream_events(message), done=False)
        else:
            self._send_json(200, message, reply.headers)

    # ---- writing ----------------------------------------------------------------------------------------------------

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, ensure_ascii=False, separators=COMPACT).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ds-trace-id", uuid.uuid4().hex)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, record: RecordedRequest, reply: Reply, events: list[str], *, done: bool) -> None:
        """Write each event as its own HTTP chunk, right away, with the reply's pacing."""
        fake = self.server.fake
        self.send_response(reply.status)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-ds-trace-id", uuid.uuid4().hex)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            self._send_keepalives(reply)
            for number, event in enumerate(events):
                if number == reply.hang_up_after_chunks:
                    return self._hang_up()
                if number:
                    self._pause(reply.delay)
                self._write_chunk(event.encode("utf-8"))
            if reply.hang_up_after_chunks is not None:
                return self._hang_up()
            if done:
                self._pause(reply.delay)
                self._write_chunk(b"data: [DONE]\n\n")
            self._write_raw(b"0\r\n\r\n")
        except (_ClientGone, OSError):
            record.client_disconnected = True
            fake._count_disconnect()
            self.close_connection = True
        except _Stopping:
            self._hang_up()

    def _send_keepalives(self, reply: Reply) -> None:
        # DeepSeek sends ": keep-alive" comments while the request waits to be scheduled; spread them over the TTFT.
        gap = reply.ttft / (reply.keepalives + 1)
        for _ in range(reply.keepalives):
            self._pause(gap)
            self._write_chunk(b": keep-alive\n\n")
        self._pause(reply.ttft - gap * reply.keepalives)

    def _pause(self, seconds: float) -> None:
        if seconds > 0 and self.server.fake._stopping.wait(seconds):
            raise _Stopping()

    def _write_chunk(self, data: bytes) -> None:
        self._write_raw(b"%X\r\n%s\r\n" % (len(data), data))

    def _write_raw(self, data: bytes) -> None:
        if _peer_closed(self.connection):
            raise _ClientGone("peer closed")
        self.wfile.write(data)  # unbuffered socket writer: this is a send() per chunk
        self.wfile.flush()

    def _hang_up(self) -> None:
        """Drop the connection without finishing the response (no terminating chunk)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _peer_closed(sock: socket.socket) -> bool:
    """True when the client has closed its side: the socket is readable but has nothing to read.

    Checked before every write so a disconnect is noticed at the next event, not only when send() finally fails
    (the kernel happily buffers the first writes after the peer is gone).
    """
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        if not poller.poll(0):
            return False
        if isinstance(sock, ssl.SSLSocket):  # SSLSocket.recv() takes no flags: peek below TLS, on a duplicate
            with socket.fromfd(sock.fileno(), sock.family, sock.type) as raw:
                return raw.recv(1, socket.MSG_PEEK) == b""
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


# ---- the Anthropic endpoint ------------------------------------------------------------------------------------------


def _check_anthropic_auth(rules: DeepSeekRules, headers: dict[str, str]) -> None:
    """x-api-key, or a Bearer token (DeepSeek's docs set ANTHROPIC_AUTH_TOKEN); the body is Anthropic's."""
    key = headers.get("x-api-key")
    if key is None:
        given = headers.get("authorization", "")
        key = given[len("Bearer "):].strip() if given.startswith("Bearer ") else ""
    if key != rules.api_key:
        raise Rejection("auth", 401, f"Authentication Fails, Your api key: ****{key[-4:]} is invalid",
                        type="authentication_error")


def _anthropic_thinking(rules: DeepSeekRules, body: dict) -> bool:
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive", "disabled"):
        return thinking["type"] != "disabled"
    return rules.thinking_default


def _check_anthropic_messages(rules: DeepSeekRules, body: Any) -> dict:
    """DeepSeek's Anthropic endpoint: a Messages body; in thinking mode every assistant turn with tool_use blocks
    must carry its thinking block back."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        raise Rejection("invalid_request", 400, "messages: Field required")
    if not isinstance(body.get("max_tokens"), int):
        raise Rejection("invalid_request", 400, "max_tokens: Field required")
    if _anthropic_thinking(rules, body):
        for message in body["messages"]:
            content = message.get("content") if isinstance(message, dict) else None
            if message.get("role") != "assistant" or not isinstance(content, list):
                continue
            kinds = [b.get("type") for b in content if isinstance(b, dict)]
            if "tool_use" in kinds and "thinking" not in kinds and "redacted_thinking" not in kinds:
                raise Rejection("missing_thinking_block", 400, THINKING_BLOCK_REQUIRED)
    return body


def anthropic_prompt_body(body: dict) -> dict:
    """A Messages body as the chat prompt DeepSeek's Anthropic endpoint renders (for the cache model): the system
    blocks' text as one leading system message, then the tools, then the conversation. ``cache_control`` markers are
    request metadata, not prompt text: they are left out (Claude Code moves them to the newest block every turn)."""
    def unmarked(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: unmarked(v) for k, v in value.items() if k != "cache_control"}
        if isinstance(value, list):
            return [unmarked(v) for v in value]
        return value

    system = body.get("system")
    if isinstance(system, list):
        system = "\n".join(b.get("text", "") for b in system if isinstance(b, dict))
    messages = [{"role": "system", "content": system}] if system else []
    messages += [unmarked(m) for m in body.get("messages") or []]
    return {"messages": messages, "tools": [unmarked(t) for t in body.get("tools") or []]}


def anthropic_message(reply: Reply, body: dict, *, thinking: bool, prompt_tokens: int,
                      cache_hit_tokens: int = 0) -> dict:
    """A scripted reply as the complete Anthropic Message DeepSeek's endpoint would return (Anthropic's usage:
    ``input_tokens`` leaves out the ``cache_read_input_tokens``)."""
    content: list[dict] = []
    if thinking and reply.reasoning:
        content.append({"type": "thinking", "thinking": reply.reasoning, "signature": "ds-" + uuid.uuid4().hex})
    if reply.content:
        content.append({"type": "text", "text": reply.content})
    for call in reply.calls:
        content.append({"type": "tool_use", "id": "toolu_" + call.id.replace("call_", ""), "name": call.name,
                        "input": json.loads(call.arguments or "{}")})
    stop = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}.get(reply.finish_reason, "end_turn")
    output = max(1, _count_tokens(reply.content) + _count_tokens(reply.reasoning or ""))
    return {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant",
            "model": body.get("model", ""), "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": max(1, prompt_tokens - cache_hit_tokens), "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": cache_hit_tokens, "output_tokens": output}}


def anthropic_stream_events(message: dict) -> list[str]:
    """The SSE events of `message`, each block in its own few deltas (``event:`` and ``data:`` lines)."""
    def event(data: dict) -> str:
        return f"event: {data['type']}\ndata: {json.dumps(data, ensure_ascii=False, separators=COMPACT)}\n\n"

    start = {**message, "content": [], "stop_reason": None, "usage": {**message["usage"], "output_tokens": 0}}
    events = [event({"type": "message_start", "message": start}), event({"type": "ping"})]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        empty = {"thinking": {"type": "thinking", "thinking": "", "signature": ""}, "text": {"type": "text", "text": ""},
                 "tool_use": {"type": "tool_use", "id": block.get("id"), "name": block.get("name"), "input": {}}}[kind]
        events.append(event({"type": "content_block_start", "index": index, "content_block": empty}))
        if kind == "thinking":
            for piece in _split_words(block["thinking"]):
                events.append(event({"type": "content_block_delta", "index": index,
                                     "delta": {"type": "thinking_delta", "thinking": piece}}))
            events.append(event({"type": "content_block_delta", "index": index,
                                 "delta": {"type": "signature_delta", "signature": block["signature"]}}))
        elif kind == "text":
            for piece in _split_words(block["text"]):
                events.append(event({"type": "content_block_delta", "index": index,
                                     "delta": {"type": "text_delta", "text": piece}}))
        else:
            for piece in _split_even(json.dumps(block["input"], ensure_ascii=False), 2):
                events.append(event({"type": "content_block_delta", "index": index,
                                     "delta": {"type": "input_json_delta", "partial_json": piece}}))
        events.append(event({"type": "content_block_stop", "index": index}))
    events.append(event({"type": "message_delta", "delta": {"stop_reason": message["stop_reason"],
                                                            "stop_sequence": None},
                         "usage": {"output_tokens": message["usage"]["output_tokens"]}}))
    events.append(event({"type": "message_stop"}))
    return events


def _parse_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return None


def _models_body() -> dict:
    # DeepSeek's documented list has no "created" field (unlike OpenAI's), so strict OpenAI models would reject it.
    return {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "deepseek"} for m in KNOWN_MODELS]}


# --------------------------------------------------------------------------------------------------------------------
# The public fake
# --------------------------------------------------------------------------------------------------------------------


class FakeDeepSeek:
    """A DeepSeek Chat Completions server on loopback. Start it, point the proxy at ``base_url``, script replies."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        thinking_default: bool = True,
        tls: tuple[str, str] | None = None,  # (certfile, keyfile): serve HTTPS
        cache: PromptCache | None = None,  # the prefix-cache model (block size, lifetime, size); one per fake
    ):
        self.api_key = api_key
        self.host = host
        self.port = port
        self.tls = tls
        self.rules = DeepSeekRules(api_key, thinking_default)
        self.default_reply: ReplySource = Reply.text("ok", reasoning="The user wants a short answer.")
        self.requests: list[RecordedRequest] = []
        self.rejections: list[str] = []  # reason codes, in order (e.g. "missing_reasoning_content")
        self.disconnects = 0
        self._finished_count = 0
        self.on_request: Callable[[RecordedRequest], None] | None = None  # called when a request is done
        self._replies: collections.deque[ReplySource] = collections.deque()
        self.cache = cache if cache is not None else PromptCache()
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------------------------------------

    def start(self) -> FakeDeepSeek:
        self._stopping.clear()
        self._server = _Server((self.host, self.port), _Handler)
        self._server.fake = self
        if self.tls is not None:
            self._server.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._server.tls.load_cert_chain(*self.tls)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name="fake-deepseek", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # wakes streams sleeping between events
        self._server.shutdown()
        self._server.server_close()
        with self._changed:
            connections = list(self._connections)
        for connection in connections:  # unblock handler threads idling on keep-alive connections
            try:
                # socket.socket's own shutdown, also for TLS: SSLSocket.shutdown() would drop the TLS state under
                # the handler thread's feet (a ValueError there); this way its read just ends as at a hang-up.
                socket.socket.shutdown(connection, socket.SHUT_RDWR)
            except OSError:
                pass
        self._server = None

    def __enter__(self) -> FakeDeepSeek:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    # ---- scripting --------------------------------------------------------------------------------------------------

    def script(self, *replies: ReplySource) -> None:
        """Queue replies (or callables ``body -> Reply``) for the next accepted chat requests, first in first out."""
        with self._changed:
            self._replies.extend(replies)

    def reset(self) -> None:
        """Forget the script and everything recorded: one fake can serve a whole test session."""
        with self._changed:
            self._replies.clear()
            self.requests.clear()
            self.rejections.clear()
            self.disconnects = 0
            self._finished_count = 0
        self.cache.clear()

    @property
    def pending_replies(self) -> int:
        with self._changed:
            return len(self._replies)

    @property
    def anthropic_requests(self) -> list[RecordedRequest]:
        """The POSTs to the Anthropic endpoint (accepted or not)."""
        return [r for r in self.requests if r.method == "POST" and r.path in ANTHROPIC_PATHS]

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The POSTs to a chat completions path (accepted or not)."""
        return [r for r in self.requests if r.method == "POST" and r.path in CHAT_PATHS + BETA_CHAT_PATHS]

    def wait_for(self, predicate: Callable[[FakeDeepSeek], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate(fake)`` holds (checked whenever a request finishes or a client disconnects)."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> bool:
        return self.wait_for(lambda fake: fake._finished_count >= count, timeout)

    def wait_for_disconnects(self, count: int = 1, timeout: float = 5.0) -> bool:
        return self.wait_for(lambda fake: fake.disconnects >= count, timeout)

    # ---- called by the handler --------------------------------------------------------------------------------------

    def _record(self, record: RecordedRequest) -> None:
        with self._changed:
            self.requests.append(record)

    def _reject(self, record: RecordedRequest, rejection: Rejection) -> None:
        record.rejection = rejection.reason
        record.error_message = rejection.message
        with self._changed:
            self.rejections.append(rejection.reason)

    def _finished(self, record: RecordedRequest) -> None:
        with self._changed:
            self._finished_count += 1
            self._changed.notify_all()
        if self.on_request is not None:
            self.on_request(record)

    def _count_disconnect(self) -> None:
        with self._changed:
            self.disconnects += 1
            self._changed.notify_all()

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._changed:
            (self._connections.add if add else self._connections.discard)(connection)

    def _next_reply(self, body: dict) -> Reply:
        with self._changed:
            source = self._replies.popleft() if self._replies else self.default_reply
        return source(body) if callable(source) else source

    def _turn_for(self, body: dict, account: str = "", *, store: bool = True) -> _Turn:
        prompt_count, hit_tokens = self.cache.lookup(account, body, store=store)
        stream_options = body.get("stream_options") or {}
        return _Turn(
            model=body["model"],
            stream=bool(body.get("stream")),
            thinking=self.rules.thinking_enabled(body),
            include_usage=bool(stream_options.get("include_usage")),
            prompt_tokens=max(1, prompt_count),
            cache_hit_tokens=min(prompt_count, hit_tokens),
        )


# --------------------------------------------------------------------------------------------------------------------
# Script files and the command line
# --------------------------------------------------------------------------------------------------------------------


def reply_from_spec(spec: dict) -> Reply:
    """Build a Reply from one script-file entry (see ``main`` for the format)."""
    options = dict(spec)
    kind = options.pop("kind", None)
    if kind == "text":
        return Reply.text(options.pop("text"), **options)
    if kind == "tool_calls":
        return Reply.tool_calls([tuple(call) for call in options.pop("calls")], **options)
    if kind == "custom":
        # A freeform tool (apply_patch) reaches DeepSeek as a function whose one string argument is named "input".
        name, text = options.pop("name"), options.pop("input")
        if "id" in options:
            options["ids"] = [options.pop("id")]
        return Reply.tool_calls([(name, {"input": text})], **options)
    if kind == "error":
        return Reply.error(options.pop("status"), options.pop("message"), **options)
    if kind == "raw_sse":
        return Reply.raw_sse(options.pop("lines"), **options)
    if kind == "hang_up":
        return Reply.hang_up_after(options.pop("after"), reply_from_spec(options.pop("reply")))
    raise ValueError(f"unknown reply kind {kind!r} in {spec!r}")


def load_script(path: str) -> list[Reply]:
    with open(path, encoding="utf-8") as handle:
        specs = json.load(handle)
    if not isinstance(specs, list):
        raise ValueError("a script file holds a JSON list of reply specs")
    return [reply_from_spec(spec) for spec in specs]


def _jsonl_recorder(path: str) -> Callable[[RecordedRequest], None]:
    lock = threading.Lock()

    def record(request: RecordedRequest) -> None:
        line = {
            "method": request.method,
            "path": request.path,
            "headers": request.headers,
            "body": request.body,
            "rejection": request.rejection,
            "error_message": request.error_message,
            "client_disconnected": request.client_disconnected,
        }
        with lock, open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")

    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.fake_deepseek",
        description="Fake DeepSeek Chat Completions server. Script entries, consumed in order: "
        '{"kind":"text","text":...}, {"kind":"tool_calls","calls":[[name, args]]}, '
        '{"kind":"custom","name":"apply_patch","input":...}, {"kind":"error","status":429,"message":...}, '
        '{"kind":"raw_sse","lines":[...]}, {"kind":"hang_up","after":N,"reply":{...}}; other keys are the '
        "keyword arguments of the matching Reply builder (reasoning, delay, keepalives, ...).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--script", help="JSON list of reply specs")
    parser.add_argument("--no-thinking", action="store_true", help="thinking disabled unless a request enables it")
    parser.add_argument("--record", help="append every request as a JSON line to this file, once its reply is finished")
    parser.add_argument("--cache-block-tokens", type=int, default=CACHE_UNIT_TOKENS,
                        help="prefix-cache model: tokens per cached block")
    parser.add_argument("--cache-ttl", type=float, default=3600.0, help="prefix-cache model: seconds an entry lives")
    parser.add_argument("--cache-max-blocks", type=int, default=500_000, help="prefix-cache model: blocks kept")
    args = parser.parse_args(argv)

    cache = PromptCache(block_tokens=args.cache_block_tokens, ttl=args.cache_ttl, max_blocks=args.cache_max_blocks)
    fake = FakeDeepSeek(api_key=args.api_key, host=args.host, port=args.port, thinking_default=not args.no_thinking,
                        cache=cache)
    if args.script:
        fake.script(*load_script(args.script))
    if args.record:
        fake.on_request = _jsonl_recorder(args.record)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fake.start()
    print(f"LISTENING {fake.base_url}", flush=True)
    stop.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
