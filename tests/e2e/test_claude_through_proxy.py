"""The real Claude Code (pinned) through the real proxy (`deepseek-proxy serve`) against the fake DeepSeek in
thinking mode: the Messages door end to end.

The fake answers by the state of the conversation it receives (how many tool-call turns the history already
holds), not by arrival order, so a request Claude Code repeats (a retry, a non-streaming fallback) gets the same
answer, and side requests (no tools: a title, a summary) get a short text of their own. Every test ends with the
fake's own verdict: no request was refused by DeepSeek's rules (reasoning replayed on every tool-call turn, every
tool call answered).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import FAKE_KEY, ProxyProcess
from tests.e2e.claude_cli import ClaudeHome, make_claude_home, run_claude_print
from tests.fakes.fake_deepseek import FakeDeepSeek, RecordedRequest, Reply

pytestmark = pytest.mark.e2e

FINAL = "All done: out.txt and note.txt are written."
SIDE = '{"title": "Proxy session"}'


def tool_turns(body: dict) -> int:
    return sum(1 for m in body["messages"] if m["role"] == "assistant" and m.get("tool_calls"))


class Conversation:
    """A reply source for the fake: step N (N tool-call turns already in the history) → steps[N]; the last step
    repeats. `refuse_first` answers the first agent request with an error reply built from its body."""

    def __init__(self, steps: list[Reply], refuse_first: Callable[[dict], Reply] | None = None):
        self.steps = steps
        self.refuse_first = refuse_first
        self.agent_requests = 0

    def __call__(self, body: dict) -> Reply:
        if not body.get("tools"):
            return Reply.text(SIDE, reasoning="A title.")
        self.agent_requests += 1
        if self.refuse_first is not None and self.agent_requests == 1:
            return self.refuse_first(body)
        return self.steps[min(tool_turns(body), len(self.steps) - 1)]


@pytest.fixture()
def fake():
    with FakeDeepSeek(api_key=FAKE_KEY) as server:
        yield server


@pytest.fixture()
def proxy(fake, tmp_path):
    server = ProxyProcess(_mkdir(tmp_path / "proxy"), upstream_url=fake.base_url)
    yield server
    server.stop()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def agent_requests(fake: FakeDeepSeek) -> list[RecordedRequest]:
    return [r for r in fake.chat_requests if isinstance(r.body, dict) and r.body.get("tools")]


def claude(home: ClaudeHome, proxy: ProxyProcess, prompt: str, **kwargs):
    result = run_claude_print(home, prompt, base_url=proxy.base_url, api_key="sk-claude-e2e", timeout=180, **kwargs)
    assert result.returncode == 0, f"stdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-3000:]}\n" \
                                   f"proxy log:\n{proxy.log()[-4000:]}"
    return result


def assistant_turns(body: dict) -> list[dict]:
    return [m for m in body["messages"] if m["role"] == "assistant"]


def prompt_parts(raw: bytes) -> tuple[bytes, bytes]:
    """(the messages array without its closing bracket, everything after it) of an upstream body as sent: the
    proxy writes `model`, `messages`, then `tools` and the settings (upstream/prepare.py's key order)."""
    end = raw.index(b'],"tools":')
    return raw[:end], raw[end:]


# ---- the tool loop ------------------------------------------------------------------------------------------------


def test_tool_loop_bash_write_text_replays_reasoning_and_keeps_prefixes(tmp_path, fake, proxy):
    home = make_claude_home(tmp_path / "claude")
    note = home.workdir / "note.txt"
    reasoning = ["First run the shell command.", "Now write the note file.", "Both files exist; report."]
    fake.default_reply = Conversation([
        Reply.tool_calls([("Bash", {"command": "echo hi > out.txt", "description": "Write hi"})],
                         reasoning=reasoning[0]),
        Reply.tool_calls([("Write", {"file_path": str(note), "content": "written through the proxy\n"})],
                         reasoning=reasoning[1]),
        Reply.text(FINAL, reasoning=reasoning[2]),
    ])
    result = claude(home, proxy, "create out.txt with hi, then note.txt")

    assert FINAL in result.stdout
    assert (home.workdir / "out.txt").read_text().strip() == "hi"
    assert note.read_text() == "written through the proxy\n"
    assert fake.rejections == []

    requests = agent_requests(fake)
    assert [tool_turns(r.body) for r in requests] == [0, 1, 2]
    for request in requests:
        assert request.body["model"] == "deepseek-v4-pro"
        assert request.body["thinking"] == {"type": "enabled"}
        assert "x-anthropic-billing-header" not in json.dumps(request.body["messages"])
    # The reasoning of every earlier step comes back on every later request, exactly as DeepSeek produced it.
    assert [m.get("reasoning_content") for m in assistant_turns(requests[1].body)] == reasoning[:1]
    assert [m.get("reasoning_content") for m in assistant_turns(requests[2].body)] == reasoning[:2]
    assert [m["tool_calls"][0]["function"]["name"] for m in assistant_turns(requests[2].body)] == ["Bash", "Write"]

    # Issue 14: each upstream prompt is a byte prefix of the next (the same tools, the history only grows).
    for before, after in itertools.pairwise(requests):
        before_messages, before_rest = prompt_parts(before.raw)
        after_messages, after_rest = prompt_parts(after.raw)
        assert after_messages.startswith(before_messages), _first_difference(before_messages, after_messages)
        assert before_rest.split(b',"thinking"')[0] == after_rest.split(b',"thinking"')[0], "tools changed"


def _first_difference(a: bytes, b: bytes) -> str:
    i = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"prefix broken at byte {i}: {a[max(0, i - 150):i + 150]!r} vs {b[max(0, i - 150):i + 150]!r}"


# ---- parallel tool calls ------------------------------------------------------------------------------------------


def test_parallel_tool_calls(tmp_path, fake, proxy):
    home = make_claude_home(tmp_path / "claude")
    fake.default_reply = Conversation([
        Reply.tool_calls([("Bash", {"command": "echo a > a.txt", "description": "a"}),
                          ("Bash", {"command": "sleep 0.5; echo b > b.txt", "description": "b"})],
                         reasoning="Two independent commands: run both at once."),
        Reply.text("Both written.", reasoning="Done."),
    ])
    result = claude(home, proxy, "write a.txt and b.txt")

    assert "Both written." in result.stdout
    assert (home.workdir / "a.txt").read_text().strip() == "a"
    assert (home.workdir / "b.txt").read_text().strip() == "b"
    assert fake.rejections == []
    last = agent_requests(fake)[-1].body["messages"]
    at = next(i for i, m in enumerate(last) if m["role"] == "assistant" and m.get("tool_calls"))
    calls = last[at]["tool_calls"]
    assert len(calls) == 2
    assert last[at]["reasoning_content"] == "Two independent commands: run both at once."
    # The answers follow their calls, in the calls' order, whatever order Claude Code finished them in.
    assert [m.get("tool_call_id") for m in last[at + 1:at + 3]] == [c["id"] for c in calls]


# ---- a resumed session whose history lost its thinking blocks ------------------------------------------------------


def _strip_thinking(session: Path) -> int:
    """Remove every thinking block from the saved session, as a session written by another model (or a client
    that dropped them) would look; an entry left without content is dropped and its children re-linked."""
    entries = [json.loads(line) for line in session.read_text().splitlines() if line.strip()]
    removed, kept, relink = 0, [], {}
    for entry in entries:
        message = entry.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "thinking" for b in content):
            message["content"] = [b for b in content if not (isinstance(b, dict) and b.get("type") == "thinking")]
            removed += 1
            if not message["content"]:
                relink[entry.get("uuid")] = entry.get("parentUuid")
                continue
        kept.append(entry)
    for entry in kept:
        parent = entry.get("parentUuid")
        while parent in relink:
            parent = relink[parent]
        entry["parentUuid"] = parent
    session.write_text("".join(json.dumps(e) + "\n" for e in kept))
    return removed


@pytest.mark.parametrize("same_proxy", [True, False], ids=["reasoning-from-cache", "fresh-proxy-placeholder"])
def test_resumed_session_without_thinking_blocks_is_repaired(tmp_path, fake, proxy, same_proxy):
    home = make_claude_home(tmp_path / "claude")
    fake.default_reply = Conversation([
        Reply.tool_calls([("Bash", {"command": "echo hi > out.txt", "description": "hi"})],
                         reasoning="Plan: echo into out.txt."),
        Reply.text("Wrote out.txt.", reasoning="Report."),
    ])
    claude(home, proxy, "create out.txt with hi")
    [session] = home.session_files()
    assert _strip_thinking(session) >= 1
    assert '"thinking"' not in session.read_text()

    target = proxy
    if not same_proxy:  # another proxy process: no reasoning cache to draw on
        target = ProxyProcess(_mkdir(tmp_path / "proxy2"), upstream_url=fake.base_url)
    try:
        fake.default_reply = Conversation([Reply.text("Still fine.", reasoning="Fine.")])
        result = claude(home, target, "and now?", extra_args=["--continue"])
    finally:
        if target is not proxy:
            target.stop()

    assert "Still fine." in result.stdout
    assert fake.rejections == [], "DeepSeek's thinking rule refused a repaired history"
    resumed = agent_requests(fake)[-1].body
    assert "and now?" in json.dumps(resumed["messages"])
    [turn] = [m for m in assistant_turns(resumed) if m.get("tool_calls")]
    expected = "Plan: echo into out.txt." if same_proxy else "(The reasoning for this step is not available.)"
    assert turn["reasoning_content"] == expected


# ---- context overflow ---------------------------------------------------------------------------------------------


def test_context_overflow_recovered_by_claude_code(tmp_path, fake, proxy):
    """DeepSeek refuses the first request as too long for its context; the proxy words it the way Claude Code
    acts on, and Claude Code retries by itself with a smaller max_tokens."""
    def overflow(body: dict) -> Reply:
        asked = body["max_tokens"]
        messages = 100_000
        limit = messages + asked - 5_000  # over by 5000: a smaller max_tokens fits
        return Reply.error(400, f"This model's maximum context length is {limit} tokens. However, you requested "
                                f"{messages + asked} tokens ({messages} in the messages, {asked} in the completion). "
                                f"Please reduce the length of the messages or completion.",
                           code="invalid_request_error")

    home = make_claude_home(tmp_path / "claude")
    conversation = Conversation([Reply.text("Recovered.", reasoning="Short.")], refuse_first=overflow)
    fake.default_reply = conversation
    result = claude(home, proxy, "say something")

    assert "Recovered." in result.stdout
    first, second = agent_requests(fake)[:2]
    assert first.error_message and "maximum context length" in first.error_message
    assert second.body["max_tokens"] < first.body["max_tokens"] - 5_000
    assert second.error_message is None and fake.rejections == []


# ---- after `deepseek-proxy claude setup` ----------------------------------------------------------------------------


def test_claude_code_after_setup_runs_on_the_proxy(tmp_path, fake, proxy):
    """What a user does: `claude setup --proxy-url …`, then plain `claude -p` (no ANTHROPIC_* of its own): the
    requests reach the proxy with the models setup wrote, and the tool loop works."""
    from tests.e2e.test_claude_after_setup import claude_setup

    home = make_claude_home(tmp_path / "claude", settings={"theme": "dark"})
    claude_setup(tmp_path, home, proxy.base_url)
    fake.default_reply = Conversation([
        Reply.tool_calls([("Bash", {"command": "echo hi > out.txt", "description": "hi"})], reasoning="Echo."),
        Reply.text("Set up and done.", reasoning="Report."),
    ])
    result = run_claude_print(home, "create out.txt with hi", timeout=180)

    assert result.returncode == 0, result.stderr[-3000:] + proxy.log()[-3000:]
    assert "Set up and done." in result.stdout
    assert (home.workdir / "out.txt").read_text().strip() == "hi"
    requests = agent_requests(fake)
    assert [r.body["model"] for r in requests] == ["deepseek-v4-pro", "deepseek-v4-pro"]
    assert fake.rejections == []


# ---- a stream that breaks -----------------------------------------------------------------------------------------


def test_broken_upstream_stream_recovered_by_the_non_streaming_retry(tmp_path, fake, proxy):
    """DeepSeek hangs up mid-reply, while it still thinks: the proxy ends the stream with an `error` event
    (api_error), Claude Code sends the same body again without streaming, and the blocking path answers it.

    Measured with 2.1.197: Claude Code retries so only while no content block of the reply is complete; once a
    block has had its content_block_stop it shows the error instead (`claude -p` exits 1). A stream merely cut at
    that point (no `error` event, no message_stop) is worse: Claude Code takes the partial reply as the answer and
    exits 0, which is why the proxy always ends a broken stream with an `error` event."""
    conversation = Conversation([Reply.text("Recovered after a break.", reasoning="Fine.")])
    broken = {"done": False}

    def reply(body: dict) -> Reply:
        if body.get("tools") and not broken["done"]:
            broken["done"] = True
            return Reply.hang_up_after(3, Reply.text("never sent", reasoning="Let me think about this for a while."))
        return conversation(body)

    fake.default_reply = reply
    home = make_claude_home(tmp_path / "claude")
    result = claude(home, proxy, "say hi")

    assert "Recovered after a break." in result.stdout
    first, second = agent_requests(fake)[:2]
    assert first.body["stream"] is True and second.body["stream"] is False
    assert first.body["messages"] == second.body["messages"], "the same history, sent again"
