"""Chat Completions request (any OpenAI-compatible client) → the hub's Chat request. Pure: no I/O.

Nearly identity: the hub form *is* Chat Completions. Only what an OpenAI client may send and the upstream may not
take is changed here; the clean-up every door gets (every tool call answered, reasoning_content on assistant turns
from the reasoning cache or "", tool names cleaned, `strict` / `parallel_tool_calls` per profile, max_tokens
clamped, fixed key order) is the upstream layer's (`upstream/prepare.py`).

- `developer` messages become `system` (DeepSeek knows only system/user/assistant/tool);
- `content: null` becomes "" (DeepSeek wants a string); tool and assistant content given as text parts is joined
  into one string (DeepSeek takes parts on user/system messages only); image/audio/file parts become a short text
  placeholder for models without image input;
- `max_completion_tokens` (OpenAI's current name) or `max_tokens` → `max_tokens`;
- `reasoning_effort` (OpenAI) or DeepSeek's own `thinking: {"type": ...}` → the profile's thinking fields; a
  forced `tool_choice` runs without thinking (DeepSeek has been seen to refuse the combination, and the client's
  forcing is the stronger contract: the Gemini door decides the same);
- `response_format` json_schema → json_object plus the schema in a system message (DeepSeek has no json_schema);
- `tools: []` and `tool_calls: []` are left out (DeepSeek refuses empty arrays); tool names the upstream would
  refuse are cleaned here and in the history, and `tool_names` maps them back for the reply.

Sampling fields every Chat upstream reads are forwarded; OpenAI-only fields (metadata, store, service_tier, ...)
and vendor extensions of other servers (top_k, repetition_penalty, ...) are accepted and not forwarded: OpenAI-
compatible clients send them routinely and a 400 would break them. The same body always becomes the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import ModelConfig
from ..core.chat import ChatMessage, ChatRequest
from .errors import RequestError
from .messages_request import thinking_off
from .responses_request import FILE_PLACEHOLDER, IMAGE_PLACEHOLDER
from .responses_request import (
    _apply_text_format as _apply_json_format,  # shared, not copied
)
from .tools import flat_tool_name, offer_tools

# Forwarded as the client sent them (validated by frontdoors/chat_validation.py).
FORWARDED = ("temperature", "top_p", "stop", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs",
             "seed")
# Accepted, not forwarded: OpenAI account features the upstream has no counterpart for.
IGNORED = frozenset({"metadata", "store", "service_tier", "user", "safety_identifier", "prompt_cache_key",
                     "prompt_cache_retention", "verbosity", "prediction", "logit_bias", "modalities", "audio",
                     "web_search_options"})
_MESSAGE_KEYS = {
    "system": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset({"role", "content", "name", "tool_calls", "reasoning_content"}),
    "tool": frozenset({"role", "content", "tool_call_id"}),
}
AUDIO_PLACEHOLDER = "[audio omitted: this model does not accept audio input]"


@dataclass
class TranslatedChat:
    body: ChatRequest  # for the upstream layer (still prepared there: upstream/prepare.py)
    thinking: bool  # the request runs in thinking mode
    stream: bool  # the client asked for SSE
    include_usage: bool  # ... and for the usage chunk (stream_options.include_usage)
    tool_names: dict[str, str] = field(default_factory=dict)  # upstream name → the client's, where they differ
    dropped: list[str] = field(default_factory=list)  # fields accepted and not forwarded (for the log)


def translate_chat_request(body: dict[str, Any], model: ModelConfig, profile, *,
                           upstream_stream: bool | None = None) -> TranslatedChat:
    """One validated Chat Completions body (frontdoors/chat_validation.py) for `model` on `profile`'s upstream.
    `upstream_stream` forces the upstream call's mode; by default streamed when the client streams and the model
    streams."""
    stream = bool(body.get("stream"))
    if body.get("functions") is not None or body.get("function_call") is not None:
        param = "functions" if body.get("functions") is not None else "function_call"
        raise RequestError(f"`{param}` (the deprecated function-calling API) is not supported: send `tools` and "
                           "`tool_choice` instead.", param=param)
    n = body.get("n")
    if n is not None and n != 1:
        # The upstream returns one choice per request (DeepSeek has no `n`), and the reasoning replay follows one
        # line of conversation: several choices would silently come back as one.
        raise RequestError("n: only 1 is supported; DeepSeek returns a single choice per request "
                           "(send the request again for another answer).", param="n", code="invalid_value")
    if "audio" in (body.get("modalities") or ()) or body.get("audio") is not None:
        raise RequestError("Audio output is not supported by this upstream.", param="modalities")

    tool_names: dict[str, str] = {}
    tools = [_tool(tool, index, tool_names) for index, tool in enumerate(body.get("tools") or ())]
    choice = _tool_choice(body.get("tool_choice"), tool_names) if tools else None
    thinking = _thinking(body, model, profile)
    if thinking.enabled and choice not in (None, "auto", "none"):
        thinking = thinking_off(profile, model)

    messages = [_message(m, i, model) for i, m in enumerate(body["messages"])]
    chat: dict[str, Any] = {"model": model.upstream_model or model.id, "messages": messages}
    _response_format(chat, body.get("response_format"))
    parallel = body["parallel_tool_calls"] if isinstance(body.get("parallel_tool_calls"), bool) else None
    offer_tools(chat, tools, choice, parallel)  # parallel_tool_calls is dropped for upstreams without it
    chat.update(thinking.fields)
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        chat["max_tokens"] = max_tokens  # clamped to the model's limit by the upstream layer
    for key in FORWARDED:
        if body.get(key) is not None:
            chat[key] = body[key]
    chat["stream"] = (model.stream and stream) if upstream_stream is None else upstream_stream
    if chat["stream"]:
        chat["stream_options"] = {"include_usage": True}  # always: the proxy logs usage; the client's choice below
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    dropped = sorted(key for key in body if key in IGNORED and body[key] is not None)
    return TranslatedChat(chat, thinking.enabled, stream, include_usage, tool_names, dropped)  # type: ignore[arg-type]


def _thinking(body: dict, model: ModelConfig, profile):
    own = body.get("thinking")  # DeepSeek's own switch, sent by clients configured for DeepSeek
    if isinstance(own, dict) and own.get("type") == "disabled":
        return thinking_off(profile, model)
    effort = body.get("reasoning_effort")
    return profile.thinking(model, effort if isinstance(effort, str) else None)


def _tool(tool: dict, index: int, tool_names: dict[str, str]) -> dict:
    if tool.get("type") != "function":
        raise RequestError(f"tools[{index}].type {tool.get('type')!r} is not supported: this upstream runs function "
                           "tools only.", param=f"tools[{index}].type")
    name = tool["function"]["name"]
    upstream = flat_tool_name(name)
    if upstream != name:
        tool_names[upstream] = name
        tool = {**tool, "function": {**tool["function"], "name": upstream}}
    return tool


def _tool_choice(choice: Any, tool_names: dict[str, str]) -> Any:
    if choice is None or isinstance(choice, str):
        return choice
    kind = choice.get("type")
    if kind == "function":
        name = flat_tool_name(choice["function"]["name"])
        return choice if name == choice["function"]["name"] else {"type": "function", "function": {"name": name}}
    if kind == "allowed_tools":  # a subset the upstream cannot express: the mode is what it can honour
        return "required" if (choice.get("allowed_tools") or {}).get("mode") == "required" else "auto"
    raise RequestError(f"tool_choice.type {kind!r} is not supported: this upstream runs function tools only.",
                       param="tool_choice")


def _message(message: dict, index: int, model: ModelConfig) -> ChatMessage:
    role = message["role"]
    if role == "developer":
        role = "system"
    elif role == "function":
        raise RequestError(f"messages[{index}]: role `function` (the deprecated function-calling API) is not "
                           "supported: answer tool calls with role `tool`.", param=f"messages[{index}].role")
    keys = _MESSAGE_KEYS[role]
    content = message.get("content")
    calls = message.get("tool_calls")
    for j, call in enumerate(calls or ()):
        if call.get("type") != "function":
            raise RequestError(f"messages[{index}].tool_calls[{j}].type {call.get('type')!r} is not supported: this "
                               "upstream runs function tools only.", param=f"messages[{index}].tool_calls[{j}].type")
    if (role == message["role"] and message.keys() <= keys and isinstance(content, str)
            and (calls is None or (calls and _names_clean(calls)))):
        return message  # type: ignore[return-value]  # the common case: sent as it is, nothing copied
    out: dict[str, Any] = {"role": role}
    for key, value in message.items():
        if key not in keys or key == "role":
            continue
        if key == "content":
            value = _content(value, role, model, f"messages[{index}].content")
        elif key == "tool_calls":
            if not value:
                continue  # DeepSeek refuses an empty array
            value = [_clean_call(call) for call in value]
        elif key == "reasoning_content" and value is None:
            continue  # None is "absent": the upstream layer fills it in from the cache, or ""
        out[key] = value
    if "content" not in out:
        out["content"] = ""
    return out  # type: ignore[return-value]


def _names_clean(calls: list) -> bool:
    return all(flat_tool_name(call["function"]["name"]) == call["function"]["name"] for call in calls)


def _clean_call(call: dict) -> dict:
    name = call["function"]["name"]
    upstream = flat_tool_name(name)
    return call if upstream == name else {**call, "function": {**call["function"], "name": upstream}}


def _content(content: Any, role: str, model: ModelConfig, where: str) -> Any:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if role in ("assistant", "tool"):  # the upstream takes parts on user/system messages only
        return "".join(part.get("text") or part.get("refusal") or "" for part in content)
    parts = []
    for part in content:
        kind = part["type"]
        if kind == "text" or (kind == "image_url" and model.images):
            parts.append(part)
        elif kind == "image_url":
            parts.append({"type": "text", "text": IMAGE_PLACEHOLDER})
        elif kind == "input_audio":
            parts.append({"type": "text", "text": AUDIO_PLACEHOLDER})
        elif kind == "file":
            parts.append({"type": "text", "text": FILE_PLACEHOLDER})
        else:
            raise RequestError(f"{where}: unknown content part type {kind!r}", param=where)
    return parts


def _response_format(chat: dict, fmt: Any) -> None:
    if not fmt or fmt.get("type") == "text":
        return
    if fmt["type"] == "json_object":
        chat["response_format"] = {"type": "json_object"}
        return
    schema = fmt.get("json_schema") or {}
    _apply_json_format(chat, {"format": {"type": "json_schema", "name": schema.get("name"),
                                         "schema": schema.get("schema")}})
