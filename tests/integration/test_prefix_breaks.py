"""Prefix-break detection on the real server (gunicorn + gevent, 2 workers, the default SQLite store as the detector's
memory, so a conversation's turns land on either worker): a 3-turn tool loop through every front door, where the
client reorders its tool list on turn 3 → one break at "tools" in the log and in /metrics; the same loop unchanged
(with Claude Code's per-request billing nonce, reasoning replayed as each door's client does) → no break; a system
message moved to the front, and an edited tool result → "system" and "message N".

Each turn's reply is the proxy's own (the fake DeepSeek's scripted tool calls), put back into the next request the
way the door's client does: Chat's assistant message with its reasoning_content, Responses' output items (reasoning
with encrypted_content), Anthropic content blocks (thinking with its signature), Gemini model parts (with their
thoughtSignature)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from deepseek_proxy.core.prefix import first_messages_key
from tests.conftest import ProxyProcess
from tests.fakes.fake_deepseek import Reply

CONFIG = """
[models.deepseek-v4-pro]
[models.deepseek-v4-flash]
[models.passthrough]
upstream_model = "deepseek-v4-pro"
messages_upstream = "anthropic"
"""
SYSTEM = "You are a coding agent. Work in small, verified steps and report what changed. " * 40  # ~3.4 KB
TOOLS = [
    {"name": "Bash", "description": "Run a shell command. " * 30,
     "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}},
    {"name": "Read", "description": "Read a file. " * 30,
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}},
    {"name": "Edit", "description": "Replace text in a file. " * 30,
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "old": {"type": "string"},
                                                     "new": {"type": "string"}}}},
]
TASK = "Find the failing test in this repository and fix it. " * 10
TIMEOUT = 30


@pytest.fixture(scope="module")
def proxy(fake_deepseek, tmp_path_factory):
    server = ProxyProcess(tmp_path_factory.mktemp("prefix"), upstream_url=fake_deepseek.base_url, config_text=CONFIG,
                          workers=2)
    yield server
    server.stop()


# ---- /metrics and the log ---------------------------------------------------------------------------------------


def prefix_metrics(proxy) -> tuple[dict, dict]:
    """(checks by door, breaks by (door, what)) as /metrics shows them (both workers summed)."""
    text = requests.get(proxy.base_url + "/metrics", timeout=TIMEOUT).text
    checks: dict = {}
    breaks: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "deepseek_proxy_prefix_checks_total":
                checks[sample.labels["door"]] = sample.value
            elif sample.name == "deepseek_proxy_prefix_breaks_total":
                breaks[(sample.labels["door"], sample.labels["what"])] = sample.value
    return checks, breaks


def settled(proxy, door: str, checks_before: float, turns: int) -> tuple[dict, dict]:
    """The metrics once the detector has compared all `turns` prompts (it runs in a greenlet after each reply)."""
    deadline = time.monotonic() + 15
    while True:
        checks, breaks = prefix_metrics(proxy)
        if checks.get(door, 0) >= checks_before + turns or time.monotonic() > deadline:
            assert checks.get(door, 0) == checks_before + turns, checks
            return checks, breaks
        time.sleep(0.05)


def break_lines(proxy, conversation: str) -> list[str]:
    return [line for line in proxy.log().splitlines() if "prefix break" in line and conversation in line]


# ---- one client per door: a request from the neutral history, the reply put back as that client does ------------


class Door:
    name: str

    def __init__(self, proxy, conversation: str):
        self.proxy, self.conversation = proxy, conversation
        self.turn = 0
        # Each conversation's own task: Chat and Gemini clients name no conversation, and the proxy tells theirs
        # apart by the first user messages (two conversations that open with the same words share a key).
        self.task = f"{conversation}: {TASK}"

    def send(self, tools: list[dict]) -> None:
        """The next turn with `tools` in the given order; the reply goes into the history, its tool calls answered."""
        self.turn += 1
        response = requests.post(self.proxy.base_url + self.path(), json=self.body(tools), timeout=TIMEOUT,
                                 headers=self.headers())
        assert response.status_code == 200, response.text
        self.take(response.json())

    def key(self, upstream) -> str:
        """The conversation key the proxy logs: the client's session, prefixed by the door."""
        return f"{self.name}:{self.conversation}"

    def path(self) -> str:
        raise NotImplementedError

    def headers(self) -> dict:
        return {}

    def body(self, tools: list[dict]) -> dict:
        raise NotImplementedError

    def take(self, reply: dict) -> None:
        raise NotImplementedError


def fallback_key(upstream) -> str:
    """A door whose client names no conversation (Chat, Gemini): a hash of the upstream request's first messages."""
    return first_messages_key(upstream.chat_requests[-1].body)


class ChatDoor(Door):
    name = "chat"
    key = staticmethod(fallback_key)  # type: ignore[assignment]

    def __init__(self, proxy, conversation: str):
        super().__init__(proxy, conversation)
        self.messages: list[dict] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": self.task}]

    def path(self) -> str:
        return "/v1/chat/completions"

    def body(self, tools: list[dict]) -> dict:
        return {"model": "deepseek-v4-pro", "messages": self.messages,
                "tools": [{"type": "function", "function": tool} for tool in tools]}

    def take(self, reply: dict) -> None:
        message = reply["choices"][0]["message"]
        self.messages.append(message)
        for call in message.get("tool_calls") or []:
            self.messages.append({"role": "tool", "tool_call_id": call["id"], "content": f"output of {call['id']}"})


class ResponsesDoor(Door):
    name = "responses"

    def __init__(self, proxy, conversation: str):
        super().__init__(proxy, conversation)
        self.input: list[dict] = [{"type": "message", "role": "user", "content": [{"type": "input_text",
                                                                                  "text": self.task}]}]

    def path(self) -> str:
        return "/v1/responses"

    def body(self, tools: list[dict]) -> dict:
        return {"model": "deepseek-v4-pro", "instructions": SYSTEM, "input": self.input, "store": False,
                "include": ["reasoning.encrypted_content"], "prompt_cache_key": self.conversation,
                "tools": [{"type": "function", **tool} for tool in tools]}

    def take(self, reply: dict) -> None:
        for item in reply["output"]:
            self.input.append(item)
            if item["type"] == "function_call":
                self.input.append({"type": "function_call_output", "call_id": item["call_id"],
                                   "output": f"output of {item['call_id']}"})


class StreamedResponsesDoor(ResponsesDoor):
    def send(self, tools: list[dict]) -> None:
        self.turn += 1
        body = {**self.body(tools), "stream": True}
        with requests.post(self.proxy.base_url + self.path(), json=body, timeout=TIMEOUT, stream=True) as response:
            assert response.status_code == 200, response.text
            events = [json.loads(line[6:]) for line in response.iter_lines(decode_unicode=True)
                      if line.startswith("data: ")]
        assert events[-1]["type"] == "response.completed", events[-1]
        self.take(events[-1]["response"])


class MessagesDoor(Door):
    """Claude Code's shape: the billing block first (its `cch` nonce new on every request), the session in
    metadata.user_id, thinking blocks replayed with their signatures, a `cache_control` marker on the system prompt
    and one on the newest block, which moves every turn."""

    name = "messages"
    model = "deepseek-v4-pro"

    def __init__(self, proxy, conversation: str):
        super().__init__(proxy, conversation)
        self.messages: list[dict] = [{"role": "user", "content": [{"type": "text", "text": self.task}]}]

    def path(self) -> str:
        return "/v1/messages?beta=true"

    def headers(self) -> dict:
        return {"anthropic-version": "2023-06-01"}

    def body(self, tools: list[dict]) -> dict:
        billing = f"x-anthropic-billing-header: cc_version=2.1.197.a1b; cc_entrypoint=cli; cch={uuid.uuid4().hex[:5]};"
        return {"model": self.model, "max_tokens": 4096, "thinking": {"type": "adaptive"},
                "system": [{"type": "text", "text": billing},
                           {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
                "metadata": {"user_id": json.dumps({"device_id": "d" * 64, "session_id": self.conversation})},
                "tools": [{"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}
                          for t in tools],
                "messages": self.messages[:-1] + [marked(self.messages[-1])]}

    def take(self, reply: dict) -> None:
        self.messages.append({"role": "assistant", "content": reply["content"]})
        results = [{"type": "tool_result", "tool_use_id": block["id"], "content": f"output of {block['id']}"}
                   for block in reply["content"] if block["type"] == "tool_use"]
        if results:
            self.messages.append({"role": "user", "content": results})


def marked(message: dict) -> dict:
    """The message with Claude Code's cache breakpoint on its last block."""
    *rest, last = message["content"]
    return {**message, "content": [*rest, {**last, "cache_control": {"type": "ephemeral"}}]}


class PassthroughDoor(MessagesDoor):
    name = "messages"
    model = "passthrough"


class GeminiDoor(Door):
    name = "gemini"
    key = staticmethod(fallback_key)  # type: ignore[assignment]

    def __init__(self, proxy, conversation: str):
        super().__init__(proxy, conversation)
        self.contents: list[dict] = [{"role": "user", "parts": [{"text": self.task}]}]

    def path(self) -> str:
        return "/v1beta/models/gemini-2.5-pro:generateContent"

    def headers(self) -> dict:
        return {"x-goog-api-key": "any-key"}

    def body(self, tools: list[dict]) -> dict:
        return {"contents": self.contents, "systemInstruction": {"parts": [{"text": SYSTEM}]},
                "tools": [{"functionDeclarations": [{"name": t["name"], "description": t["description"],
                                                     "parametersJsonSchema": t["parameters"]} for t in tools]}]}

    def take(self, reply: dict) -> None:
        content = reply["candidates"][0]["content"]
        self.contents.append(content)
        calls = [part["functionCall"] for part in content["parts"] if "functionCall" in part]
        responses = [{"functionResponse": {"name": call["name"], "response": {"output": "done"},
                                           **({"id": call["id"]} if call.get("id") else {})}} for call in calls]
        if responses:
            self.contents.append({"role": "user", "parts": responses})


DOORS: dict[str, Callable[..., Door]] = {"chat": ChatDoor, "responses": ResponsesDoor, "messages": MessagesDoor,
                                         "messages-passthrough": PassthroughDoor, "gemini": GeminiDoor}


def script_tool_loop(upstream, turns: int) -> None:
    """Tool calls (with reasoning) on every turn but the last, which answers."""
    replies = [Reply.tool_calls([("Bash", {"command": f"pytest -x # {n}"})], reasoning=f"Step {n}: run the tests.",
                                ids=[f"call_{n}_{uuid.uuid4().hex[:6]}"]) for n in range(1, turns)]
    upstream.script(*replies, Reply.text("Fixed: the off-by-one in parse().", reasoning="Done."))


# ---- the checks -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(DOORS))
def test_a_tool_list_reordered_on_turn_3_is_one_break_at_tools(proxy, upstream, kind):
    door = DOORS[kind](proxy, f"reorder-{kind}-{uuid.uuid4().hex[:8]}")
    checks_before = prefix_metrics(proxy)[0].get(door.name, 0)
    breaks_before = prefix_metrics(proxy)[1]
    script_tool_loop(upstream, 4)
    door.send(TOOLS)
    door.send(TOOLS)
    door.send(list(reversed(TOOLS)))  # the client's tool list, reordered
    door.send(list(reversed(TOOLS)))  # ... and kept so: the next turn continues the new prompt
    _, breaks = settled(proxy, door.name, checks_before, 4)
    new = {key: value - breaks_before.get(key, 0) for key, value in breaks.items() if value != breaks_before.get(key, 0)}
    assert new == {(door.name, "tools"): 1}
    lines = break_lines(proxy, door.key(upstream))
    assert len(lines) == 1, proxy.log()[-3000:]
    line = lines[0]
    assert "WARNING" in line and "deepseek_proxy.prefix" in line and " at tools " in line
    assert f"door={door.name}" in line and "request_id=" in line
    lost = int(re.search(r"\((\d+) bytes\)", line).group(1))
    assert lost > 3 * len(TOOLS[0]["description"])  # everything after the first tool: the other tools, the turns
    assert TASK[:40] not in line and SYSTEM[:40] not in line  # never message content


@pytest.mark.parametrize("kind", list(DOORS))
def test_an_unchanged_tool_loop_has_no_break(proxy, upstream, kind):
    door = DOORS[kind](proxy, f"steady-{kind}-{uuid.uuid4().hex[:8]}")
    checks_before, breaks_before = prefix_metrics(proxy)
    checks_before = checks_before.get(door.name, 0)
    script_tool_loop(upstream, 5)
    for _ in range(5):
        door.send(TOOLS)
    _, breaks = settled(proxy, door.name, checks_before, 5)
    assert breaks == breaks_before
    assert break_lines(proxy, door.key(upstream)) == []


def test_a_streamed_codex_shaped_session_with_a_developer_steer_has_no_break(proxy, upstream):
    """Codex's way: streamed turns, reasoning replayed through encrypted_content, a developer message in the middle
    of the conversation (the steer goes upstream in place, after the turns so far)."""
    door = StreamedResponsesDoor(proxy, f"codex-{uuid.uuid4().hex[:8]}")
    checks_before, breaks_before = prefix_metrics(proxy)
    script_tool_loop(upstream, 5)
    for turn in range(1, 6):
        if turn == 3:
            door.input.append({"type": "message", "role": "developer",
                               "content": [{"type": "input_text", "text": "<steer>Keep the diff small.</steer>"}]})
        door.send(TOOLS)
    _, breaks = settled(proxy, "responses", checks_before.get("responses", 0), 5)
    assert breaks == breaks_before
    assert break_lines(proxy, door.key(upstream)) == []
    replayed = upstream.chat_requests[-1].body["messages"]
    assert sum(1 for m in replayed if m.get("reasoning_content")) == 4  # every earlier turn's reasoning, replayed


def test_a_system_message_moved_to_the_front_and_an_edited_tool_result_are_named(proxy, upstream):
    door = ChatDoor(proxy, f"moved-{uuid.uuid4().hex[:8]}")
    checks_before = prefix_metrics(proxy)[0].get("chat", 0)
    script_tool_loop(upstream, 5)
    door.send(TOOLS)
    door.send(TOOLS)
    steer = {"role": "system", "content": "Plan mode is on: do not edit files."}
    door.messages.append(steer)  # a mid-conversation system message, in place: no break
    door.send(TOOLS)
    door.messages.remove(steer)
    door.messages.insert(1, steer)  # the client moves it to the front: the prompt breaks right after the system
    door.send(TOOLS)
    door.messages[4]["content"] = "edited output"  # the first tool result, rewritten: message 4 of the request
    door.send(TOOLS)
    settled(proxy, "chat", checks_before, 5)
    lines = break_lines(proxy, door.key(upstream))
    assert [re.search(r" at (system|tools|message \d+) ", line).group(1) for line in lines] == ["system", "message 4"]


# ---- the captured real clients, replayed in order ----------------------------------------------------------------

CODEX_SESSIONS = {
    "normal": ["normal/turn1_request.json", "normal/turn2_request.json", "normal/turn3_request.json"],
    "reasoning_content": [f"reasoning_content/turn{n}_request.json" for n in (1, 2, 3)],
    "minimal_sse": [f"minimal_sse/turn{n}_request.json" for n in (1, 2, 3)],
    "fallback_no_catalog": ["fallback_no_catalog/turn1_request.json", "fallback_no_catalog/turn2_request.json"],
    "tui": ["tui/thread_title_request.json", "tui/turn1_request.json"],
    "compaction": ["compaction/turn1_request.json", "compaction/compaction_request.json",
                   "compaction/post_compaction_turn_request.json"],
}
CLAUDE_SESSIONS = {
    "p_default": ["p_default_turn1", "p_default_turn2_after_tool", "p_default_turn3_parallel_tools"],
    "p_deepseek": ["p_deepseek_turn1_bearer", "p_deepseek_turn3"],
    "interactive": ["interactive_title_structured_output", "interactive_compact"],
    "agent": ["subagent_explore_haiku", "subagent_explore_after_tool", "main_after_agent_tool"],
    "websearch": ["websearch_inner_server_tool", "websearch_followup"],
}
GEMINI_SESSIONS = {
    "default": ["router_classifier_generateContent", "stream_turn1", "stream_turn3_parallel_function_responses"],
    "deepseek_model": ["deepseek_model_turn1", "deepseek_model_turn3"],
}


def replay(proxy, path: str, body: dict, headers: dict) -> None:
    with requests.post(proxy.base_url + path, json=body, headers=headers, timeout=TIMEOUT, stream=True) as response:
        assert response.status_code == 200, response.text
        response.content  # noqa: B018 - the whole reply, so the request completed


def replayed_breaks(proxy, door: str, requests_in_order: list[tuple[str, dict, dict]]) -> list[str]:
    checks_before = prefix_metrics(proxy)[0].get(door, 0)
    log_before = len(proxy.log())
    for path, body, headers in requests_in_order:
        replay(proxy, path, body, headers)
    settled(proxy, door, checks_before, len(requests_in_order))
    return [re.search(r" at (system|tools|message \d+) ", line).group(1)
            for line in proxy.log()[log_before:].splitlines() if "prefix break" in line]


@pytest.mark.parametrize("session", list(CODEX_SESSIONS))
def test_captured_codex_sessions_break_only_where_codex_changes_its_prefix(proxy, upstream, session):
    from tests.conftest import codex_fixture

    sent = [("/v1/responses", codex_fixture(name), {"authorization": "Bearer x"}) for name in CODEX_SESSIONS[session]]
    # Codex's own compaction request drops every tool (`tools: []`, README of the fixtures): the client breaks its
    # prefix there, right after the system messages, and the detector says so. Every other sequence continues.
    assert replayed_breaks(proxy, "responses", sent) == (["tools"] if session == "compaction" else [])


@pytest.mark.parametrize("session", list(CLAUDE_SESSIONS))
def test_captured_claude_code_sessions_do_not_break(proxy, upstream, session):
    """Main turns, sub-agents and side calls (title, compaction, web search) of one session id: each side call is a
    thread of its own, so none reads as a break of the main conversation. (The fixtures' system blocks are redacted
    to placeholders, billing block included: the changing billing block is the MessagesDoor test's.)"""
    from tests.conftest import CLAUDE_FIXTURES

    sent = []
    for name in CLAUDE_SESSIONS[session]:
        capture = json.loads((CLAUDE_FIXTURES / f"{name}.json").read_text())
        headers = {k: v for k, v in capture["headers"].items() if k.lower().startswith(("anthropic", "x-claude"))}
        sent.append(("/v1/messages?beta=true", capture["body"], headers))
    assert replayed_breaks(proxy, "messages", sent) == []


@pytest.mark.parametrize("session", list(GEMINI_SESSIONS))
def test_captured_gemini_cli_sessions_do_not_break(proxy, upstream, session):
    """Gemini CLI names no session: its turns share the first-messages key; the router's classifier call (another
    model, other first messages) is a conversation of its own."""
    from tests.conftest import GEMINI_FIXTURES

    sent = []
    for name in GEMINI_SESSIONS[session]:
        capture = json.loads((GEMINI_FIXTURES / f"{name}.json").read_text())
        sent.append((capture["path"] + ("?alt=sse" if "stream" in capture["path"] else ""), capture["body"],
                     {"x-goog-api-key": "any"}))
    assert replayed_breaks(proxy, "gemini", sent) == []


def test_the_websocket_door_keys_by_codexs_session_header_and_sees_a_reordered_tool_list(proxy, upstream):
    """Codex over WebSocket: the session in the upgrade's `session-id` header, each turn chained by
    previous_response_id on the connection (the proxy expands it to the whole history upstream)."""
    from tests.ws_client import WsClient

    session = f"ws-{uuid.uuid4()}"
    tools = [{"type": "function", **tool} for tool in TOOLS]
    checks_before, breaks_before = prefix_metrics(proxy)
    script_tool_loop(upstream, 4)
    client = WsClient(proxy.port, extra_headers=[(b"session-id", session.encode())])
    try:
        previous, items = None, [{"type": "message", "role": "user",
                                  "content": [{"type": "input_text", "text": f"{session}: {TASK}"}]}]
        for turn in range(1, 5):
            client.send({"type": "response.create", "model": "deepseek-v4-pro", "instructions": SYSTEM,
                         "input": items, "store": False, "previous_response_id": previous,
                         "tools": tools if turn < 3 else tools[::-1]})
            events = client.response()
            assert events[-1]["type"] == "response.completed", events[-1]
            previous = events[-1]["response"]["id"]
            items = [{"type": "function_call_output", "call_id": item["call_id"], "output": "done"}
                     for item in events[-1]["response"]["output"] if item["type"] == "function_call"]
    finally:
        client.close()
    _, breaks = settled(proxy, "responses_ws", checks_before.get("responses_ws", 0), 4)
    new = {key: value - breaks_before.get(key, 0) for key, value in breaks.items() if value != breaks_before.get(key, 0)}
    assert new == {("responses_ws", "tools"): 1}
    [line] = break_lines(proxy, f"responses:{session}")
    assert "door=responses_ws" in line and " at tools " in line


def test_process_memory_and_detection_off(start_proxy, upstream):
    """`[cache] prefix_memory = "process"` (one worker: it sees every turn) finds the same break; with
    `detect_prefix_breaks = false` nothing is compared, counted or logged."""
    def reordered_on_turn_3(server) -> ChatDoor:
        door = ChatDoor(server, f"cache-settings-{uuid.uuid4().hex[:8]}")
        script_tool_loop(upstream, 3)
        for tools in (TOOLS, TOOLS, TOOLS[::-1]):
            door.send(tools)
        return door

    in_process = start_proxy(upstream.base_url, CONFIG + '[cache]\nprefix_memory = "process"\n')
    door = reordered_on_turn_3(in_process)
    _, breaks = settled(in_process, "chat", 0, 3)
    assert breaks == {("chat", "tools"): 1}
    assert len(break_lines(in_process, door.key(upstream))) == 1

    off = start_proxy(upstream.base_url, CONFIG + "[cache]\ndetect_prefix_breaks = false\n")
    reordered_on_turn_3(off)
    time.sleep(0.5)  # what a greenlet would have needed to report
    checks, breaks = prefix_metrics(off)
    assert checks == {} and breaks == {} and "prefix break" not in off.log()
