"""Scenario (i): does DeepSeek's prefix cache keep hitting through the proxy over a long agent session? (issue 14)

A scripted 50-model-call Codex session, shaped like the captured one (tests/fixtures/codex/normal/: the 21 k-char
developer prompt, skills and environment messages, Codex's tools; the model runs exec_command, then apply_patch,
then answers, and the next user turn follows), with reasoning replayed through ``encrypted_content``, a
mid-conversation developer (steer) message, and a resumed session (new process, new item ids on the leading
messages, the history sent again), is replayed

- ``proxy``: through the real proxy's Responses door (``/v1/responses``, streamed, like Codex), the proxy restarted at
  the resume;
- ``direct``: straight to the upstream as the ideal Chat Completions requests a client would send by hand (nothing
  to translate: the same conversation, each turn's messages appended to the last).

Both talk to the cache-modelling fake DeepSeek (tests/fakes/fake_deepseek.py: the longest prefix shared with the
account's earlier prompts, in 64-token blocks), one fresh fake per run, and the result is the share of input tokens
that hit the cache from the third model call on (the first two have nothing, or little, to hit). What the model
misses either way: each call's new messages (the last reply, the tool output, the next user message) and the part
of the previous prompt past its last whole block; so ``direct`` is the best achievable and the proxy should match it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import requests

from tests.fakes.fake_deepseek import FakeDeepSeek, Reply

from .scenarios import FIXTURE, _expand

MODEL_CALLS, SMOKE_CALLS = 50, 9
FROM_CALL = 3  # the share counts model calls 3..N (1-based)
TARGET_SHARE = 0.95

STEER_TEXT = ("<steer>The user adds: also keep CHANGELOG.md up to date with every file you touch, and prefer small "
              "commits.</steer>")
USER_TASKS = [
    "create hello.txt", "add a greeting function to greet.py", "write tests for greet.py", "rename greet to welcome",
    "add a --name flag to the CLI", "document the CLI in README.md", "fix the failing test", "add type hints",
    "make the output colourful", "add a config file loader", "handle a missing config file", "add logging",
    "refactor main() into smaller functions", "add a --version flag", "update the changelog", "run the linter",
    "summarize what changed",
]


@dataclass
class SessionPlan:
    calls: int
    steer_at: int  # the steer message goes in before this model call (1-based)
    resume_at: int  # the session is resumed before this model call


def plan_for(smoke: bool) -> SessionPlan:
    return SessionPlan(SMOKE_CALLS, 5, 7) if smoke else SessionPlan(MODEL_CALLS, 20, 35)


# ---- the scripted model ------------------------------------------------------------------------------------------


def tool_output(call: int) -> str:
    """What a tool printed: a directory listing of some length, different every call."""
    rows = [f"-rw-r--r-- 1 root root {1000 + 37 * call + i:5d} Dec  1 12:{i % 60:02d} src/module_{call}_{i}.py"
            for i in range(8 + call % 13)]
    return f"Chunk ID: {call:06x}\nWall time: 0.0{call % 10} seconds\nProcess exited with code 0\nOutput:\n" + \
        "\n".join(rows) + "\n"


def patch_text(call: int) -> str:
    return (f"*** Begin Patch\n*** Update File: src/module_{call}.py\n@@\n-def old_{call}():\n-    pass\n"
            f"+def new_{call}(value):\n+    return value * {call}\n*** End Patch\n")


def scripted_reply(call: int) -> Reply:
    """Model call `call` (1-based): exec_command, then apply_patch, then a final answer, over and over."""
    reasoning = (f"Call {call}: I look at what the last step showed and decide the next one. "
                 f"The module_{call} file needs the change the user asked for. " * 3).strip()
    step = (call - 1) % 3
    if step == 0:
        return Reply.tool_calls([("exec_command", {"cmd": f"ls -la src && cat src/module_{call}.py"})],
                                reasoning=reasoning, ids=[f"call_{call:04d}_exec"])
    if step == 1:
        return Reply.tool_calls([("apply_patch", {"input": patch_text(call)})], reasoning=reasoning,
                                ids=[f"call_{call:04d}_patch"])
    return Reply.text(f"Done with step {call // 3}: updated src/module_{call - 1}.py and checked the listing.",
                      reasoning=reasoning)


def scripted_fake() -> FakeDeepSeek:
    fake = FakeDeepSeek()
    counter = {"n": 0}

    def reply(body: dict) -> Reply:
        if body.get("model") == "deepseek-v4-flash":  # the runner's warm-up requests
            return Reply.text("ok")
        counter["n"] += 1
        return scripted_reply(counter["n"])

    fake.default_reply = reply
    return fake


# ---- the Codex-shaped session through the proxy ------------------------------------------------------------------


def codex_start() -> tuple[list[dict], list[dict], dict]:
    """The leading items (developer prompt, skills, environment), Codex's tools and the request's other fields."""
    with open(FIXTURE, encoding="utf-8") as handle:
        base = _expand(json.load(handle))
    fields = {k: base[k] for k in ("model", "tool_choice", "parallel_tool_calls", "reasoning", "store", "include",
                                   "prompt_cache_key") if k in base}
    return base["input"][:3], base["tools"], fields


def read_output_items(response: requests.Response) -> list[dict]:
    """The items of `response.output_item.done` events, in order (what Codex keeps and replays)."""
    items, event = [], None
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = json.loads(line[5:])
            kind = data.get("type", event)
            if kind == "response.output_item.done":
                items.append(data["item"])
            elif kind in ("response.failed", "error"):
                raise RuntimeError(f"the proxy failed the request: {line[:300]}")
    return items


def run_proxy_session(proxy_url: Callable[[], str], restart: Callable[[], None], plan: SessionPlan) -> None:
    head, tools, fields = codex_start()
    session = "01a2008d-bench-cache-session"
    history: list[dict] = [*head, _user(USER_TASKS[0])]
    task = 1
    http = requests.Session()
    for call in range(1, plan.calls + 1):
        if call == plan.steer_at:
            history.append({"type": "message", "role": "developer",
                            "content": [{"type": "input_text", "text": STEER_TEXT}]})
        if call == plan.resume_at:
            restart()  # `codex exec resume`: a new process; the proxy restarted too (nothing kept in memory)
            http = requests.Session()
            session = "01a2008d-bench-cache-resumed"
            for index, item in enumerate(history[:3]):  # Codex gives the leading messages new ids on resume
                history[index] = dict(item, id=f"msg_resumed_{index}")
        body = dict(fields, stream=True, input=history, tools=tools)
        with http.post(proxy_url() + "/v1/responses", json=body, stream=True, timeout=60,
                       headers={"Authorization": "Bearer sk-bench", "session-id": session,
                                "Accept": "text/event-stream"}) as response:
            if response.status_code != 200:
                raise RuntimeError(f"call {call}: HTTP {response.status_code}: {response.text[:300]}")
            items = read_output_items(response)
        history.extend(items)
        answered = False
        for item in items:
            if item.get("type") == "function_call":
                history.append({"type": "function_call_output", "call_id": item["call_id"],
                                "output": tool_output(call)})
                answered = True
            elif item.get("type") == "custom_tool_call":
                history.append({"type": "custom_tool_call_output", "call_id": item["call_id"],
                                "output": "Exit code: 0\nWall time: 0 seconds\nOutput:\nSuccess. Updated the following "
                                          f"files:\nM src/module_{call}.py\n"})
                answered = True
        if not answered:
            history.append(_user(USER_TASKS[task % len(USER_TASKS)]))
            task += 1


def _user(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


# ---- the same session, sent directly as the ideal Chat Completions requests ---------------------------------------


def ideal_tools(codex_tools: list[dict]) -> list[dict]:
    """Codex's tools as a hand-written Chat client would declare them: functions as they are, a freeform tool as a
    function with one string argument, namespaces flattened, hosted tools (web_search) left out."""
    out = []

    def function(name: str, description: str, parameters: dict) -> dict:
        return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}

    for tool in codex_tools:
        if tool.get("type") == "function":
            out.append(function(tool["name"], tool.get("description", ""), tool.get("parameters") or {}))
        elif tool.get("type") == "custom":
            out.append(function(tool["name"], tool.get("description", ""),
                                {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}))
        elif tool.get("type") == "namespace":
            for inner in tool.get("tools") or []:
                if inner.get("type") == "function":
                    out.append(function(f"{tool['name']}__{inner['name']}", inner.get("description", ""),
                                        inner.get("parameters") or {}))
    return out


def _text(item: dict) -> str:
    return "\n".join(part.get("text", "") for part in item.get("content") or [])


def run_direct_session(base_url: str, plan: SessionPlan, *, nonce: bool = False) -> None:
    """`nonce`: the control: a per-request line at the top of the system prompt (what Claude Code's `cch=` billing
    header does to a gateway that forwards it), which should defeat the cache on every call."""
    head, codex_tools, fields = codex_start()
    tools = ideal_tools(codex_tools)
    messages: list[dict] = [{"role": "system" if item.get("role") == "developer" else "user", "content": _text(item)}
                            for item in head]
    first_system = messages[0]["content"]
    messages.append({"role": "user", "content": USER_TASKS[0]})
    task = 1
    http = requests.Session()
    for call in range(1, plan.calls + 1):
        if call == plan.steer_at:
            messages.append({"role": "system", "content": STEER_TEXT})
        if call == plan.resume_at:
            http = requests.Session()  # a resumed client sends the same conversation again
        if nonce:
            messages[0] = {"role": "system", "content": f"x-billing: cch={call:05x};\n" + first_system}
        body = {"model": fields["model"], "messages": messages, "tools": tools, "stream": False}
        response = http.post(base_url + "/chat/completions", json=body, timeout=60,
                             headers={"Authorization": "Bearer sk-fake-deepseek"})
        if response.status_code != 200:
            raise RuntimeError(f"call {call}: HTTP {response.status_code}: {response.text[:300]}")
        message = response.json()["choices"][0]["message"]
        assistant = {"role": "assistant", "content": message.get("content") or "",
                     "reasoning_content": message.get("reasoning_content") or ""}
        calls = [{"id": c["id"], "type": "function",
                  "function": {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}}
                 for c in message.get("tool_calls") or []]
        if calls:
            assistant["tool_calls"] = calls
        messages.append(assistant)
        for c in calls:
            output = (tool_output(call) if c["function"]["name"] == "exec_command" else
                      f"Exit code: 0\nWall time: 0 seconds\nOutput:\nSuccess. Updated the following files:\n"
                      f"M src/module_{call}.py\n")
            messages.append({"role": "tool", "tool_call_id": c["id"], "content": output})
        if not calls:
            messages.append({"role": "user", "content": USER_TASKS[task % len(USER_TASKS)]})
            task += 1


# ---- measuring ----------------------------------------------------------------------------------------------------


def hit_share(fake: FakeDeepSeek, from_call: int = FROM_CALL) -> dict:
    records = [r for r in fake.chat_requests
               if r.rejection is None and (r.body or {}).get("model") != "deepseek-v4-flash"]
    counted = records[from_call - 1 :]
    prompt = sum(r.prompt_tokens for r in counted)
    hit = sum(r.cache_hit_tokens for r in counted)
    rejected = [r.rejection for r in fake.chat_requests if r.rejection]
    return {"calls": len(records), "prompt_tokens": prompt, "hit_tokens": hit,
            "share": hit / prompt if prompt else None, "per_call": [(r.prompt_tokens, r.cache_hit_tokens)
                                                                     for r in records],
            "errors": len(rejected), "error": rejected[0] if rejected else None}


def run_cache_session(start_proxy: Callable[[str, str], tuple[Callable[[], str], Callable[[], None],
                                                                   Callable[[], None]]] | None,
                      smoke: bool) -> dict:
    """One rep: the session direct and through the proxy, each against a fresh cache-modelling fake.
    `start_proxy(base_url, api_key)` -> (url getter, restart, stop), or None when the proxy cannot be started."""
    plan = plan_for(smoke)
    out: dict = {"plan": plan.__dict__}
    with scripted_fake() as fake:
        try:
            run_direct_session(fake.base_url, plan)
        except (RuntimeError, requests.RequestException) as exc:
            out["direct_failure"] = str(exc)
        out["direct"] = hit_share(fake)
    with scripted_fake() as fake:  # the control: proves the measurement sees a broken prefix
        try:
            run_direct_session(fake.base_url, plan, nonce=True)
        except (RuntimeError, requests.RequestException) as exc:
            out["control_failure"] = str(exc)
        out["control"] = hit_share(fake)
    if start_proxy is None:
        out["proxy_skip"] = "no proxy"
        return out
    with scripted_fake() as fake:
        url, restart, stop = start_proxy(fake.base_url, fake.api_key)
        try:
            run_proxy_session(url, restart, plan)
        except (RuntimeError, requests.RequestException) as exc:
            out["proxy_failure"] = str(exc)
        finally:
            stop()
        out["proxy"] = hit_share(fake)
    return out


if __name__ == "__main__":  # the direct half alone, for a quick look: python -m bench.cache_session
    with scripted_fake() as _fake:
        run_direct_session(_fake.base_url, plan_for(bool(os.environ.get("SMOKE"))))
        print(json.dumps({k: v for k, v in hit_share(_fake).items() if k != "per_call"}))
