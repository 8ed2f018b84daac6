"""Scenario (i)'s door scripts: each client's session in its own protocol, and the same conversation in ideal Chat
form (the direct baseline; the Messages pass-through's is the ideal Anthropic form). The driver, the scripted model
and the counting are in ``cache_session.py``.

Every script is shaped like its client's captured requests (tests/fixtures/<client>/, redacted prose put back at
its length): the system prompt, the tools and the request fields as the client sends them, the history kept and
replayed the way the client keeps it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import requests

from .cache_session import (
    USER_TASKS,
    ChatSession,
    ChatStart,
    Door,
    ModelTurn,
    ToolNames,
    check,
    patch_text,
    sse_data,
)
from .scenarios import FIXTURE, _expand

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


def fixture(client: str, name: str) -> dict:
    with open(os.path.join(FIXTURES, client, name), encoding="utf-8") as handle:
        return _expand(json.load(handle))


def function_tool(name: str, description: str, parameters: dict) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


def _edit_args(call: int) -> dict:
    return {"file_path": f"src/module_{call}.py", "old_string": f"def old_{call}():\n    pass\n",
            "new_string": f"def new_{call}(value):\n    return value * {call}\n"}


# ---- Codex CLI through the Responses door ------------------------------------------------------------------------


def codex_start() -> tuple[list[dict], list[dict], dict]:
    """The leading items (developer prompt, skills, environment), Codex's tools and the request's other fields."""
    with open(FIXTURE, encoding="utf-8") as handle:
        base = _expand(json.load(handle))
    fields = {k: base[k] for k in ("model", "tool_choice", "parallel_tool_calls", "reasoning", "store", "include",
                                   "prompt_cache_key") if k in base}
    return base["input"][:3], base["tools"], fields


def ideal_codex_tools(codex_tools: list[dict]) -> list[dict]:
    """Codex's tools as a hand-written Chat client would declare them: functions as they are, a freeform tool as a
    function with one string argument, namespaces flattened, hosted tools (web_search) left out."""
    out = []
    for tool in codex_tools:
        if tool.get("type") == "function":
            out.append(function_tool(tool["name"], tool.get("description", ""), tool.get("parameters") or {}))
        elif tool.get("type") == "custom":
            out.append(function_tool(tool["name"], tool.get("description", ""),
                                     {"type": "object", "properties": {"input": {"type": "string"}},
                                      "required": ["input"]}))
        elif tool.get("type") == "namespace":
            for inner in tool.get("tools") or []:
                if inner.get("type") == "function":
                    out.append(function_tool(f"{tool['name']}__{inner['name']}", inner.get("description", ""),
                                             inner.get("parameters") or {}))
    return out


def codex_chat_start() -> ChatStart:
    head, codex_tools, fields = codex_start()
    messages = [{"role": "system" if item.get("role") == "developer" else "user",
                 "content": "\n".join(part.get("text", "") for part in item.get("content") or [])} for item in head]
    return ChatStart(messages, ideal_codex_tools(codex_tools), fields["model"])


class CodexSession:
    """Codex: the whole history as Responses items every call, reasoning replayed through `encrypted_content`, a
    developer message as the steer; `codex exec resume` is a new process (the proxy restarted too) that gives the
    leading messages new ids and sends the history again."""

    def __init__(self, url: Callable[[], str], restart: Callable[[], None]):
        self.url, self.restart = url, restart
        self.head, self.tools, self.fields = codex_start()
        self.session_id = "01a2008d-bench-cache-session"
        self.http = requests.Session()
        self.history: list[dict] = []
        self.kinds: dict[str, str] = {}  # call id -> the item type of its output

    def begin(self, task: str) -> None:
        self.history = [*self.head, _codex_user(task)]

    def steer(self, text: str) -> None:
        self.history.append({"type": "message", "role": "developer", "content": [{"type": "input_text",
                                                                                  "text": text}]})

    def resume(self) -> None:
        self.restart()
        self.http = requests.Session()
        self.session_id = "01a2008d-bench-cache-resumed"
        for index, item in enumerate(self.history[:3]):
            self.history[index] = dict(item, id=f"msg_resumed_{index}")

    def switch_model(self, back: bool) -> None:
        raise NotImplementedError("Codex's session has no model switch")

    def side_calls(self, call: int) -> None:
        return None

    def call(self, call: int) -> ModelTurn:
        body = dict(self.fields, stream=True, input=self.history, tools=self.tools)
        with self.http.post(self.url() + "/v1/responses", json=body, stream=True, timeout=60,
                            headers={"Authorization": "Bearer sk-bench", "session-id": self.session_id,
                                     "Accept": "text/event-stream"}) as response:
            check(response, call)
            items = []
            for event, data in sse_data(response):
                kind = data.get("type", event)
                if kind == "response.output_item.done":
                    items.append(data["item"])
                elif kind in ("response.failed", "error"):
                    raise RuntimeError(f"call {call}: the proxy failed the request: {json.dumps(data)[:300]}")
        self.history.extend(items)
        turn = ModelTurn()
        for item in items:
            if item.get("type") in ("function_call", "custom_tool_call"):
                self.kinds[item["call_id"]] = item["type"] + "_output"
                turn.calls.append((item["call_id"], item["name"]))
        return turn

    def tool_results(self, results: list[tuple[str, str, str]]) -> None:
        self.history += [{"type": self.kinds[call_id], "call_id": call_id, "output": output}
                         for call_id, _, output in results]

    def user(self, text: str) -> None:
        self.history.append(_codex_user(text))


def _codex_user(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


CODEX = Door(
    key="responses", title="Codex CLI → Responses door", notes="developer steer, resume with the proxy restarted",
    tools=ToolNames("exec_command", lambda call: {"cmd": f"ls -la src && cat src/module_{call}.py"},
                    "apply_patch", lambda call: {"input": patch_text(call)}),
    steer_text=("<steer>The user adds: also keep CHANGELOG.md up to date with every file you touch, and prefer small "
                "commits.</steer>"),
    chat_start=codex_chat_start, proxy_session=CodexSession)


# ---- Claude Code through the Messages door -----------------------------------------------------------------------

CLAUDE_MAIN, CLAUDE_SWITCHED = "claude-opus-4-8", "claude-sonnet-4-6"
# The bench maps the /model switch's target to the other DeepSeek model (the defaults map opus and sonnet alike).
CLAUDE_CONFIG = '[claude.model_map]\n"claude-sonnet-*" = "deepseek-v4-flash"\n'
CLAUDE_SESSIONS = (("7c1e54a0-0b7e-4d52-9a55-1f1d2c3b4a01", "4e2"), ("b3f09e12-6c1d-4f8e-8d2a-5a6b7c8d9e02", "9a7"))


def claude_parts() -> dict:
    """What every Claude Code request of the session is made of, from the captured turn-3 request."""
    base = fixture("claude-code", "p_default_turn3_parallel_tools.json")
    title = fixture("claude-code", "interactive_title_structured_output.json")
    body = base["body"]
    reminder = body["messages"][0]["content"][0]["text"]
    return {"system": body["system"][1:], "tools": body["tools"], "context": body["messages"][1]["content"],
            "reminder": f"<system-reminder>\n{reminder[:-40]}\n</system-reminder>", "headers": base["headers"],
            "fields": {k: body[k] for k in ("max_tokens", "thinking", "context_management", "output_config")},
            "title_system": title["body"]["system"][1:], "title_fields": {
                k: title["body"][k] for k in ("max_tokens", "thinking", "output_config")}}


TODO_REMINDER = ("<system-reminder>\nThe task tools haven't been used recently. If you are working on tasks that would "
                 "benefit from tracking progress, consider using TaskCreate. Ignore this if not applicable. Make "
                 "sure that you NEVER mention this reminder to the user\n</system-reminder>")


def billing_block(suffix: str, request: int) -> dict:
    """The billing header Claude Code puts first: its suffix per session, its `cch` nonce per request."""
    return {"type": "text", "text": f"x-anthropic-billing-header: cc_version=2.1.197.{suffix}; cc_entrypoint=cli; "
                                    f"cch={(request * 40503) % 0xFFFFF:05x};"}


def title_prompt(task: str) -> str:
    return (f"<session>\n{task}\n</session>\n\nWrite the title in the language the user wrote in, regardless of the "
            "language of the examples above.")


def claude_chat_start() -> ChatStart:
    parts = claude_parts()

    def title(call: int) -> list[dict] | None:
        if call != 1:
            return None
        return [{"role": "system", "content": "\n\n".join(b["text"] for b in parts["title_system"])},
                {"role": "user", "content": title_prompt(USER_TASKS[0])},
                {"role": "system", "content": 'Answer with one JSON object: {"title": string}.'}]

    return ChatStart([{"role": "system", "content": "\n\n".join(b["text"] for b in parts["system"])}],
                      [function_tool(t["name"], t.get("description", ""), t["input_schema"]) for t in parts["tools"]],
                      "deepseek-v4-pro", side_call=title,
                      opening=lambda task: [{"role": "user", "content": parts["reminder"] + "\n" + task},
                                            {"role": "system", "content": parts["context"]}],
                      prompt=lambda n, text: text if n % 2 else TODO_REMINDER + "\n" + text)


class ClaudeCodeSession:
    """Claude Code: the system blocks behind the billing header, the context as a `role: system` entry after the
    first user message, thinking blocks replayed with their signatures, tool_use / tool_result turns, a
    `<system-reminder>` on user turns, the `cache_control` marker on the newest block only (user text is a string
    until it is the newest message), the steer as a mid-conversation system entry, /model to the other model and
    back, the session-title side call, and a resume: a new session id (new billing suffix), the proxy restarted, the
    transcript sent again."""

    path = "/v1/messages?beta=true"
    models = (CLAUDE_MAIN, CLAUDE_SWITCHED)
    api_key = "sk-bench"
    billing = True  # the billing block first in `system` (its cch a nonce per request)

    def __init__(self, url: Callable[[], str], restart: Callable[[], None]):
        self.url, self.restart = url, restart
        self.parts = claude_parts()
        self.session, self.suffix = CLAUDE_SESSIONS[0]
        self.model = self.models[0]
        self.messages: list[dict] = []
        self.requests = self.prompts = 0
        self.http = requests.Session()

    def begin(self, task: str) -> None:
        self.messages = [{"role": "user", "content": [{"type": "text", "text": self.parts["reminder"]},
                                                      {"type": "text", "text": task}]},
                         {"role": "system", "content": self.parts["context"]}]

    def steer(self, text: str) -> None:
        self.messages.append({"role": "system", "content": text})

    def resume(self) -> None:
        self.restart()
        self.http = requests.Session()
        self.session, self.suffix = CLAUDE_SESSIONS[1]

    def switch_model(self, back: bool) -> None:
        self.model = self.models[0 if back else 1]

    def system(self, blocks: list[dict]) -> list[dict]:
        return [billing_block(self.suffix, self.requests), *blocks] if self.billing else list(blocks)

    def side_calls(self, call: int) -> None:
        if call == 1:
            body = dict(self.parts["title_fields"], model=self.model, stream=True, tools=[],
                        system=self.system(self.parts["title_system"]),
                        messages=[{"role": "user", "content": [{"type": "text", "text": title_prompt(USER_TASKS[0])}]}])
            self.post(body, call)

    def call(self, call: int) -> ModelTurn:
        body = dict(self.parts["fields"], model=self.model, stream=True, tools=self.parts["tools"],
                    system=self.system(self.parts["system"]),
                    messages=with_cache_marker(self.messages),
                    metadata={"user_id": json.dumps({"device_id": "d21f7f56a3c881ba", "account_uuid": "",
                                                     "session_id": self.session}, separators=(",", ":"))})
        content = self.post(body, call)
        self.messages.append({"role": "assistant", "content": content})
        return ModelTurn([(b["id"], b["name"]) for b in content if b["type"] == "tool_use"])

    def tool_results(self, results: list[tuple[str, str, str]]) -> None:
        self.messages.append({"role": "user", "content": [
            {"tool_use_id": call_id, "type": "tool_result", "content": output, "is_error": False}
            for call_id, _, output in results]})

    def user(self, text: str) -> None:
        """A prompt: the text alone, or after a `<system-reminder>` block (every other prompt here)."""
        self.prompts += 1
        self.messages.append({"role": "user", "content": self.prompt_content(
            [text] if self.prompts % 2 else [TODO_REMINDER, text])})

    def prompt_content(self, texts: list[str]) -> str | list[dict]:
        """Claude Code keeps a lone text as a string (`with_cache_marker` makes it a block while it is newest)."""
        return texts[0] if len(texts) == 1 else [{"type": "text", "text": text} for text in texts]

    def post(self, body: dict, call: int) -> list[dict]:
        self.requests += 1
        headers = {k: v for k, v in self.parts["headers"].items() if k.lower().startswith(("anthropic-", "x-app"))}
        headers.update({"x-api-key": self.api_key, "X-Claude-Code-Session-Id": self.session})
        with self.http.post(self.url() + self.path, json=body, headers=headers, stream=True,
                            timeout=60) as response:
            check(response, call)
            return anthropic_content(response, call)


class IdealAnthropicSession(ClaudeCodeSession):
    """The Claude Code conversation as the ideal Anthropic client sends it straight to DeepSeek's Anthropic endpoint
    (the pass-through mode's direct baseline): DeepSeek's model names, no billing block (so no per-request nonce in
    the prompt), and each message in one form for good (a prompt's text as a block from its first send on, not a
    string once it is no longer the newest message), so each prompt's messages are the last prompt's plus the new
    ones. The rest as Claude Code sends it: the same system and tool blocks, the `cache_control` marker on the newest
    block (request metadata: the upstream does not render it), the title side call, the model switch, the resume.
    `billing=True` keeps Claude Code's billing block: the control (a nonce atop the system prompt)."""

    path = "/anthropic/v1/messages"
    models = ("deepseek-v4-pro", "deepseek-v4-flash")

    def __init__(self, base_url: str, api_key: str, *, billing: bool = False):
        super().__init__(lambda: base_url, lambda: None)
        self.api_key, self.billing = api_key, billing

    def prompt_content(self, texts: list[str]) -> list[dict]:
        return [{"type": "text", "text": text} for text in texts]


def with_cache_marker(messages: list[dict]) -> list[dict]:
    """The history as Claude Code sends it: the newest user message (system entries after it stay as they are) as
    blocks, its last block marked."""
    out = list(messages)
    newest = max(i for i, m in enumerate(out) if m["role"] == "user")
    last = out[newest]
    blocks = last["content"] if isinstance(last["content"], list) else [{"type": "text", "text": last["content"]}]
    out[newest] = dict(last, content=[*blocks[:-1], dict(blocks[-1], cache_control={"type": "ephemeral"})])
    return out


def anthropic_content(response: requests.Response, call: int) -> list[dict]:
    """The content blocks a Messages stream adds up to (what Claude Code keeps in its transcript)."""
    blocks: list[dict] = []
    partial_json: dict[int, str] = {}
    for _, data in sse_data(response):
        kind = data.get("type")
        if kind == "content_block_start":
            blocks.append(dict(data["content_block"]))
        elif kind == "content_block_delta":
            block, delta = blocks[data["index"]], data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            elif delta["type"] == "input_json_delta":
                partial_json[data["index"]] = partial_json.get(data["index"], "") + delta["partial_json"]
        elif kind == "error":
            raise RuntimeError(f"call {call}: the proxy failed the request: {json.dumps(data)[:300]}")
    for index, text in partial_json.items():
        blocks[index]["input"] = json.loads(text) if text else {}
    return blocks


CLAUDE_CODE = Door(
    key="messages", title="Claude Code → Messages door",
    notes="billing header with a per-request cch, /model to the other DeepSeek model and back, a title side call, "
          "a system-entry steer, resume with a new session id and the proxy restarted",
    tools=ToolNames("Bash", lambda call: {"command": f"ls -la src && cat src/module_{call}.py",
                                          "description": f"Show module {call}"},
                    "Edit", _edit_args),
    steer_text="The user changed the plan: also keep CHANGELOG.md up to date with every file you touch.",
    chat_start=claude_chat_start, proxy_session=ClaudeCodeSession, switches=True, proxy_config=CLAUDE_CONFIG)


# ---- Claude Code through the Messages door's pass-through mode (DeepSeek's own Anthropic endpoint) -------------------

# Both DeepSeek models the session uses (the /model switch goes to the other one) go to the Anthropic endpoint.
PASSTHROUGH_CONFIG = CLAUDE_CONFIG + "".join(f'[models.{model}]\nmessages_upstream = "anthropic"\n'
                                             for model in IdealAnthropicSession.models)

CLAUDE_CODE_PASSTHROUGH = dataclasses.replace(
    CLAUDE_CODE, key="messages-passthrough", title="Claude Code → Messages door, pass-through mode",
    notes=CLAUDE_CODE.notes + "; messages_upstream = \"anthropic\", the direct baseline the ideal Anthropic "
                              "requests sent to the upstream's Anthropic endpoint",
    proxy_config=PASSTHROUGH_CONFIG,
    direct=lambda fake, nonce: IdealAnthropicSession(fake.base_url, fake.api_key, billing=nonce))


# ---- Gemini CLI through the Gemini door --------------------------------------------------------------------------


GEMINI_SKIP = "skip_thought_signature_validator"


def gemini_parts() -> dict:
    base = fixture("gemini-cli", "stream_turn3_parallel_function_responses.json")
    body = base["body"]
    return {"path": base["path"], "fields": {k: body[k] for k in ("systemInstruction", "tools", "generationConfig")},
            "context": body["contents"][0]["parts"][0]["text"]}


def gemini_chat_start() -> ChatStart:
    parts = gemini_parts()
    declarations = parts["fields"]["tools"][0]["functionDeclarations"]
    return ChatStart([{"role": "system", "content": parts["fields"]["systemInstruction"]["parts"][0]["text"]}],
                      [function_tool(d["name"], d.get("description", ""), d["parametersJsonSchema"])
                       for d in declarations], "deepseek-v4-pro", steer_role="user",
                     opening=lambda task: [{"role": "user", "content": parts["context"] + "\n" + task}])


class GeminiCliSession:
    """Gemini CLI: systemInstruction, functionDeclarations, contents with functionCall / functionResponse parts; the
    model's parts kept without the thought parts (their thoughtSignature stays on the first non-thought part), the
    steer as a user turn with extra context; `--resume` is a new process that sends the history again with every
    earlier thoughtSignature replaced by Gemini CLI's `skip_thought_signature_validator` (CLIENTS.md), so the
    reasoning comes from the proxy's own cache (the proxy is not restarted: its reasoning cache is in memory)."""

    def __init__(self, url: Callable[[], str], restart: Callable[[], None]):
        self.url = url
        self.parts = gemini_parts()
        self.contents: list[dict] = []
        self.http = requests.Session()

    def begin(self, task: str) -> None:
        self.contents = [{"role": "user", "parts": [{"text": self.parts["context"]}, {"text": task}]}]

    def steer(self, text: str) -> None:
        self.user(text)

    def resume(self) -> None:
        self.http = requests.Session()
        for content in self.contents:
            for part in content["parts"]:
                if "thoughtSignature" in part:
                    part["thoughtSignature"] = GEMINI_SKIP

    def switch_model(self, back: bool) -> None:
        raise NotImplementedError("Gemini CLI's session has no model switch")

    def side_calls(self, call: int) -> None:
        return None

    def call(self, call: int) -> ModelTurn:
        body = dict(self.parts["fields"], contents=self.contents)
        with self.http.post(self.url() + self.parts["path"] + "?alt=sse", json=body, stream=True, timeout=60,
                            headers={"x-goog-api-key": "sk-bench"}) as response:
            check(response, call)
            parts = gemini_model_parts(response, call)
        self.contents.append({"role": "model", "parts": parts})
        return ModelTurn([(p["functionCall"]["id"], p["functionCall"]["name"]) for p in parts if "functionCall" in p])

    def tool_results(self, results: list[tuple[str, str, str]]) -> None:
        self.contents.append({"role": "user", "parts": [
            {"functionResponse": {"name": name, "response": {"output": output}, "id": call_id}}
            for call_id, name, output in results]})

    def user(self, text: str) -> None:
        self.contents.append({"role": "user", "parts": [{"text": text}]})


def gemini_model_parts(response: requests.Response, call: int) -> list[dict]:
    """The model's parts as Gemini CLI keeps them: thought parts dropped, adjacent text parts joined."""
    parts: list[dict] = []
    for _, chunk in sse_data(response):
        if "error" in chunk:
            raise RuntimeError(f"call {call}: the proxy failed the request: {json.dumps(chunk)[:300]}")
        for candidate in chunk.get("candidates") or []:
            for part in (candidate.get("content") or {}).get("parts") or []:
                if part.get("thought"):
                    continue
                last = parts[-1] if parts else None
                if "text" in part and last is not None and "text" in last:
                    last["text"] += part["text"]
                    if "thoughtSignature" in part and "thoughtSignature" not in last:
                        last["thoughtSignature"] = part["thoughtSignature"]
                else:
                    parts.append(dict(part))
    return parts


GEMINI_CLI = Door(
    key="gemini", title="Gemini CLI → Gemini door",
    notes="steer as a user turn, resume with every earlier thoughtSignature replaced by the skip sentinel",
    tools=ToolNames("run_shell_command", lambda call: {"command": f"ls -la src && cat src/module_{call}.py",
                                                       "description": f"Show module {call}"},
                    "replace", lambda call: dict(_edit_args(call), instruction=f"Rename old_{call} to new_{call}")),
    steer_text="<extra_context>The user adds: also keep CHANGELOG.md up to date with every file you touch."
               "</extra_context>",
    chat_start=gemini_chat_start, proxy_session=GeminiCliSession)


# ---- an editor / SDK agent loop through the Chat Completions door ------------------------------------------------


def chat_door_session(url: Callable[[], str], restart: Callable[[], None]) -> ChatSession:
    """An agent loop on the openai SDK: streamed, tools, reasoning_content replayed on every assistant turn, a system
    message mid-conversation, and a resume (a new process sends the conversation again; the proxy restarted)."""
    return ChatSession(codex_chat_start(), lambda: url() + "/v1", stream=True, restart=restart, api_key="sk-bench")


CHAT = Door(
    key="chat", title="editor agent loop → Chat Completions door",
    notes="Codex's prompt and tools as Chat, a mid-conversation system message, resume with the proxy restarted",
    tools=CODEX.tools, steer_text="The user adds: also keep CHANGELOG.md up to date with every file you touch.",
    chat_start=codex_chat_start, proxy_session=chat_door_session)


DOORS: list[Door] = [CODEX, CLAUDE_CODE, CLAUDE_CODE_PASSTHROUGH, GEMINI_CLI, CHAT]
