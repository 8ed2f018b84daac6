"""Responses tools ↔ Chat Completions function tools.

Chat upstreams know only function tools, so:
- a custom (freeform) tool such as Codex's `apply_patch` becomes a function with one string argument, `input`;
  its grammar is stated in the description so the model still writes a valid patch;
- a `namespace` tool is flattened into `<namespace>__<name>` functions;
- hosted tools the upstream cannot run (`web_search`, `file_search`, ...) are dropped and reported.
The ToolMap remembers each upstream name's origin so calls coming back are restored to what the client sent.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import RequestError

CUSTOM_INPUT_ARG = "input"
MAX_NAME_LENGTH = 64
_VALID_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")
NAMESPACE_SEPARATOR = "__"
_CUSTOM_PARAMETERS_DESCRIPTION = "The complete raw input for this tool, exactly as the tool expects it."


@dataclass(frozen=True)
class ToolOrigin:
    kind: str  # "function" | "custom"
    name: str  # the name the client knows
    namespace: str | None = None


@dataclass
class ToolMap:
    by_upstream_name: dict[str, ToolOrigin] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)  # hosted tools the upstream cannot run

    def origin(self, upstream_name: str) -> ToolOrigin:
        # A name the model invented is passed through as a plain function call: the client reports it.
        return self.by_upstream_name.get(upstream_name) or ToolOrigin("function", upstream_name)

    def upstream_name(self, name: str, namespace: str | None = None) -> str:
        return flat_tool_name(name, namespace)


def flat_tool_name(name: str, namespace: str | None = None) -> str:
    """The upstream's name for a tool: namespaced tools are flattened to `<namespace>__<name>`.

    Chat Completions upstreams accept only `[A-Za-z0-9_-]{1,64}`; a longer name (a long MCP server + tool name) or
    one with other characters is cleaned and shortened, with a digest of the original so two names never meet.
    Deterministic: the same tool gets the same name in every request, and the ToolMap maps it back.
    """
    flat = f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name
    if _VALID_NAME.fullmatch(flat):
        return flat
    digest = hashlib.sha256(flat.encode()).hexdigest()[:8]
    cleaned = _INVALID_NAME_CHARS.sub("_", flat)
    return f"{cleaned[:MAX_NAME_LENGTH - len(digest) - 1]}_{digest}"


def translate_tools(tools: Any, profile) -> tuple[list[dict], ToolMap]:
    if tools is None:
        return [], ToolMap()
    if not isinstance(tools, list):
        raise RequestError("`tools` must be an array", param="tools")
    out: list[dict] = []
    tool_map = ToolMap()
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise RequestError(f"tools[{index}] must be an object with a `type`", param=f"tools[{index}]")
        _add_tool(tool, None, out, tool_map, profile, f"tools[{index}]")
    return out, tool_map


def _add_tool(tool: dict, namespace: str | None, out: list, tool_map: ToolMap, profile, where: str) -> None:
    kind = tool["type"]
    if kind == "namespace":
        ns = _required_name(tool, where)
        ns_description = tool.get("description")
        for j, inner in enumerate(tool.get("tools") or []):
            if isinstance(inner, dict) and ns_description and inner.get("description"):
                inner = {**inner, "description": f"[{ns}] {inner['description']}"}
            _add_tool(inner, ns, out, tool_map, profile, f"{where}.tools[{j}]")
        return
    if kind not in ("function", "custom"):
        tool_map.dropped.append(kind if namespace is None else f"{namespace}.{kind}")
        return
    name = _required_name(tool, where)
    upstream_name = tool_map.upstream_name(name, namespace)
    if kind == "function":
        out.append(profile.function_tool(upstream_name, tool.get("description"), tool.get("parameters"),
                                         tool.get("strict")))
    else:
        out.append(profile.function_tool(upstream_name, _custom_description(tool), _custom_parameters(), None))
    tool_map.by_upstream_name[upstream_name] = ToolOrigin(kind, name, namespace)


def _required_name(tool: dict, where: str) -> str:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise RequestError(f"{where}.name is required", param=f"{where}.name")
    return name


def _custom_description(tool: dict) -> str:
    description = tool.get("description") or ""
    fmt = tool.get("format") or {}
    if fmt.get("type") == "grammar" and fmt.get("definition"):
        syntax = fmt.get("syntax", "lark")
        description += (
            f"\n\nPass the raw tool input in the `{CUSTOM_INPUT_ARG}` argument. "
            f"It must match this {syntax} grammar:\n```\n{fmt['definition']}\n```"
        )
    else:
        description += f"\n\nPass the raw tool input (free-form text) in the `{CUSTOM_INPUT_ARG}` argument."
    return description.strip()


def _custom_parameters() -> dict:
    return {
        "type": "object",
        "properties": {CUSTOM_INPUT_ARG: {"type": "string", "description": _CUSTOM_PARAMETERS_DESCRIPTION}},
        "required": [CUSTOM_INPUT_ARG],
        "additionalProperties": False,
    }


def offer_tools(chat: Any, tools: list[dict], choice: Any = None, parallel: bool | None = None) -> None:
    """Put the translated `tools` into the Chat request `chat`, with `tool_choice` (None: none sent, the upstream's
    default) and `parallel_tool_calls` (None: none sent). Without tools neither is sent: both mean nothing then,
    and a body without them is the same bytes as one that never had them."""
    if not tools:
        return
    chat["tools"] = tools
    if choice is not None:
        chat["tool_choice"] = choice
    if parallel is not None:
        chat["parallel_tool_calls"] = parallel


def translate_tool_choice(choice: Any, tool_map: ToolMap) -> Any:
    """Responses tool_choice → Chat tool_choice. None means: send no tool_choice."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind in ("function", "custom") and isinstance(choice.get("name"), str):
            name = tool_map.upstream_name(choice["name"], choice.get("namespace"))
            if name not in tool_map.by_upstream_name:
                raise RequestError(f"tool_choice names a tool that is not in `tools`: {choice['name']}",
                                   param="tool_choice")
            return {"type": "function", "function": {"name": name}}
        if kind == "allowed_tools":
            return "required" if choice.get("mode") == "required" else "auto"
        # A hosted tool (web_search, ...) was dropped: let the model choose among what is left.
        return "auto"
    raise RequestError("`tool_choice` must be a string or an object", param="tool_choice")
