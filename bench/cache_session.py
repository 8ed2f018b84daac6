"""Scenario (i): does DeepSeek's prefix cache keep hitting through the proxy over a long agent session? (issue 14)

One scripted 50-model-call agent session per door (``bench/cache_doors.py``: Codex through the Responses door,
Claude Code through the Messages door, translating and in its pass-through mode, Gemini CLI through the Gemini door,
an editor / SDK agent loop through the Chat Completions door), each shaped like its client's captured requests
(tests/fixtures/), is replayed

- ``proxy``: through the real proxy's door, streamed as the client streams, the proxy restarted at the resume where
  the door's script says so;
- ``direct``: straight to the upstream as the ideal Chat Completions requests a client would send by hand for the
  same conversation (nothing to translate: each turn's messages appended to the last); for the pass-through mode,
  which does not translate, the ideal Anthropic requests sent to the upstream's Anthropic endpoint.

This module is what every door shares: the session plan (when the steer, the resume and a model switch come), the
scripted model (the same tool-call / answer rhythm for every door, under each door's tool names), the driver that
plays a door's session against either target, the ideal Chat session (the ``direct`` baseline, and the Chat door's
client, which speaks the same protocol), and the counting.

Both targets talk to the cache-modelling fake DeepSeek (tests/fakes/fake_deepseek.py: the longest prefix shared with
the account's earlier prompts of the same model, in 64-token blocks), one fresh fake per run, and the result is the
share of input tokens that hit the cache from the third model call on (the first two have nothing, or little, to
hit), side calls after that point included. What the model misses either way: each call's new messages (the last
reply, the tool output, the next user message), the part of the previous prompt past its last whole block, and
whatever a model switch leaves uncached; so ``direct`` is the best achievable and the proxy should match it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from tests.fakes.fake_deepseek import FakeDeepSeek, Reply

MODEL_CALLS, SMOKE_CALLS = 50, 9
FROM_CALL = 3  # the share counts model calls 3..N (1-based)
TARGET_SHARE = 0.95

# (url getter, restart, stop) of a proxy started against the fake; `extra_config` is appended to its TOML config
StartProxy = Callable[..., tuple[Callable[[], str], Callable[[], None], Callable[[], None]]]


@dataclass
class SessionPlan:
    calls: int
    steer_at: int  # the steer message goes in before this model call (1-based)
    resume_at: int  # the session is resumed before this model call
    switch_at: int  # the model is switched before this call (doors whose client has a /model)…
    switch_back_at: int  # … and switched back before this one


# A door whose client switches models runs its smoke longer: the switch's first call on the other model misses the
# whole prompt (the direct session pays the same), which 9 calls cannot amortize (direct: 84%) and 40 calls can (96%).
SWITCH_SMOKE_CALLS = 40


def plan_for(smoke: bool, switches: bool = False) -> SessionPlan:
    if smoke and switches:
        return SessionPlan(SWITCH_SMOKE_CALLS, 5, 30, 16, 19)
    return SessionPlan(SMOKE_CALLS, 5, 8, 4, 6) if smoke else SessionPlan(MODEL_CALLS, 20, 35, 26, 31)


# ---- the scripted model ------------------------------------------------------------------------------------------


def tool_output(call: int) -> str:
    """What a shell command printed: a directory listing of some length, different every call."""
    rows = [f"-rw-r--r-- 1 root root {1000 + 37 * call + i:5d} Dec  1 12:{i % 60:02d} src/module_{call}_{i}.py"
            for i in range(8 + call % 13)]
    return f"Chunk ID: {call:06x}\nWall time: 0.0{call % 10} seconds\nProcess exited with code 0\nOutput:\n" + \
        "\n".join(rows) + "\n"


def edit_output(call: int) -> str:
    return ("Exit code: 0\nWall time: 0 seconds\nOutput:\nSuccess. Updated the following files:\n"
            f"M src/module_{call}.py\n")


def patch_text(call: int) -> str:
    return (f"*** Begin Patch\n*** Update File: src/module_{call}.py\n@@\n-def old_{call}():\n-    pass\n"
            f"+def new_{call}(value):\n+    return value * {call}\n*** End Patch\n")


@dataclass(frozen=True)
class ToolNames:
    """The two tools the scripted model uses, under a door's names: a shell command, then a file edit."""
    shell: str
    shell_args: Callable[[int], dict]
    edit: str
    edit_args: Callable[[int], dict]


def scripted_reply(call: int, tools: ToolNames) -> Reply:
    """Model call `call` (1-based): a shell command, then an edit, then a final answer, over and over."""
    reasoning = (f"Call {call}: I look at what the last step showed and decide the next one. "
                 f"The module_{call} file needs the change the user asked for. " * 3).strip()
    step = (call - 1) % 3
    if step == 0:
        return Reply.tool_calls([(tools.shell, tools.shell_args(call))], reasoning=reasoning,
                                ids=[f"call_{call:04d}_shell"])
    if step == 1:
        return Reply.tool_calls([(tools.edit, tools.edit_args(call))], reasoning=reasoning,
                                ids=[f"call_{call:04d}_edit"])
    return Reply.text(f"Done with step {call // 3}: updated src/module_{call - 1}.py and checked the listing.",
                      reasoning=reasoning)


SIDE_REPLY = '{"title": "Greeting CLI work"}'


def is_side_call(body: dict) -> bool:
    """A client's side call (Claude Code's session title: no tools, a JSON answer): not a step of the session."""
    return not body.get("tools")


def scripted_replies(tools: ToolNames) -> Callable[[dict], Reply]:
    """The fake's answer to each request of a session: the next step of the script, or a side call's answer."""
    counter = {"n": 0}

    def reply(body: dict) -> Reply:
        if is_side_call(body):
            return Reply.text(SIDE_REPLY, reasoning=None)
        counter["n"] += 1
        return scripted_reply(counter["n"], tools)

    return reply


def scripted_fake(tools: ToolNames) -> FakeDeepSeek:
    fake = FakeDeepSeek()
    fake.default_reply = scripted_replies(tools)
    return fake


# ---- one door's session ------------------------------------------------------------------------------------------


@dataclass
class ModelTurn:
    """A reply as the driver needs it, whatever the door: the tool calls to answer (id, name), else an answer."""
    calls: list[tuple[str, str]] = field(default_factory=list)


class Session(Protocol):
    """A client's view of one conversation, in its own protocol (or the ideal Chat one): it keeps the history in
    the client's form and sends it to a target."""

    def begin(self, task: str) -> None: ...
    def steer(self, text: str) -> None: ...
    def resume(self) -> None: ...
    def switch_model(self, back: bool) -> None: ...
    def side_calls(self, call: int) -> None: ...
    def call(self, call: int) -> ModelTurn: ...
    def tool_results(self, results: list[tuple[str, str, str]]) -> None: ...
    def user(self, text: str) -> None: ...


USER_TASKS = [
    "create hello.txt", "add a greeting function to greet.py", "write tests for greet.py", "rename greet to welcome",
    "add a --name flag to the CLI", "document the CLI in README.md", "fix the failing test", "add type hints",
    "make the output colourful", "add a config file loader", "handle a missing config file", "add logging",
    "refactor main() into smaller functions", "add a --version flag", "update the changelog", "run the linter",
    "summarize what changed",
]


def drive(session: Session, plan: SessionPlan, tools: ToolNames, *, steer_text: str, switches: bool) -> None:
    """Play the scripted session: the same events in the same order for every door and both targets."""
    session.begin(USER_TASKS[0])
    task = 1
    for call in range(1, plan.calls + 1):
        if call == plan.steer_at:
            session.steer(steer_text)
        if call == plan.resume_at:
            session.resume()
        if switches and call in (plan.switch_at, plan.switch_back_at):
            session.switch_model(back=call == plan.switch_back_at)
        session.side_calls(call)
        turn = session.call(call)
        if turn.calls:
            session.tool_results([(call_id, name, tool_output(call) if name == tools.shell else edit_output(call))
                                  for call_id, name in turn.calls])
        else:
            session.user(USER_TASKS[task % len(USER_TASKS)])
            task += 1


def check(response: requests.Response, call: int) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"call {call}: HTTP {response.status_code}: {response.text[:300]}")


def sse_data(response: requests.Response) -> Iterator[tuple[str | None, Any]]:
    """(event name, parsed data) of each SSE event; `[DONE]` ends it."""
    event = None
    for raw in response.iter_lines():
        line = raw.decode("utf-8")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            payload = line[5:].strip()
            if payload == "[DONE]":
                return
            yield event, json.loads(payload)
            event = None


# ---- the ideal Chat session: the direct baseline of every door, and the Chat door's client ---------------------------


@dataclass
class ChatStart:
    """A conversation's opening in ideal Chat form: the leading messages (system prompt, context) and the tools."""
    head: list[dict]
    tools: list[dict]
    model: str
    steer_role: str = "system"  # how the client's mid-conversation steer reads in Chat: a system message or a user turn
    models: tuple[str, str] = ("deepseek-v4-pro", "deepseek-v4-flash")  # (main, after a /model switch)
    side_call: Callable[[int], list[dict] | None] | None = None  # the messages of a side call before call N, if any
    opening: Callable[[str], list[dict]] | None = None  # the first user turn (with the client's context), if not plain
    prompt: Callable[[int, str], str] | None = None  # the n-th later prompt (1-based) as the client words it


class ChatSession:
    """A Chat Completions client that keeps the conversation itself: the assistant's reasoning_content replayed on
    every turn (DeepSeek's thinking mode demands it on tool-call turns), each turn's messages appended."""

    def __init__(self, start: ChatStart, url: Callable[[], str], *, stream: bool = False,
                 restart: Callable[[], None] | None = None, api_key: str = "sk-fake-deepseek",
                 nonce: bool = False):
        self.start, self.url, self.stream, self.restart, self.nonce = start, url, stream, restart, nonce
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.model = start.model
        self.messages: list[dict] = []
        self.prompts = 0
        self.http = requests.Session()

    def begin(self, task: str) -> None:
        opening = self.start.opening(task) if self.start.opening else [{"role": "user", "content": task}]
        self.messages = [dict(m) for m in self.start.head] + opening

    def steer(self, text: str) -> None:
        self.messages.append({"role": self.start.steer_role, "content": text})

    def resume(self) -> None:
        if self.restart is not None:
            self.restart()
        self.http = requests.Session()  # a new process sends the same conversation again

    def switch_model(self, back: bool) -> None:
        self.model = self.start.models[0 if back else 1]

    def side_calls(self, call: int) -> None:
        side = self.start.side_call(call) if self.start.side_call else None
        if side is not None:
            self.post({"model": self.model, "messages": side, "stream": self.stream,
                       "response_format": {"type": "json_object"}, "thinking": {"type": "disabled"}}, call)

    def call(self, call: int) -> ModelTurn:
        messages = self.messages
        if self.nonce:  # the control: a per-request line atop the system prompt defeats the cache
            messages = [dict(messages[0], content=f"x-billing: cch={call:05x};\n" + messages[0]["content"]),
                        *messages[1:]]
        message = self.post({"model": self.model, "messages": messages, "tools": self.start.tools,
                             "stream": self.stream}, call)
        assistant = {"role": "assistant", "content": message.get("content") or "",
                     "reasoning_content": message.get("reasoning_content") or ""}
        calls = [{"id": c["id"], "type": "function",
                  "function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}}
                 for c in message.get("tool_calls") or []]
        if calls:
            assistant["tool_calls"] = calls
        self.messages.append(assistant)
        return ModelTurn([(c["id"], c["function"]["name"]) for c in calls])

    def tool_results(self, results: list[tuple[str, str, str]]) -> None:
        self.messages += [{"role": "tool", "tool_call_id": call_id, "content": output}
                          for call_id, _, output in results]

    def user(self, text: str) -> None:
        self.prompts += 1
        self.messages.append({"role": "user", "content": self.start.prompt(self.prompts, text) if self.start.prompt
                              else text})

    def post(self, body: dict, call: int) -> dict:
        if self.stream:
            body = dict(body, stream_options={"include_usage": True})
        with self.http.post(self.url() + "/chat/completions", json=body, headers=self.headers, timeout=60,
                            stream=self.stream) as response:
            check(response, call)
            return chat_stream_message(response) if self.stream else response.json()["choices"][0]["message"]


def chat_stream_message(response: requests.Response) -> dict:
    """The assistant message a streamed Chat completion adds up to (content, reasoning_content, tool_calls)."""
    content, reasoning, calls = [], [], {}  # type: tuple[list[str], list[str], dict[int, dict]]
    for _, chunk in sse_data(response):
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content.append(delta.get("content") or "")
            reasoning.append(delta.get("reasoning_content") or "")
            for part in delta.get("tool_calls") or []:
                slot = calls.setdefault(part["index"], {"id": "", "type": "function",
                                                        "function": {"name": "", "arguments": ""}})
                slot["id"] = part.get("id") or slot["id"]
                function = part.get("function") or {}
                slot["function"]["name"] += function.get("name") or ""
                slot["function"]["arguments"] += function.get("arguments") or ""
    return {"content": "".join(content), "reasoning_content": "".join(reasoning),
            "tool_calls": [calls[i] for i in sorted(calls)]}


# ---- a door, and measuring it --------------------------------------------------------------------------------------


@dataclass
class Door:
    """One door's scripted session: its client's session through the proxy, and the same conversation in ideal
    Chat form for the direct baseline."""
    key: str  # the column / json key: "responses", "messages", "gemini", "chat"
    title: str  # what the table's section says
    tools: ToolNames
    steer_text: str
    chat_start: Callable[[], ChatStart]
    proxy_session: Callable[[Callable[[], str], Callable[[], None]], Session]
    switches: bool = False  # the client switches models mid-session (Claude Code's /model)
    proxy_config: str = ""  # appended to the proxy's TOML config
    notes: str = ""  # what the session does, for the table

    # the direct baseline in the client's own protocol, if not ideal Chat: (fake, nonce) -> session
    direct: Callable[[FakeDeepSeek, bool], Session] | None = None

    def direct_session(self, fake: FakeDeepSeek, *, nonce: bool = False) -> Session:
        if self.direct is not None:
            return self.direct(fake, nonce)
        return ChatSession(self.chat_start(), lambda: fake.base_url, nonce=nonce)


def hit_share(fake: FakeDeepSeek, from_call: int = FROM_CALL) -> dict:
    """The share of input tokens that hit the cache, over every upstream request from the `from_call`-th model call
    of the session on (side calls after it included)."""
    # Chat or Anthropic endpoint alike (the fake records prompt_tokens / cache_hit_tokens for both; its Anthropic
    # usage says the same as input_tokens + cache_read_input_tokens / cache_read_input_tokens)
    prompts = {id(r) for r in fake.chat_requests + fake.anthropic_requests}
    sent = [r for r in fake.requests if id(r) in prompts]
    records = [r for r in sent if r.rejection is None]
    steps = [i for i, r in enumerate(records) if not is_side_call(r.body or {})]
    counted = records[steps[from_call - 1]:] if len(steps) >= from_call else []
    prompt = sum(r.prompt_tokens for r in counted)
    hit = sum(r.cache_hit_tokens for r in counted)
    rejected = [r.rejection for r in sent if r.rejection]
    return {"calls": len(steps), "side_calls": len(records) - len(steps), "prompt_tokens": prompt,
            "hit_tokens": hit, "share": hit / prompt if prompt else None,
            "per_call": [(r.prompt_tokens, r.cache_hit_tokens, (r.body or {}).get("model")) for r in records],
            "errors": len(rejected), "error": rejected[0] if rejected else None}


def _measure(door: Door, out: dict, key: str, run: Callable[[FakeDeepSeek], None]) -> None:
    with scripted_fake(door.tools) as fake:
        try:
            run(fake)
        except (RuntimeError, requests.RequestException, KeyError, ValueError) as exc:
            out[f"{key}_failure"] = str(exc)
        out[key] = hit_share(fake)


def run_door(door: Door, start_proxy: StartProxy | None, smoke: bool) -> dict:
    """One rep of one door: the session direct, the control, and through the proxy, each against a fresh fake.
    `start_proxy(base_url, api_key, extra_config)` -> (url getter, restart, stop), or None without a proxy."""
    plan = plan_for(smoke, door.switches)
    out: dict = {"door": door.key, "plan": plan.__dict__, "title": door.title, "notes": door.notes}

    def play(session: Session, switches: bool = door.switches) -> None:
        drive(session, plan, door.tools, steer_text=door.steer_text, switches=switches)

    _measure(door, out, "direct", lambda fake: play(door.direct_session(fake)))
    # the control proves the measurement sees a broken prefix
    _measure(door, out, "control", lambda fake: play(door.direct_session(fake, nonce=True)))
    if door.switches:  # what the model switch costs: the same session, direct, without it
        _measure(door, out, "unswitched", lambda fake: play(door.direct_session(fake), switches=False))
    if start_proxy is None:
        out["proxy_skip"] = "no proxy"
        return out

    def through_proxy(fake: FakeDeepSeek) -> None:
        url, restart, stop = start_proxy(fake.base_url, fake.api_key, door.proxy_config)
        try:
            play(door.proxy_session(url, restart))
        finally:
            stop()

    _measure(door, out, "proxy", through_proxy)
    return out


def run_cache_session(start_proxy: StartProxy | None, smoke: bool, doors: list[str] | None = None) -> dict:
    """One rep of every door (or those named): {door key: run_door(...)}."""
    from .cache_doors import DOORS
    return {door.key: run_door(door, start_proxy, smoke) for door in DOORS if doors is None or door.key in doors}


if __name__ == "__main__":  # the direct halves alone, for a quick look: python -m bench.cache_session [door …]
    from .cache_doors import DOORS
    for _door in DOORS:
        if len(sys.argv) > 1 and _door.key not in sys.argv[1:]:
            continue
        with scripted_fake(_door.tools) as _fake:
            drive(_door.direct_session(_fake), plan_for(bool(os.environ.get("SMOKE")), _door.switches),
                  _door.tools,
                  steer_text=_door.steer_text, switches=_door.switches)
            print(_door.key, json.dumps({k: v for k, v in hit_share(_fake).items() if k != "per_call"}))
