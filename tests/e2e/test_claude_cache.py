"""Issue 14 with the real Claude Code (pinned): DeepSeek's prefix cache keeps hitting within a session and across
sessions, in both Messages modes (translated to Chat Completions, or passed through to DeepSeek's /anthropic).

The upstream is the fake DeepSeek with its cache model (tests/fakes/fake_deepseek.py PromptCache: the longest
prefix shared with earlier prompts, in 64-token blocks, system → tools → conversation); the figures asserted on
come from its own tokenizer, never hard-coded. The proxy keeps what it received (`[logs] capture_bodies`), so each
test also pins what Claude Code itself changes between two sessions in the same project: its billing block (the
proxy drops it), the session id in `metadata.user_id` (not prompt text) and, in a git repository, the `gitStatus`
snapshot at the end of its system prompt (measured here: it costs the tools and the rest of the prefix; the
proxy leaves the client's text alone, CLAUDE_CODE_DISABLE_GIT_INSTRUCTIONS=1 avoids it).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import FAKE_KEY, ProxyProcess
from tests.e2e.claude_cli import ClaudeHome, make_claude_home, run_claude_print
from tests.fakes.fake_deepseek import (
    CACHE_UNIT_TOKENS,
    FakeDeepSeek,
    RecordedRequest,
    Reply,
    anthropic_prompt_body,
    prompt_tokens,
)

pytestmark = pytest.mark.e2e

BILLING = "x-anthropic-billing-header:"
WRITE = re.compile(r"please write (\w+\.txt)")
MODES = ["translate", "anthropic"]
MODE_CONFIG = {"translate": "", "anthropic": '[models.deepseek-v4-pro]\nmessages_upstream = "anthropic"\n'}


# ---- the fake's side: replies by the state of the conversation, and what an upstream prompt is made of --------------


def _is_tool_turn(message: dict) -> bool:
    content = message.get("content")
    blocks = content if isinstance(content, list) else []
    return message.get("role") == "assistant" and bool(
        message.get("tool_calls") or any(isinstance(b, dict) and b.get("type") == "tool_use" for b in blocks))


def _user_texts(body: dict) -> str:
    texts = []
    for message in body["messages"]:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        else:
            texts += [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"]
    return "\n".join(texts)


def scripted(body: dict) -> Reply:
    """`please write NAME.txt` → a Bash call writing it, then a Write call for NAME.notes, then a final text; any
    other prompt → a text answer. Each step carries its own reasoning (thinking mode)."""
    steps = sum(_is_tool_turn(m) for m in body["messages"])
    wanted = WRITE.search(_user_texts(body))
    if wanted and steps == 0:
        return Reply.tool_calls([("Bash", {"command": f"echo hi > {wanted[1]}", "description": "write"})],
                                reasoning=f"Write {wanted[1]} first.")
    if wanted and steps == 1:
        return Reply.tool_calls([("Write", {"file_path": wanted[1] + ".notes", "content": "notes\n"})],
                                reasoning="Then the notes.")
    return Reply.text("Done.", reasoning=f"Step {steps}: report.")


def lead_tokens(mode: str, body: dict) -> int:
    """The tokens of the system prompt and tools of an upstream body, by the fake's tokenizer, in whole cache
    blocks: what a later prompt with the same system prompt and tools must hit at least."""
    if mode == "translate":
        lead = {"messages": list(itertools.takewhile(lambda m: m["role"] == "system", body["messages"])),
                "tools": body["tools"]}
    else:
        lead = anthropic_prompt_body({**body, "messages": []})
    return len(prompt_tokens(lead)) // CACHE_UNIT_TOKENS * CACHE_UNIT_TOKENS


def lead_of(mode: str, body: dict) -> tuple:
    """The system prompt and tools as sent (to compare two sessions' upstream bodies)."""
    if mode == "translate":
        return body["messages"][0], body["tools"]
    return body["system"], body["tools"]


# ---- one proxy + fake + Claude Code user per test ------------------------------------------------------------------


@dataclass
class Session:
    """One `claude -p` run: the upstream requests it caused and the bodies the proxy received for them."""

    upstream: list[RecordedRequest]
    received: list[dict]

    @property
    def first(self) -> RecordedRequest:
        return self.upstream[0]


class Rig:
    def __init__(self, root: Path, mode: str, fake: FakeDeepSeek):
        self.mode, self.fake = mode, fake
        self.captures = root / "captures"
        # The proxy keeps every request body it receives (redacted of secrets only): what Claude Code sent.
        capture = f'[logs]\ncapture_bodies = true\ncapture_max_kb = 4096\ncapture_dir = "{self.captures}"\n'
        (root / "proxy").mkdir(parents=True)
        self.proxy = ProxyProcess(root / "proxy", upstream_url=fake.base_url, config_text=MODE_CONFIG[mode] + capture)
        self.home: ClaudeHome = make_claude_home(root / "claude")
        self.sessions: list[Session] = []

    def upstream_requests(self) -> list[RecordedRequest]:
        records = self.fake.anthropic_requests if self.mode == "anthropic" else self.fake.chat_requests
        return [r for r in records if isinstance(r.body, dict) and r.body.get("tools")]

    def received_requests(self) -> dict[str, dict]:
        out = {}
        for path in self.captures.glob("*.request.json"):
            body = json.loads(path.read_text())
            if isinstance(body, dict) and body.get("tools"):
                out[path.name] = body
        return out

    def claude(self, prompt: str, env: dict | None = None) -> Session:
        before_up, before_in = len(self.upstream_requests()), set(self.received_requests())
        result = run_claude_print(self.home, prompt, base_url=self.proxy.base_url, api_key="sk-claude-e2e",
                                  timeout=180, env_extra=env)
        assert result.returncode == 0, f"stdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-3000:]}\n" \
                                       f"proxy log:\n{self.proxy.log()[-4000:]}"
        received = [b for name, b in self.received_requests().items() if name not in before_in]
        received.sort(key=lambda b: len(b["messages"]))  # a session's requests only grow
        session = Session(self.upstream_requests()[before_up:], received)
        assert session.upstream and len(session.received) == len(session.upstream)
        self.sessions.append(session)
        return session

    def stop(self) -> None:
        self.proxy.stop()


@pytest.fixture()
def rig(tmp_path) -> Iterator[Callable[[str], Rig]]:
    made: list[tuple[Rig, FakeDeepSeek]] = []

    def make(mode: str) -> Rig:
        fake = FakeDeepSeek(api_key=FAKE_KEY).start()
        fake.default_reply = scripted
        made.append((Rig(tmp_path / mode, mode, fake), fake))
        return made[-1][0]

    yield make
    for server, fake in made:
        server.stop()
        fake.stop()


def without(body: dict, *paths: tuple) -> dict:
    """A copy of `body` without the values at `paths` (tuples of keys / indexes)."""
    body = copy.deepcopy(body)
    for path in paths:
        holder = body
        for key in path[:-1]:
            holder = holder[key]
        del holder[path[-1]]
    return body


def session_id(body: dict) -> str:
    return json.loads(body["metadata"]["user_id"])["session_id"]


def prompt_of(body: dict) -> str:
    """The text Claude Code put last in its first user message: the user's prompt."""
    return body["messages"][0]["content"][-1]["text"]


# ---- across sessions -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_second_session_hits_the_system_prompt_and_tools_the_first_one_cached(rig, mode):
    run = rig(mode)
    first = run.claude("please write a.txt")
    assert (run.home.workdir / "a.txt").read_text() == "hi\n"
    second = run.claude("what did you do?")
    third = run.claude("what did you do?", env={"CLAUDE_CODE_ATTRIBUTION_HEADER": "0"})
    assert run.fake.rejections == []

    # What Claude Code sent: each session's first request has its own billing line (its cc_version suffix follows
    # the prompt) and session id; with the attribution header off there is no billing block at all.
    lines = [s.received[0]["system"][0]["text"] for s in (first, second)]
    assert all(line.startswith(BILLING) for line in lines) and lines[0] != lines[1]
    assert not third.received[0]["system"][0]["text"].startswith(BILLING)
    assert len({session_id(s.received[0]) for s in (first, second, third)}) == 3
    # ... and nothing else differs but the prompt: no date, cwd, tool order or cache_control placement of its own.
    varying = [("system", 0), ("metadata", "user_id"), ("messages", 0, "content", -1, "text")]
    assert without(first.received[0], *varying) == without(second.received[0], *varying)
    assert without(second.received[0], *varying[:2]) == without(third.received[0], ("metadata", "user_id"))

    # What went upstream: the same system prompt and tools, byte for byte (the billing line is gone) ...
    assert BILLING.encode() not in first.first.raw + second.first.raw + third.first.raw
    assert lead_of(mode, first.first.body) == lead_of(mode, second.first.body)
    if mode == "translate":
        assert second.first.raw == third.first.raw  # with or without the attribution header: the same bytes
    else:  # pass-through: the session id in metadata (not prompt text) is Claude Code's, and goes on as it came
        assert second.first.raw.replace(session_id(second.received[0]).encode(),
                                        session_id(third.received[0]).encode()) == third.first.raw
    # ... so the new session's first request hits at least all of it, in the fake's cache model (measured with
    # 2.1.197, translating: 16,064 of 17,477 prompt tokens, the system prompt and tools being 16,000 in whole blocks).
    lead = lead_tokens(mode, first.first.body)
    assert lead > 100 * CACHE_UNIT_TOKENS  # Claude Code's system prompt and tools: thousands of tokens
    assert first.first.cache_hit_tokens == 0
    assert second.first.cache_hit_tokens >= lead
    assert third.first.cache_hit_tokens >= second.first.prompt_tokens // CACHE_UNIT_TOKENS * CACHE_UNIT_TOKENS


def _git(workdir: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=e2e@example.invalid", "-c", "user.name=e2e", *args], cwd=workdir,
                   check=True, capture_output=True, timeout=30)


def _first_difference(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def test_in_a_git_repository_a_changed_status_costs_the_tools_unless_git_instructions_are_off(rig):
    """Claude Code ends its system prompt with a `gitStatus` snapshot; DeepSeek reads the tools after the system
    prompt, so a session that starts after the status changed misses the tools (and the rest of the prefix). That
    text is the client's: the proxy passes it on. CLAUDE_CODE_DISABLE_GIT_INSTRUCTIONS=1 leaves the snapshot out.
    Measured with 2.1.197: 1,472 of 17,569 prompt tokens hit, 14,592 of the 16,064 system-and-tools tokens lost."""
    run = rig("translate")
    _git(run.home.workdir, "init", "-q")
    _git(run.home.workdir, "commit", "-q", "--allow-empty", "-m", "init")

    before = run.claude("please write a.txt")  # leaves a.txt and a.txt.notes untracked
    after = run.claude("what did you do?")
    system_before, system_after = (s.first.body["messages"][0]["content"] for s in (before, after))
    assert "gitStatus:" in system_before and "Status:\n(clean)" in system_before
    assert "?? a.txt" in system_after
    broken_at = _first_difference(before.first.raw, after.first.raw)
    assert before.first.raw.rindex(b"gitStatus:", 0, broken_at) < broken_at < before.first.raw.index(b'"tools":')
    lead = lead_tokens("translate", before.first.body)
    lost = lead - after.first.cache_hit_tokens
    assert lost > lead // 2, f"hit {after.first.cache_hit_tokens} of the {lead}-token system prompt and tools"

    env = {"CLAUDE_CODE_DISABLE_GIT_INSTRUCTIONS": "1"}
    quiet = run.claude("please write b.txt", env=env)
    quiet_after = run.claude("what did you do?", env=env)
    assert "gitStatus:" not in quiet.first.body["messages"][0]["content"]
    assert (run.home.workdir / "b.txt").exists()
    assert quiet_after.first.cache_hit_tokens >= lead_tokens("translate", quiet.first.body)
    assert run.fake.rejections == []


# ---- within a session: the tool loop ---------------------------------------------------------------------------------


def _unmarked(value):
    if isinstance(value, dict):
        return {k: _unmarked(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_unmarked(v) for v in value]
    return value


@pytest.mark.parametrize("mode", MODES)
def test_a_tool_loop_hits_everything_the_previous_turn_cached_and_replays_reasoning(rig, mode):
    run = rig(mode)
    session = run.claude("please write c.txt")
    assert (run.home.workdir / "c.txt.notes").read_text() == "notes\n"
    assert run.fake.rejections == []
    requests = session.upstream
    assert [sum(_is_tool_turn(m) for m in r.body["messages"]) for r in requests] == [0, 1, 2]
    for before, after in itertools.pairwise(requests):
        assert after.cache_hit_tokens >= before.prompt_tokens // CACHE_UNIT_TOKENS * CACHE_UNIT_TOKENS
        assert lead_of(mode, before.body) == lead_of(mode, after.body)
        if mode == "translate":  # the Chat history as bytes: each prompt's messages a prefix of the next one's
            messages_end = before.raw.index(b'],"tools":')
            assert after.raw.startswith(before.raw[:messages_end])
        else:  # Claude Code moves its cache_control markers every turn; apart from them the history only grows
            old, new = _unmarked(before.body["messages"]), _unmarked(after.body["messages"])
            assert new[:len(old)] == old
    # The reasoning of each step comes back on every later request as DeepSeek produced it.
    last = requests[-1].body["messages"]
    if mode == "translate":
        replayed = [m["reasoning_content"] for m in last if _is_tool_turn(m)]
    else:
        replayed = [b["thinking"] for m in last if _is_tool_turn(m) for b in m["content"] if b["type"] == "thinking"]
    assert replayed == ["Write c.txt first.", "Then the notes."]
