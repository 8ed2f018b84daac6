"""The e2e harness itself: the pinned Claude Code runs here and talks to a scripted Messages server on loopback.

Also pins the Claude Code behaviours the proxy relies on (CLIENTS.md), so an upgrade that changes them fails here
first, with a clear message, and checks that the harness keeps Claude Code off the internet.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.e2e.claude_cli import (
    CLAUDE_VERSION,
    claude_version,
    make_claude_home,
    run_claude_print,
)
from tests.e2e.scripted_messages import (
    FINAL_TEXT,
    FINAL_TEXT_SSE,
    TOOL_TURN_COMMAND,
    TOOL_TURN_SSE,
    RefusingProxy,
    ScriptedMessages,
    message_from_sse,
    parse_sse,
    sse_message,
    sse_text,
)

pytestmark = pytest.mark.e2e

PROMPT = "create out.txt with hi"
ANTHROPIC_VERSION = "2023-06-01"
BETAS_THE_PROXY_SEES = {"claude-code-20250219", "interleaved-thinking-2025-05-14", "context-management-2025-06-27",
                        "mid-conversation-system-2026-04-07", "effort-2025-11-24"}


def _after(seconds: float, reply: bytes, until=lambda: False):
    """A scripted reply held back for `seconds` (or until `until()`): gives Claude Code's background start-up
    fetches time to show themselves before the session ends."""
    def hold(_request) -> bytes:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until():
            time.sleep(0.05)
        return reply
    return hold


def _tool_turn_blocks() -> list[dict]:
    return message_from_sse(TOOL_TURN_SSE.read_bytes())["content"]


def test_pinned_claude_is_installed():
    assert claude_version() == CLAUDE_VERSION


def test_tool_loop_bash_then_text(tmp_path):
    """Claude Code runs the scripted Bash call, sends the result back with the thinking replayed, then prints
    the final text; the requests look as CLIENTS.md says."""
    home = make_claude_home(tmp_path)
    script = [TOOL_TURN_SSE.read_bytes(), _after(1.5, FINAL_TEXT_SSE.read_bytes())]
    with ScriptedMessages(script=script) as server, RefusingProxy() as outside:
        result = run_claude_print(home, PROMPT, base_url=server.base_url, api_key="sk-harness-1",
                                  https_proxy=outside.url)

    assert result.returncode == 0, result.stderr[-3000:]
    assert FINAL_TEXT in result.stdout
    assert (home.workdir / "out.txt").read_text().strip() == "hi"  # the Bash tool really ran
    assert outside.targets == []

    first, second = server.agent_requests()
    for request in (first, second):
        assert request.path == "/v1/messages"
        assert request.query == {"beta": ["true"]}
        headers = request.headers
        assert headers["x-api-key"] == "sk-harness-1"
        assert "authorization" not in headers
        assert headers["anthropic-version"] == ANTHROPIC_VERSION
        assert BETAS_THE_PROXY_SEES <= set(headers["anthropic-beta"].split(","))
        assert headers["user-agent"].startswith(f"claude-cli/{CLAUDE_VERSION} ")
        body = request.body
        assert body["stream"] is True
        assert body["thinking"] == {"type": "adaptive"}
        assert body["output_config"]["effort"] in {"low", "medium", "high", "xhigh", "max"}
        assert isinstance(json.loads(body["metadata"]["user_id"]), dict)  # a JSON string
        assert body["max_tokens"] >= 32000
        assert re.fullmatch(r"x-anthropic-billing-header: cc_version=" + re.escape(CLAUDE_VERSION)
                            + r"\.[0-9a-f]{3}; cc_entrypoint=[a-z-]+;", body["system"][0]["text"])
        assert any(block.get("cache_control") for block in body["system"][1:])
        assert any(m["role"] == "system" for m in body["messages"])  # mid-conversation system entries
        names = {tool["name"] for tool in body["tools"]}
        assert {"Bash", "Read", "Write", "Edit"} <= names
        assert all("input_schema" in tool for tool in body["tools"])
    # The billing block is the same on every request of a session (CLIENTS.md): the prefix cache depends on it.
    assert first.body["system"][0] == second.body["system"][0]

    # The second request carries the first answer verbatim (thinking with its signature) and the tool result.
    assistant = [m for m in second.body["messages"] if m["role"] == "assistant"][-1]
    assert assistant["content"] == _tool_turn_blocks()
    tool_use = assistant["content"][-1]
    assert tool_use["name"] == "Bash" and tool_use["input"]["command"] == TOOL_TURN_COMMAND
    results = [block for m in second.body["messages"] if m["role"] == "user" and isinstance(m["content"], list)
               for block in m["content"] if block.get("type") == "tool_result"]
    assert [r["tool_use_id"] for r in results] == [tool_use["id"]]


def test_auth_token_is_sent_as_bearer(tmp_path):
    home = make_claude_home(tmp_path)
    with ScriptedMessages(script=[sse_text("pong")]) as server:
        result = run_claude_print(home, "ping", base_url=server.base_url, auth_token="sk-harness-bearer",
                                  model="deepseek-v4-pro")

    assert result.returncode == 0, result.stderr[-3000:]
    assert "pong" in result.stdout
    [request] = server.agent_requests()
    assert request.headers["authorization"] == "Bearer sk-harness-bearer"
    assert "x-api-key" not in request.headers
    assert request.body["model"] == "deepseek-v4-pro"


def test_attribution_header_switch_drops_the_billing_block(tmp_path):
    """What `claude setup` writes (CLAUDE_CODE_ATTRIBUTION_HEADER=0) keeps the system prefix stable."""
    home = make_claude_home(tmp_path)
    with ScriptedMessages(script=[sse_text("pong")]) as server:
        result = run_claude_print(home, "ping", base_url=server.base_url, api_key="sk-h",
                                  env_extra={"CLAUDE_CODE_ATTRIBUTION_HEADER": "0"})

    assert result.returncode == 0, result.stderr[-3000:]
    [request] = server.agent_requests()
    assert not any(b["text"].startswith("x-anthropic-billing-header") for b in request.body["system"])


def test_api_error_exits_nonzero(tmp_path):
    """A reply Claude Code cannot use (an `error` event) ends `claude -p` with exit 1, so tests see failures."""
    error = b'event: error\ndata: {"type": "error", "error": {"type": "invalid_request_error", "message": "scripted"}}\n\n'
    home = make_claude_home(tmp_path)
    with ScriptedMessages(script=[error]) as server:
        result = run_claude_print(home, "ping", base_url=server.base_url, api_key="sk-h", timeout=90)

    assert result.returncode == 1
    assert len(server.agent_requests()) >= 1


def test_without_the_offline_switches_claude_code_calls_out(tmp_path):
    """The control for the checks below: with default settings Claude Code does try api.anthropic.com, and the
    refusing proxy sees it -- so an empty `targets` list elsewhere means something."""
    home = make_claude_home(tmp_path)
    with RefusingProxy() as outside, ScriptedMessages(
            script=[_after(20, sse_text("pong"), until=lambda: bool(outside.targets))]) as server:
        result = run_claude_print(home, "ping", base_url=server.base_url, api_key="sk-h",
                                  https_proxy=outside.url, offline=False)

    assert result.returncode == 0, result.stderr[-3000:]
    assert any("anthropic.com" in target for target in outside.targets), outside.targets


def test_offline_run_connects_to_loopback_only(tmp_path):
    """Every connect() of Claude Code and its children, traced: only 127.0.0.1 (and local Unix sockets)."""
    strace = shutil.which("strace")
    assert strace, "strace is needed for this check: apt-get install strace"
    trace = tmp_path / "connect.trace"
    home = make_claude_home(tmp_path)
    script = [TOOL_TURN_SSE.read_bytes(), _after(1.5, FINAL_TEXT_SSE.read_bytes())]
    with ScriptedMessages(script=script) as server, RefusingProxy() as outside:
        result = run_claude_print(home, PROMPT, base_url=server.base_url, api_key="sk-h", https_proxy=outside.url,
                                  wrapper=[strace, "-f", "-qq", "-e", "trace=connect", "-o", str(trace)])

    assert result.returncode == 0, result.stderr[-3000:]
    assert outside.targets == []
    inet = [line for line in trace.read_text().splitlines() if "AF_INET" in line]
    assert inet, "the trace shows no connection at all: strace did not trace Claude Code"
    addresses = set(re.findall(r'inet6?_(?:addr|pton)\((?:AF_INET6, )?"([^"]+)"', "\n".join(inet)))
    assert addresses <= {"127.0.0.1"}, inet


def test_non_streaming_retry_gets_the_same_reply_as_json():
    """The scripted server answers a body without `stream` with the folded message (what Claude Code expects
    when it retries a broken stream)."""
    import requests

    blocks = [{"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "text", "text": "hello"},
              {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}]
    with ScriptedMessages(script=[sse_message(blocks, stop_reason="tool_use")]) as server:
        body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}],
                "tools": [{"name": "Bash", "input_schema": {"type": "object"}}]}
        reply = requests.post(f"{server.base_url}/v1/messages?beta=true", json=body, timeout=10)
        streamed = requests.post(f"{server.base_url}/v1/messages", json={**body, "stream": True}, timeout=10)
        head = requests.head(f"{server.base_url}/", timeout=10)
        counted = requests.post(f"{server.base_url}/v1/messages/count_tokens", json=body, timeout=10)

    assert reply.json()["content"] == blocks
    assert reply.json()["stop_reason"] == "tool_use"
    assert next(e["type"] for e in parse_sse(streamed.content)) == "message_start"
    assert head.status_code == 200
    assert counted.json()["input_tokens"] > 0


def test_captured_stream_folds_into_the_accepted_nonstream_message():
    """The final-text stream, folded, is the non-streaming reply Claude Code accepted (ids and usage aside)."""
    fixture = Path(__file__).resolve().parent.parent / "fixtures" / "claude-code" / "response_accepted_nonstream.json"
    accepted = json.loads(fixture.read_text())
    folded = message_from_sse(FINAL_TEXT_SSE.read_bytes())
    for key in ("type", "role", "content", "stop_reason", "stop_sequence"):
        assert folded[key] == accepted[key], key
    assert set(folded["usage"]) == set(accepted["usage"])


def test_continue_resumes_the_session_from_the_same_home(tmp_path):
    """`claude -p --continue` in the same home sends the earlier turns (thinking blocks included) again: the base
    for resumed-session tests through the proxy."""
    home = make_claude_home(tmp_path)
    with ScriptedMessages(script=[TOOL_TURN_SSE.read_bytes(), FINAL_TEXT_SSE.read_bytes(),
                                  sse_text("second session")]) as server:
        first = run_claude_print(home, PROMPT, base_url=server.base_url, api_key="sk-h")
        second = run_claude_print(home, "and now?", base_url=server.base_url, api_key="sk-h",
                                  extra_args=["--continue"])

    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    [session] = home.session_files()
    signature = _tool_turn_blocks()[0]["signature"]
    assert signature in session.read_text()  # the thinking block is stored with its signature
    assert "second session" in second.stdout
    resumed = server.agent_requests()[-1].body
    assistant_turns = [m["content"] for m in resumed["messages"] if m["role"] == "assistant"]
    assert _tool_turn_blocks() in assistant_turns  # thinking + signature + tool_use, verbatim
    assert any(block.get("type") == "text" and block.get("text") == FINAL_TEXT
               for turn in assistant_turns for block in turn)
