"""Responses API request → Chat Completions request (the Responses door's request translator). Pure: no I/O,
no clock, no randomness.

The same Responses history always yields the same Chat messages, byte for byte, so turn N's upstream request is a
prefix of turn N+1's and the upstream's context cache keeps hitting.

Only what is particular to the Responses API is done here (items → messages, reasoning items → reasoning_content,
tools and tool_choice, text.format). The Chat-side clean-up every door needs (answering every tool call, the
reasoning fallback cache, clamping max_tokens, fields the upstream does not accept) is the upstream layer's:
`upstream/prepare.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from ..config import ModelConfig
from ..core.chat import TOOL_IMAGES, ChatMessage, ChatRequest
from ..jsonfast import dumps_str
from .errors import RequestError
from .reasoning import ReasoningCodec
from .tool_history import NO_TOOL_OUTPUT  # noqa: F401 - where tests and older imports look for it
from .tools import (
    CUSTOM_INPUT_ARG,
    ToolMap,
    flat_tool_name,
    offer_tools,
    translate_tool_choice,
    translate_tools,
)

# Every top-level field of the Responses create call (openai SDK's ResponseCreateParams), plus what Codex sends
# beyond it. A field outside this set is a client bug: it is rejected like OpenAI rejects it, not silently dropped.
KNOWN_FIELDS = frozenset({
    "access_programs", "background", "background_options", "context_management", "conversation", "image",
    "include", "input", "instructions", "max_output_tokens", "max_tool_calls", "metadata", "model", "moderation",
    "parallel_tool_calls", "previous_response_id", "prompt", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning", "safety_identifier", "service_tier", "store", "stream", "stream_options",
    "temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation", "user",
    "client_metadata",  # Codex
})

IMAGE_PLACEHOLDER = "[image omitted: this model does not accept image input]"
IMAGE_FOLLOWS = "[image: attached in the next user message]"
FILE_PLACEHOLDER = "[file omitted: this model does not accept file input]"
JSON_SCHEMA_INSTRUCTION = (
    "Reply with a single JSON object and nothing else. It must validate against this JSON schema{name}:\n{schema}"
)
JSON_OBJECT_INSTRUCTION = "Reply with a single JSON object and nothing else."


@dataclass
class TranslatedRequest:
    body: ChatRequest  # the door's Chat request (the upstream layer still prepares it: upstream/prepare.py)
    tool_map: ToolMap  # to restore tool calls coming back
    thinking: bool  # assistant turns carry reasoning_content
    stream: bool  # the client asked for SSE


def translate_request(
    body: dict[str, Any],
    model: ModelConfig,
    profile,
    codec: ReasoningCodec,
    *,
    upstream_stream: bool | None = None,
) -> TranslatedRequest:
    """Translate one validated-as-we-go Responses body for `model` on an upstream described by `profile`.

    `upstream_stream` forces the upstream call's mode; by default it follows the model's config.
    """
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    unknown = [key for key in body if key not in KNOWN_FIELDS]
    if unknown:
        raise RequestError(f"Unknown parameter: '{unknown[0]}'.", param=unknown[0], code="unknown_parameter")
    if body.get("previous_response_id") is not None:
        raise RequestError(
            "previous_response_id is not supported yet: this proxy keeps no stored responses. "
            "Send the whole conversation in `input` (Codex does this by default).",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    if body.get("conversation") is not None:
        raise RequestError("`conversation` is not supported: send the whole conversation in `input`.",
                           param="conversation")

    reasoning = _object(body, "reasoning")
    effort = reasoning.get("effort")
    thinking = profile.thinking(model, effort)
    tools, tool_map = translate_tools(body.get("tools"), profile)

    messages = _MessageBuilder(model, codec, thinking.enabled).build(body.get("instructions"), body.get("input"))
    # The builder's plain dicts have ChatMessage's shape; a tool message may also carry TOOL_IMAGES, which the
    # upstream layer moves out before sending (upstream/prepare.py).
    chat: ChatRequest = {"model": model.upstream_model or model.id, "messages": cast("list[ChatMessage]", messages)}
    _apply_text_format(chat, _object(body, "text"))

    choice = translate_tool_choice(body.get("tool_choice"), tool_map) if tools else None
    parallel = body["parallel_tool_calls"] if isinstance(body.get("parallel_tool_calls"), bool) else None
    offer_tools(chat, tools, choice, parallel)  # parallel_tool_calls is dropped for upstreams without it
    chat.update(thinking.fields)

    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise RequestError("max_output_tokens must be a positive integer", param="max_output_tokens")
        chat["max_tokens"] = max_tokens  # clamped to the model's limit by the upstream layer
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise RequestError(f"{key} must be a number", param=key)
            chat[key] = value

    stream = bool(body.get("stream", False))
    chat["stream"] = model.stream if upstream_stream is None else upstream_stream
    if chat["stream"]:
        chat["stream_options"] = {"include_usage": True}
    return TranslatedRequest(body=chat, tool_map=tool_map, thinking=thinking.enabled, stream=stream)


def _object(body: dict, key: str) -> dict:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f"`{key}` must be an object", param=key)
    return value


def _apply_text_format(chat: ChatRequest | dict[str, Any], text: dict) -> None:  # chat_request.py: a dict
    """DeepSeek accepts only `response_format: json_object`, and only when the prompt mentions JSON; a json_schema
    request becomes json_object plus the schema stated in a system message (which also mentions JSON)."""
    fmt = text.get("format") or {}
    kind = fmt.get("type")
    if kind in (None, "text"):
        return
    if kind == "json_schema":
        name = f" (named {fmt['name']})" if fmt.get("name") else ""
        instruction = JSON_SCHEMA_INSTRUCTION.format(name=name, schema=dumps_str(fmt.get("schema") or {}))
    elif kind == "json_object":
        instruction = JSON_OBJECT_INSTRUCTION
    else:
        raise RequestError(f"text.format.type {kind!r} is not supported", param="text.format.type")
    # Appended, not prepended: the leading messages stay identical to the turns without a format (cache hits).
    chat["messages"].append({"role": "system", "content": instruction})
    chat["response_format"] = {"type": "json_object"}


class _MessageBuilder:
    """Walks the input items in order and builds Chat messages.

    Grouping rules: consecutive function/custom calls (and an assistant text right before them) form one assistant
    message; a reasoning item attaches to the next assistant message; outputs become `tool` messages, in the
    order they came (the upstream layer pairs them with their calls).
    """

    def __init__(self, model: ModelConfig, codec: ReasoningCodec, thinking: bool):
        self.model = model
        self.codec = codec
        self.thinking = thinking
        self.messages: list[dict[str, Any]] = []
        self.pending_reasoning: str | None = None
        self.open_assistant: dict | None = None  # the assistant message further calls still join
        self._handlers = {
            "message": self._message,
            "reasoning": self._reasoning,
            "function_call": self._call,
            "custom_tool_call": self._call,
            "function_call_output": self._output,
            "custom_tool_call_output": self._output,
        }

    def build(self, instructions: Any, items: Any) -> list[dict[str, Any]]:
        if instructions is not None:
            if not isinstance(instructions, str):
                raise RequestError("`instructions` must be a string", param="instructions")
            self._append({"role": "system", "content": instructions})
        if isinstance(items, str):
            items = [{"type": "message", "role": "user", "content": items}]
        elif items is None:
            items = []
        elif not isinstance(items, list):
            raise RequestError("`input` must be a string or an array of items", param="input")
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise RequestError(f"input[{index}] must be an object", param=f"input[{index}]")
            self._item(item, index)
        if not self.messages:
            raise RequestError("`input` is empty: there is nothing to send to the model", param="input")
        return self.messages

    # ---- items -------------------------------------------------------------------------------------------
    def _item(self, item: dict, index: int) -> None:
        kind = item.get("type", "message" if "role" in item else None)
        # A non-string type (a list, an object) is unsupported too, not an unhashable-key crash.
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            if kind == "item_reference":
                raise RequestError("item_reference needs stored responses, which this proxy does not keep yet",
                                   param=f"input[{index}]")
            raise RequestError(f"input[{index}] has an unsupported type: {kind!r}", param=f"input[{index}].type")
        handler(item, index)

    def _message(self, item: dict, index: int) -> None:
        role = item.get("role")
        where = f"input[{index}]"
        if role in ("developer", "system"):
            self._append({"role": "system", "content": self._text_content(item.get("content"), where)})
        elif role == "user":
            self._append({"role": "user", "content": self._user_content(item.get("content"), where)})
        elif role == "assistant":
            message = {"role": "assistant", "content": self._text_content(item.get("content"), where)}
            self._attach_reasoning(message)
            self._append(message)
            self.open_assistant = message  # tool calls that follow belong to the same turn
        else:
            raise RequestError(f"{where}.role must be user, assistant, system or developer", param=f"{where}.role")

    def _reasoning(self, item: dict, index: int) -> None:
        text = self.codec.decode(item.get("encrypted_content"))
        if text is None:
            parts = item.get("content") or []
            texts = [p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "reasoning_text"]
            text = "".join(texts) if texts else None
        if text is not None:
            self.pending_reasoning = (self.pending_reasoning or "") + text
        self.open_assistant = None

    def _call(self, item: dict, index: int) -> None:
        where = f"input[{index}]"
        call_id = item.get("call_id")
        name = item.get("name")
        if not isinstance(call_id, str) or not isinstance(name, str):
            raise RequestError(f"{where} needs string `call_id` and `name`", param=where)
        upstream_name = flat_tool_name(name, item.get("namespace"))
        if item["type"] == "custom_tool_call":
            arguments = dumps_str({CUSTOM_INPUT_ARG: item.get("input", "")})
        else:
            arguments = item.get("arguments", "")
            if not isinstance(arguments, str):
                raise RequestError(f"{where}.arguments must be a string", param=f"{where}.arguments")
        call = {"id": call_id, "type": "function", "function": {"name": upstream_name, "arguments": arguments}}
        message = self.open_assistant
        if message is None:
            message = {"role": "assistant", "content": ""}
            self._attach_reasoning(message)
            self._append(message)
            self.open_assistant = message
        message.setdefault("tool_calls", []).append(call)

    def _output(self, item: dict, index: int) -> None:
        where = f"input[{index}]"
        call_id = item.get("call_id")
        if not isinstance(call_id, str):
            raise RequestError(f"{where}.call_id must be a string", param=f"{where}.call_id")
        output = item.get("output")
        message: dict[str, Any] = {"role": "tool", "tool_call_id": call_id, "content": self._tool_output(output, where)}
        if self.model.images and not isinstance(output, str):
            images = [self._image_part(p) for p in self._parts(output, where) if p.get("type") == "input_image"]
            if images:
                message[_TOOL_IMAGES] = images  # moved into a user message by the upstream layer
        self._append(message)

    # ---- content -----------------------------------------------------------------------------------------
    def _parts(self, content: Any, where: str) -> list[dict]:
        if isinstance(content, str):
            return [{"type": "input_text", "text": content}]
        if content is None:
            return []
        if not isinstance(content, list):
            raise RequestError(f"{where}.content must be a string or an array", param=f"{where}.content")
        return [p for p in content if isinstance(p, dict)]

    def _part_text(self, part: dict) -> str | None:
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            return part.get("text", "")
        if kind == "refusal":
            return part.get("refusal", "")
        if kind == "input_image":
            return IMAGE_PLACEHOLDER
        if kind == "input_file":
            return FILE_PLACEHOLDER
        return None

    def _text_content(self, content: Any, where: str) -> str:
        texts = [t for t in (self._part_text(p) for p in self._parts(content, where)) if t is not None]
        return "\n".join(texts)

    def _user_content(self, content: Any, where: str) -> Any:
        parts = self._parts(content, where)
        if not self.model.images or not any(p.get("type") == "input_image" for p in parts):
            return self._text_content(content, where)
        chat_parts = []
        for part in parts:
            if part.get("type") == "input_image":
                chat_parts.append(self._image_part(part))
            else:
                text = self._part_text(part)
                if text is not None:
                    chat_parts.append({"type": "text", "text": text})
        return chat_parts

    @staticmethod
    def _image_part(part: dict) -> dict:
        url = part.get("image_url") or part.get("file_id") or ""
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}

    def _tool_output(self, output: Any, where: str) -> str:
        # Chat `tool` messages carry text only: an image becomes a placeholder, or, for a model that accepts
        # images, a pointer to the user message that carries it (see upstream/prepare.py).
        if isinstance(output, str):
            return output
        if not self.model.images:
            return self._text_content(output, where)
        texts = [IMAGE_FOLLOWS if p.get("type") == "input_image" else self._part_text(p)
                 for p in self._parts(output, where)]
        return "\n".join(t for t in texts if t is not None)

    # ---- assembly ----------------------------------------------------------------------------------------
    def _append(self, message: dict) -> None:
        if message["role"] != "assistant":
            self.open_assistant = None
        self.messages.append(message)

    def _attach_reasoning(self, message: dict) -> None:
        """The reasoning items before an assistant turn go with it (a turn without any gets the cached one or ""
        from the upstream layer)."""
        reasoning, self.pending_reasoning = self.pending_reasoning, None
        if self.thinking and reasoning is not None:
            message["reasoning_content"] = reasoning


_TOOL_IMAGES = TOOL_IMAGES  # moved into a user message by the upstream layer (upstream/prepare.py)
