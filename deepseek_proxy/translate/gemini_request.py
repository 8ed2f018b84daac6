"""Gemini GenerateContentRequest → Chat Completions request. Pure: no I/O, no clock, no randomness.

The output has the same shape as the other doors' (ChatRequest.body), so all share one relay. The same Gemini history
always yields the same Chat messages, byte for byte, so turn N's upstream prompt is a prefix of turn N+1's and
DeepSeek's prefix cache keeps hitting:
- `systemInstruction` (Gemini CLI sends it with role "user") is the first message; a JSON-output instruction goes
  last, so the leading messages stay those of the turns without one;
- each user content is its own user message (never merged with the next: that would rewrite it);
- function responses are emitted in the order of the model's calls, paired by id (by name when the client sends no
  ids), never in the order the client lists them; a call without a response gets a placeholder answer (DeepSeek 400s
  otherwise); a response repeated verbatim (Gemini CLI on --resume) is dropped.

Reasoning comes back as `reasoning_content` (DeepSeek rejects a thinking-mode tool-call turn without it): from a
`thoughtSignature` we issued (it carries the reasoning, authenticated and versioned — reasoning.ReasoningCodec — then
base64, as Gemini CLI checks that signatures are base64), else from the turn's thought parts' text, else — Gemini
CLI's `skip_thought_signature_validator`, a resumed session, a model switch — from the reasoning cache (keyed by a
fingerprint of the turn's calls, messages_request.reasoning_key, or of its text for a turn that answered in text:
turn_key) or the configured repair.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from ..config import ModelConfig
from ..jsonfast import dumps_str
from .errors import RequestError, each_object
from .messages_request import (
    REASONING_PLACEHOLDER,
    REPAIR_MODES,
    reasoning_key,
    thinking_off,
)
from .reasoning import ReasoningCache, ReasoningCodec
from .responses_request import (
    FILE_PLACEHOLDER,
    IMAGE_PLACEHOLDER,
    JSON_OBJECT_INSTRUCTION,
    JSON_SCHEMA_INSTRUCTION,
)
from .tool_history import HistoryBuilder, assistant_message, needs_repair, stray_output_text, tool_answers, user_message
from .tools import ToolMap, ToolOrigin, flat_tool_name, offer_tools

# The GenerateContentRequest fields (google-genai 3.6 / the v1beta REST reference). Others are ignored and reported.
KNOWN_FIELDS = frozenset({
    "model", "contents", "systemInstruction", "system_instruction", "tools", "toolConfig", "tool_config",
    "generationConfig", "generation_config", "safetySettings", "safety_settings", "cachedContent", "cached_content",
    "labels",
})
# Gemini CLI puts this in place of a signature it does not have (first call of a turn, --resume).
SKIP_SIGNATURE = "skip_thought_signature_validator"
ENUM_INSTRUCTION = "Reply with exactly one of these values and nothing else: {values}"
_SIGNATURE_PREFIX = b"dsp:"  # inside the base64, so a foreign (Google) signature is told apart without a decode error
_OPENAPI_TYPES = {"STRING": "string", "NUMBER": "number", "INTEGER": "integer", "BOOLEAN": "boolean",
                  "ARRAY": "array", "OBJECT": "object", "NULL": "null"}
# OpenAPI-subset keys with no JSON Schema meaning (or none DeepSeek needs).
_DROPPED_SCHEMA_KEYS = frozenset({"nullable", "propertyOrdering", "property_ordering", "example"})
_SCHEMA_KEY_NAMES = {"anyOf": "anyOf", "any_of": "anyOf", "minItems": "minItems", "min_items": "minItems",
                     "maxItems": "maxItems", "max_items": "maxItems", "minLength": "minLength",
                     "min_length": "minLength", "maxLength": "maxLength", "max_length": "maxLength",
                     "minProperties": "minProperties", "min_properties": "minProperties",
                     "maxProperties": "maxProperties", "max_properties": "maxProperties"}
_EFFORT_BY_LEVEL = {"MINIMAL": "minimal", "LOW": "low", "MEDIUM": "medium", "HIGH": "high"}


@dataclass
class GeminiChatRequest:
    body: dict[str, Any]  # what goes to the upstream (the same shape as ChatRequest.body)
    tool_map: ToolMap  # to restore tool names coming back; tool_map.dropped lists Google's built-in tools dropped
    thinking: bool  # assistant turns carry reasoning_content
    include_thoughts: bool  # the client wants the reasoning streamed as `thought: true` parts
    stop_sequences: tuple[str, ...] = ()
    repaired_turns: list[int] = field(default_factory=list)  # indexes in `contents` given cached/placeholder reasoning
    unknown_fields: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------------------------
# thoughtSignature: the reasoning's carrier
# --------------------------------------------------------------------------------------------------------------------


def encode_signature(codec: ReasoningCodec, reasoning: str) -> str:
    """The reasoning as a thoughtSignature: our authenticated blob, as standard base64 (what Gemini CLI accepts)."""
    return base64.b64encode(_SIGNATURE_PREFIX + codec.encode(reasoning).encode("ascii")).decode("ascii")


def turn_key(calls: list[tuple[str, str, Any]], text: str) -> str:
    """The reasoning cache key of a model turn: its calls' key (messages_request.reasoning_key), or for a turn that
    answered in text without calls, a digest of the text (as one nameless pseudo-call, so it never equals a real
    turn's key). Gemini CLI's `--resume` replaces the signatures of such turns too; restoring their reasoning byte
    for byte keeps the resumed prompt's prefix the one DeepSeek cached. The stream writes under this key and the
    request reads under it."""
    return reasoning_key(calls if calls else [("", "", text)])


def decode_signature(codec: ReasoningCodec, signature: Any) -> str | None:
    """The reasoning in a thoughtSignature we issued; None for anything else (Google's, the skip marker, altered)."""
    if not isinstance(signature, str) or not signature or signature == SKIP_SIGNATURE:
        return None
    # Accept both alphabets and missing padding: a client may re-encode the bytes it decoded (google-genai for
    # Python holds signatures as bytes).
    text = signature.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(_SIGNATURE_PREFIX):
        return None
    try:
        return codec.decode(raw[len(_SIGNATURE_PREFIX):].decode("ascii"))
    except UnicodeDecodeError:
        return None


# --------------------------------------------------------------------------------------------------------------------
# The translation
# --------------------------------------------------------------------------------------------------------------------


def _field(body: dict, camel: str, snake: str) -> Any:
    """Gemini's REST API takes both spellings (proto JSON mapping); clients use camelCase."""
    value = body.get(camel)
    return body.get(snake) if value is None else value


def translate_gemini_request(
    body: Any,
    model: ModelConfig,
    profile,
    codec: ReasoningCodec,
    cache: ReasoningCache | None = None,
    *,
    repair: str = "fallback",
    allow_thinking: bool = True,
    upstream_stream: bool | None = None,
) -> GeminiChatRequest:
    """Translate one GenerateContentRequest for `model` on an upstream described by `profile`.

    `repair` decides what a thinking-mode model turn without reasoning carries: "off" nothing (the upstream may
    refuse the request), "fallback" (default) the cached reasoning or a placeholder on tool-call turns (the ones
    DeepSeek checks), "always" the same on every model turn. `allow_thinking` False (gemini_models: the router and
    the next-speaker check) switches thinking off whatever thinkingConfig says. `upstream_stream` forces the upstream
    call's mode; by default it follows the model's config.
    """
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if repair not in REPAIR_MODES:
        raise ValueError(f"repair must be one of {REPAIR_MODES}, not {repair!r}")
    config = _object(_field(body, "generationConfig", "generation_config"), "generationConfig")

    tools, tool_map = translate_gemini_tools(body.get("tools"), profile)
    choice, allowed = translate_tool_config(_field(body, "toolConfig", "tool_config"), tool_map)
    if allowed is not None:
        tools = [t for t in tools if t["function"]["name"] in allowed]
    thinking, include_thoughts = gemini_thinking(config, model, profile, allow_thinking=allow_thinking)
    if thinking.enabled and choice not in (None, "auto", "none"):
        # DeepSeek has been seen to refuse a forced tool_choice in thinking mode; the client's forcing is the stronger
        # contract, so this request runs without thinking.
        thinking, include_thoughts = thinking_off(profile, model), False

    builder = _MessageBuilder(model, codec, cache, thinking.enabled, repair)
    messages = builder.build(_field(body, "systemInstruction", "system_instruction"), body.get("contents"))
    chat: dict[str, Any] = {"model": model.upstream_model or model.id, "messages": messages}
    _apply_response_format(chat, config)
    offer_tools(chat, tools, choice)
    chat.update(thinking.fields)

    candidates = _field(config, "candidateCount", "candidate_count")
    if candidates is not None and candidates != 1:
        raise RequestError("generationConfig.candidateCount: only 1 candidate is supported",
                           param="generationConfig.candidateCount")
    max_tokens = _field(config, "maxOutputTokens", "max_output_tokens")
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise RequestError("generationConfig.maxOutputTokens: a positive integer is required",
                               param="generationConfig.maxOutputTokens")
        chat["max_tokens"] = min(max_tokens, model.max_output_tokens)
    stop_sequences = _stop_sequences(_field(config, "stopSequences", "stop_sequences"))
    if stop_sequences:
        chat["stop"] = list(stop_sequences)
    for camel, snake, key in (("temperature", "temperature", "temperature"), ("topP", "top_p", "top_p"),
                              ("topK", "top_k", "top_k"), ("presencePenalty", "presence_penalty", "presence_penalty"),
                              ("frequencyPenalty", "frequency_penalty", "frequency_penalty")):
        value = _field(config, camel, snake)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise RequestError(f"generationConfig.{camel}: a number is required", param=f"generationConfig.{camel}")
        if key != "top_k" or getattr(profile, "accepts_top_k", False):
            chat[key] = value

    chat["stream"] = model.stream if upstream_stream is None else upstream_stream
    if chat["stream"]:
        chat["stream_options"] = {"include_usage": True}
    return GeminiChatRequest(body=chat, tool_map=tool_map, thinking=thinking.enabled,
                             include_thoughts=include_thoughts, stop_sequences=stop_sequences,
                             repaired_turns=builder.repaired,
                             unknown_fields=[key for key in body if key not in KNOWN_FIELDS])


def gemini_thinking(config: dict, model: ModelConfig, profile, *, allow_thinking: bool = True):
    """generationConfig.thinkingConfig → (the upstream's thinking fields, includeThoughts).

    Absent: thinking on at the upstream's default effort (Gemini 2.5+ models think by default). thinkingBudget 0 →
    off; -1 → on, default effort; N > 0 → low / medium / high by size; thinkingLevel MINIMAL..HIGH → the effort of
    that name. Efforts go through the model's effort_map (profile.thinking).
    """
    thinking_config = _object(_field(config, "thinkingConfig", "thinking_config"), "generationConfig.thinkingConfig")
    include = _field(thinking_config, "includeThoughts", "include_thoughts")
    if include is not None and not isinstance(include, bool):
        raise RequestError("generationConfig.thinkingConfig.includeThoughts: a boolean is required",
                           param="generationConfig.thinkingConfig.includeThoughts")
    budget = _field(thinking_config, "thinkingBudget", "thinking_budget")
    level = _field(thinking_config, "thinkingLevel", "thinking_level")
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < -1):
        raise RequestError("generationConfig.thinkingConfig.thinkingBudget: an integer >= -1 is required",
                           param="generationConfig.thinkingConfig.thinkingBudget")
    if level is not None and (not isinstance(level, str)
                              or level.upper() not in (*_EFFORT_BY_LEVEL, "THINKING_LEVEL_UNSPECIFIED")):
        raise RequestError(f"generationConfig.thinkingConfig.thinkingLevel: unknown value {level!r}",
                           param="generationConfig.thinkingConfig.thinkingLevel")
    if not allow_thinking or budget == 0:
        return thinking_off(profile, model), False
    effort: str | None = None
    if level is not None:
        effort = _EFFORT_BY_LEVEL.get(level.upper())
    elif budget is not None and budget > 0:
        effort = "low" if budget <= 1024 else "medium" if budget <= 8192 else "high"
    choice = profile.thinking(model, effort)
    return choice, bool(include) and choice.enabled


def _apply_response_format(chat: dict, config: dict) -> None:
    """responseMimeType application/json (with responseSchema / responseJsonSchema) → DeepSeek's json_object plus the
    schema stated in a system message at the end that names JSON (DeepSeek refuses json_object otherwise, and Gemini
    CLI's next-speaker prompt never says "json"). text/x.enum → the allowed values stated, plain text."""
    mime = _field(config, "responseMimeType", "response_mime_type")
    schema = _field(config, "responseJsonSchema", "response_json_schema")
    if schema is None:
        schema = _field(config, "responseSchema", "response_schema")
    if mime in (None, "text/plain"):
        return
    if mime == "application/json":
        if schema is None:
            instruction = JSON_OBJECT_INSTRUCTION
        else:
            instruction = JSON_SCHEMA_INSTRUCTION.format(name="", schema=dumps_str(json_schema(schema)))
        chat["messages"].append({"role": "system", "content": instruction})
        chat["response_format"] = {"type": "json_object"}
        return
    if mime == "text/x.enum":
        values = (schema or {}).get("enum") if isinstance(schema, dict) else None
        if not isinstance(values, list) or not values:
            raise RequestError("generationConfig.responseSchema: text/x.enum needs a schema with an `enum`",
                               param="generationConfig.responseSchema")
        chat["messages"].append({"role": "system",
                                 "content": ENUM_INSTRUCTION.format(values=", ".join(map(str, values)))})
        return
    raise RequestError(f"generationConfig.responseMimeType: {mime!r} is not supported (use text/plain, "
                       "application/json or text/x.enum)", param="generationConfig.responseMimeType")


def _stop_sequences(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise RequestError("generationConfig.stopSequences: an array of strings is required",
                           param="generationConfig.stopSequences")
    return tuple(s for s in value if s)


def _object(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f"{where}: an object is required", param=where)
    return value


# --------------------------------------------------------------------------------------------------------------------
# Schemas and tools
# --------------------------------------------------------------------------------------------------------------------


def json_schema(schema: Any) -> Any:
    """Gemini's OpenAPI-subset Schema (upper-case types, `nullable`, `propertyOrdering`, snake_case keys) → JSON Schema.

    Also applied to `parametersJsonSchema` / `responseJsonSchema`, which are JSON Schema already but which Gemini CLI
    fills with upper-case types in places (its router): those are lower-cased, the rest is kept as written.
    Deterministic: keys keep the client's order.
    """
    if isinstance(schema, list):
        return [json_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED_SCHEMA_KEYS:
            continue
        key = _SCHEMA_KEY_NAMES.get(key, key)
        if key == "type":
            value = _schema_type(value)
        elif key in ("properties", "$defs", "definitions", "patternProperties") and isinstance(value, dict):
            value = {name: json_schema(inner) for name, inner in value.items()}
        elif key in ("items", "anyOf", "oneOf", "allOf", "not", "additionalProperties", "prefixItems"):
            value = json_schema(value)
        out[key] = value
    if schema.get("nullable") is True:
        kind = out.get("type")
        if isinstance(kind, str) and kind != "null":
            out["type"] = [kind, "null"]
        elif "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        elif "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    return out


def _schema_type(value: Any) -> Any:
    if isinstance(value, str):
        return _OPENAPI_TYPES.get(value.upper(), value) if value.isupper() else value
    if isinstance(value, list):
        return [_schema_type(v) for v in value]
    return value


def translate_gemini_tools(tools: Any, profile) -> tuple[list[dict], ToolMap]:
    """tools[].functionDeclarations → function tools, in the client's order. Google's built-in tools (googleSearch,
    codeExecution, urlContext, ...) run at Google, not here: dropped and listed in tool_map.dropped."""
    tool_map = ToolMap()
    if tools is None:
        return [], tool_map
    if not isinstance(tools, list):
        raise RequestError("tools: an array is required", param="tools")
    out: list[dict] = []
    for _, where, tool in each_object(tools, "tools[{}]"):
        for key in tool:
            if key not in ("functionDeclarations", "function_declarations"):
                tool_map.dropped.append(key)
        declarations = _field(tool, "functionDeclarations", "function_declarations") or []
        if not isinstance(declarations, list):
            raise RequestError(f"{where}.functionDeclarations: an array is required", param=where)
        for _, dwhere, declaration in each_object(declarations, where + ".functionDeclarations[{}]"):
            name = declaration.get("name")
            if not isinstance(name, str) or not name:
                raise RequestError(f"{dwhere}.name: a non-empty string is required", param=f"{dwhere}.name")
            schema = _field(declaration, "parametersJsonSchema", "parameters_json_schema")
            if schema is None:
                schema = declaration.get("parameters")
            if schema is not None and not isinstance(schema, dict):
                raise RequestError(f"{dwhere}.parameters: an object is required", param=f"{dwhere}.parameters")
            schema = json_schema(schema) if schema is not None else {"type": "object", "properties": {}}
            upstream_name = flat_tool_name(name)
            if upstream_name in tool_map.by_upstream_name:
                continue  # a repeated declaration: the first one wins, as one function name can mean one thing
            out.append(profile.function_tool(upstream_name, declaration.get("description"), schema, None))
            tool_map.by_upstream_name[upstream_name] = ToolOrigin("function", name)
    return out, tool_map


def translate_tool_config(tool_config: Any, tool_map: ToolMap) -> tuple[Any, set[str] | None]:
    """toolConfig.functionCallingConfig → (Chat tool_choice or None for "send none", the upstream names of the only
    tools to offer, or None for all). AUTO (the default) sends nothing, so the body equals the one without it."""
    calling = _object(_field(_object(tool_config, "toolConfig"), "functionCallingConfig", "function_calling_config"),
                      "toolConfig.functionCallingConfig")
    mode = calling.get("mode") or "AUTO"
    names = _field(calling, "allowedFunctionNames", "allowed_function_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise RequestError("toolConfig.functionCallingConfig.allowedFunctionNames: an array of strings is required",
                           param="toolConfig.functionCallingConfig.allowedFunctionNames")
    if not isinstance(mode, str) or mode.upper() not in ("AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"):
        raise RequestError(f"toolConfig.functionCallingConfig.mode: unknown value {mode!r}",
                           param="toolConfig.functionCallingConfig.mode")
    mode = mode.upper()
    if mode == "NONE":
        return "none", None
    allowed: set[str] | None = None
    if names:
        allowed = {flat_tool_name(n) for n in names}
        missing = sorted(n for n in names if flat_tool_name(n) not in tool_map.by_upstream_name)
        if missing:
            raise RequestError(f"toolConfig.functionCallingConfig.allowedFunctionNames: no function named "
                               f"{', '.join(missing)} in tools", param="toolConfig.functionCallingConfig")
    if mode != "ANY":
        return None, allowed
    if allowed is not None and len(allowed) == 1:
        return {"type": "function", "function": {"name": next(iter(allowed))}}, allowed
    return "required", allowed


# --------------------------------------------------------------------------------------------------------------------
# Contents
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Turn:
    role: str  # user | model
    parts: list[dict]
    index: int  # of the first content in `contents`


@dataclass
class _Call:
    id: str
    name: str  # the client's name
    args: Any


class _MessageBuilder(HistoryBuilder):
    def __init__(self, model: ModelConfig, codec: ReasoningCodec, cache: ReasoningCache | None, thinking: bool,
                 repair: str):
        super().__init__(model, codec, cache, thinking, repair)
        self.answered: dict[str, str] = {}  # call id → the response text it got (to drop verbatim repeats)

    def build(self, system: Any, contents: Any) -> list[dict]:
        system_text = self._system_text(system)
        if system_text:
            self.messages.append({"role": "system", "content": system_text})
        if not isinstance(contents, list) or not contents:
            raise RequestError("contents: a non-empty array is required", param="contents")
        self.walk(self._turns(contents))
        if all(message["role"] == "system" for message in self.messages):
            raise RequestError("contents: nothing to send (every part is empty)", param="contents")
        return self.messages

    def _turn(self, turn: _Turn) -> list[_Call]:
        if turn.role == "user":
            self._user(turn.parts, f"contents[{turn.index}]")
            return []
        return self._model(turn)

    @staticmethod
    def _system_text(system: Any) -> str:
        if system is None:
            return ""
        if isinstance(system, str):
            return system
        if not isinstance(system, dict):
            raise RequestError("systemInstruction: a Content object is required", param="systemInstruction")
        parts = _parts(system.get("parts"), "systemInstruction.parts")
        return "\n".join(p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought"))

    @staticmethod
    def _turns(contents: list) -> list[_Turn]:
        """Model contents in a row are one turn (their calls are answered together); user contents stay apart."""
        turns: list[_Turn] = []
        for index, where, content in each_object(contents, "contents[{}]"):
            role = content.get("role") or "user"
            if role not in ("user", "model", "function"):
                raise RequestError(f"{where}.role: must be user or model", param=f"{where}.role")
            role = "model" if role == "model" else "user"  # "function": the old role of function responses
            parts = _parts(content.get("parts"), f"{where}.parts")
            if role == "model" and turns and turns[-1].role == "model":
                turns[-1].parts = turns[-1].parts + parts
            else:
                turns.append(_Turn(role, parts, index))
        return turns

    # ---- model turns -------------------------------------------------------------------------------------------
    def _model(self, turn: _Turn) -> list[_Call]:
        texts: list[str] = []
        thoughts: list[str] = []
        signed: str | None = None
        calls: list[_Call] = []
        for j, part in enumerate(turn.parts):
            where = f"contents[{turn.index}].parts[{j}]"
            if signed is None:
                signed = decode_signature(self.codec, _field(part, "thoughtSignature", "thought_signature"))
            call = _field(part, "functionCall", "function_call")
            if _field(part, "functionResponse", "function_response") is not None:
                raise RequestError(f"{where}.functionResponse: only a user turn may carry function responses",
                                   param=where)
            if part.get("thought") is True:
                if isinstance(part.get("text"), str):
                    thoughts.append(part["text"])
            elif call is not None:
                calls.append(self._call(call, turn.index, len(calls), where))
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                texts.append(_other_part_text(part, where, self.model) or "")
        reasoning = None
        if self.thinking:
            reasoning = (signed if signed is not None
                         else self._restore(calls, "".join(texts), "".join(thoughts), turn.index))
        self.messages.append(assistant_message("".join(texts), reasoning, ((c.id, c.name, c.args) for c in calls)))
        return calls

    @staticmethod
    def _call(call: Any, content_index: int, position: int, where: str) -> _Call:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
            raise RequestError(f"{where}.functionCall.name: a non-empty string is required",
                               param=f"{where}.functionCall.name")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            # Clients other than Gemini CLI may send no ids: one from the call's place in the history, so the same
            # history always gives the same id.
            call_id = f"call_{content_index}_{position}"
        args = call.get("args")
        return _Call(call_id, call["name"], {} if args is None else args)

    def _restore(self, calls: list[_Call], text: str, thoughts: str, content_index: int) -> str | None:
        """Reasoning for a thinking-mode model turn that came back without our signature: the cached reasoning of its
        calls, or of its text when it made none (byte-exact, so the prefix stays cached), else the turn's thought
        text (Gemini CLI trims it when it records a session), else the repair."""
        if self.repair != "off" and (calls or text) and self.cache is not None:
            cached = self.cache.get(turn_key([(c.id, c.name, c.args) for c in calls], text))
            if cached:
                self.repaired.append(content_index)
                return cached
        if thoughts:
            return thoughts
        if not needs_repair(self.repair, bool(calls)):
            return None
        self.repaired.append(content_index)
        return REASONING_PLACEHOLDER

    # ---- function responses ------------------------------------------------------------------------------------
    def _answer(self, calls: list[_Call], turns: list[_Turn], i: int) -> int:
        """One tool message per call, in the calls' order, from the function responses of the user contents that
        follow; the rest of those contents follows the answers. Returns the index of the next turn to walk."""
        answers: dict[str, dict] = {}  # call id → its tool message
        leftovers: list[tuple[list[dict], str]] = []
        by_name: dict[str, list[str]] = {}
        for call in calls:
            by_name.setdefault(call.name, []).append(call.id)
        while i < len(turns) and turns[i].role == "user":
            turn = turns[i]
            rest: list[dict] = []
            for j, part in enumerate(turn.parts):
                response = _field(part, "functionResponse", "function_response")
                if response is None:
                    rest.append(part)
                    continue
                where = f"contents[{turn.index}].parts[{j}].functionResponse"
                call_id = self._response_id(response, by_name, answers, where)
                if call_id is None:
                    rest.append(part)
                else:
                    answers[call_id] = {"role": "tool", "tool_call_id": call_id,
                                        "content": self._response_text(response, where)}
            leftovers.append((rest, f"contents[{turn.index}]"))
            i += 1
            if len(answers) == len(calls):
                break
        for answer in tool_answers((call.id for call in calls), answers):  # no images: a tool message each
            self.answered[answer["tool_call_id"]] = answer["content"]
            self.messages.append(answer)
        for rest, where in leftovers:
            self._user(rest, where)
        return i

    def _response_id(self, response: Any, by_name: dict[str, list[str]], answers: dict, where: str) -> str | None:
        """The id of the call (of the model turn just before) that a functionResponse answers, or None."""
        if not isinstance(response, dict):
            raise RequestError(f"{where}: an object is required", param=where)
        call_id = response.get("id")
        if isinstance(call_id, str) and any(call_id in ids for ids in by_name.values()):
            return None if call_id in answers else call_id
        name = response.get("name")
        if isinstance(name, str) and (call_id is None or call_id not in self.answered):
            # No id (an older client) or an id we never saw: the first unanswered call of that name. An id answered
            # earlier is a repeat (Gemini CLI on --resume), never an answer to a later call.
            for candidate in by_name.get(name, ()):
                if candidate not in answers:
                    return candidate
        return None

    @staticmethod
    def _response_text(response: dict, where: str) -> str:
        """A functionResponse's `response` → the tool message text. Gemini CLI wraps a tool's output as
        {"output": "..."} (or {"error": "..."}): a lone string field is sent as the text itself."""
        value = response.get("response")
        parts = [p for p in (response.get("parts") or []) if isinstance(p, dict)]
        if isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), str):
            key, text = next(iter(value.items()))
            text = f"[tool error] {text}" if key == "error" else text
        elif value is None:
            text = ""
        else:
            text = dumps_str(value)
        for part in parts:  # multimodal function responses (inlineData): text only in a tool message
            text += "\n" + (IMAGE_PLACEHOLDER if "inlineData" in part or "inline_data" in part else FILE_PLACEHOLDER)
        return text

    # ---- user turns --------------------------------------------------------------------------------------------
    def _user(self, parts: list[dict], where: str) -> None:
        out: list[dict] = []
        for j, part in enumerate(parts):
            pwhere = f"{where}.parts[{j}]"
            if part.get("thought") is True:
                continue
            response = _field(part, "functionResponse", "function_response")
            if response is not None:
                # A response to no call right before it: user text, never a bare `tool` message (a 400 at DeepSeek).
                call_id = response.get("id") if isinstance(response, dict) else None
                text = self._response_text(response, pwhere) if isinstance(response, dict) else ""
                if isinstance(call_id, str) and self.answered.get(call_id) == text:
                    continue  # already answered with the same output (Gemini CLI resends responses on --resume)
                label = call_id or (response.get("name") if isinstance(response, dict) else "") or "?"
                out.append({"type": "text", "text": stray_output_text(label, text)})
            elif isinstance(part.get("text"), str):
                out.append({"type": "text", "text": part["text"]})
            elif _field(part, "functionCall", "function_call") is not None:
                raise RequestError(f"{pwhere}.functionCall: only a model turn may call functions", param=pwhere)
            else:
                media = _media_part(part, self.model)
                if media is not None:
                    out.append(media)
                else:
                    other = _other_part_text(part, pwhere, self.model)
                    if other is not None:
                        out.append({"type": "text", "text": other})
        if out:
            self.messages.append(user_message(out))


def _parts(parts: Any, where: str) -> list[dict]:
    if parts is None:
        return []
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise RequestError(f"{where}: an array of Part objects is required", param=where)
    return parts


def _media_part(part: dict, model: ModelConfig) -> dict | None:
    """inlineData / fileData with an image MIME type → an image_url part, when the model takes images."""
    inline = _field(part, "inlineData", "inline_data")
    if isinstance(inline, dict):
        mime = _field(inline, "mimeType", "mime_type") or ""
        data = inline.get("data")
        if model.images and isinstance(mime, str) and mime.startswith("image/") and isinstance(data, str):
            return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}
        return None
    file_data = _field(part, "fileData", "file_data")
    if isinstance(file_data, dict):
        mime = _field(file_data, "mimeType", "mime_type") or ""
        uri = _field(file_data, "fileUri", "file_uri")
        if model.images and isinstance(mime, str) and mime.startswith("image/") and isinstance(uri, str) \
                and uri.startswith(("http://", "https://")):
            return {"type": "image_url", "image_url": {"url": uri}}
    return None


def _other_part_text(part: dict, where: str, model: ModelConfig) -> str | None:
    """What the model reads for a part that is neither text nor a function call/response."""
    inline = _field(part, "inlineData", "inline_data")
    if isinstance(inline, dict):
        mime = _field(inline, "mimeType", "mime_type") or ""
        return IMAGE_PLACEHOLDER if str(mime).startswith("image/") else f"[{mime or 'binary'} data omitted: this " \
                                                                         f"model does not read it]"
    file_data = _field(part, "fileData", "file_data")
    if isinstance(file_data, dict):
        uri = _field(file_data, "fileUri", "file_uri") or ""
        mime = _field(file_data, "mimeType", "mime_type") or "file"
        return f"[{mime} file omitted: {uri}]" if uri else FILE_PLACEHOLDER
    code = _field(part, "executableCode", "executable_code")
    if isinstance(code, dict):
        return f"```{str(code.get('language', '')).lower()}\n{code.get('code', '')}\n```"
    result = _field(part, "codeExecutionResult", "code_execution_result")
    if isinstance(result, dict):
        return f"[code execution {result.get('outcome', '')}]\n{result.get('output', '')}"
    if "thoughtSignature" in part or "thought_signature" in part:
        return None  # a bare signature part (Gemini sends those at the end of a turn): nothing to read
    if not part or set(part) <= {"videoMetadata", "video_metadata", "mediaResolution", "media_resolution"}:
        return None
    raise RequestError(f"{where}: unsupported part ({', '.join(sorted(part))})", param=where)

