"""End to end: the real Codex CLI → the real proxy (gunicorn + gevent) → the fake DeepSeek, in thinking mode.

The fake is scripted like a model at work: (1) run a command with `exec_command`, (2) create a file with the
freeform `apply_patch` tool, (3) answer. Codex really runs both tools; the fake enforces DeepSeek's rules, so a
turn replayed without its reasoning_content, an unanswered tool call or a `developer` message would fail the run.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import CODEX_FIXTURES
from tests.e2e.codex_cli import make_codex_home, run_codex_exec
from tests.fakes.fake_deepseek import Reply

pytestmark = pytest.mark.e2e

PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello from deepseek\n*** End Patch\n"
REASONING = [
    "The user wants a file. First I check the shell works.",
    "The command worked. Now I create hello.txt with apply_patch.",
    "Both steps are done; I report back.",
]


# Codex 0.169 asks for reasoning summaries on every request (`reasoning: {"effort": "high", "summary": "auto"}`,
# see tests/fixtures/codex/normal), so this run streams reasoning as summary parts (issue 11) and still replays it
# word for word from encrypted_content. The reasoning_text path (no summary asked) is covered by
# tests/integration/test_responses_api.py.
def test_codex_runs_tools_through_the_proxy_with_reasoning_replayed(proxy, upstream, work):
    upstream.script(
        Reply.tool_calls([("exec_command", {"cmd": "echo hi > out.txt && cat out.txt"})], reasoning=REASONING[0]),
        Reply.tool_calls([("apply_patch", {"input": PATCH})], reasoning=REASONING[1], split_arguments=5),
        Reply.text("Created hello.txt and out.txt.", reasoning=REASONING[2]),
    )
    catalog = json.loads((CODEX_FIXTURES / "config" / "model_catalog_deepseek.json").read_text())
    codex_home = make_codex_home(work, base_url=proxy.base_url + "/v1", model="deepseek-v4-pro",
                                 env_key="DEEPSEEK_PROXY_KEY", catalog=catalog)
    project = work / "project"
    project.mkdir()

    result = run_codex_exec(codex_home, project, "create hello.txt", env_key_value="unused-by-the-proxy",
                            timeout=180)

    diagnostics = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}\nproxy log:\n{proxy.log()[-3000:]}"
    assert result.returncode == 0, diagnostics
    assert (project / "hello.txt").read_text() == "hello from deepseek\n", diagnostics
    assert (project / "out.txt").read_text() == "hi\n", diagnostics
    assert "Created hello.txt and out.txt." in result.stdout

    assert upstream.rejections == [], diagnostics
    chats = [r.body for r in upstream.chat_requests]
    assert len(chats) == 3
    first, second, third = chats
    assert first["thinking"] == {"type": "enabled"}
    assert any(t["function"]["name"] == "apply_patch" for t in first["tools"]), "freeform tool offered"
    # Every later request carries each earlier tool-call turn's reasoning, word for word.
    for request, expected in ((second, REASONING[:1]), (third, REASONING[:2])):
        turns = [m for m in request["messages"] if m["role"] == "assistant" and m.get("tool_calls")]
        assert [m["reasoning_content"] for m in turns] == expected
    # Codex resends the whole history: turn N's messages are a prefix of turn N+1's (prefix cache hits).
    assert third["messages"][: len(second["messages"])] == second["messages"]
    # The apply_patch output went back as a tool message answering the call.
    patch_call = next(m for m in third["messages"] if m.get("tool_calls") and
                      m["tool_calls"][0]["function"]["name"] == "apply_patch")
    answer = third["messages"][third["messages"].index(patch_call) + 1]
    assert answer["role"] == "tool" and answer["tool_call_id"] == patch_call["tool_calls"][0]["id"]
