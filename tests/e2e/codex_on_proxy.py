"""The real Codex CLI pointed at the proxy under test (DeepSeek's model catalog, a key the proxy does not check),
and the scripted tool run the HTTP and the WebSocket e2e tests both drive: (1) run a command with `exec_command`,
(2) create a file with the freeform `apply_patch` tool, (3) answer; with what Codex and the upstream must show
after it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import CODEX_FIXTURES
from tests.e2e.codex_cli import make_codex_home, run_codex_exec
from tests.fakes.fake_deepseek import Reply

PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello from deepseek\n*** End Patch\n"
REASONING = [
    "The user wants a file. First I check the shell works.",
    "The command worked. Now I create hello.txt with apply_patch.",
    "Both steps are done; I report back.",
]
ANSWER = "Created hello.txt and out.txt."


def proxy_codex_home(proxy, work: Path, *, max_retries: int = 0) -> Path:
    """A CODEX_HOME whose provider is the proxy's Responses door, with the catalog `deepseek-proxy codex setup`
    writes (tests/fixtures/codex/config)."""
    catalog = json.loads((CODEX_FIXTURES / "config" / "model_catalog_deepseek.json").read_text())
    return make_codex_home(work, base_url=proxy.base_url + "/v1", model="deepseek-v4-pro",
                           env_key="DEEPSEEK_PROXY_KEY", catalog=catalog, max_retries=max_retries)


def run_in_new_project(codex_home: Path, work: Path, prompt: str, *,
                       timeout: float = 120) -> tuple[Path, subprocess.CompletedProcess]:
    """``codex exec PROMPT`` in a fresh `work/project`; the project directory and the result."""
    project = work / "project"
    project.mkdir()
    return project, run_codex_exec(codex_home, project, prompt, env_key_value="unused-by-the-proxy", timeout=timeout)


def diagnostics(result: subprocess.CompletedProcess, proxy_log: str) -> str:
    return f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}\nproxy log:\n{proxy_log[-4000:]}"


def script_tool_run(upstream) -> None:
    upstream.script(
        Reply.tool_calls([("exec_command", {"cmd": "echo hi > out.txt && cat out.txt"})], reasoning=REASONING[0]),
        Reply.tool_calls([("apply_patch", {"input": PATCH})], reasoning=REASONING[1], split_arguments=5),
        Reply.text(ANSWER, reasoning=REASONING[2]),
    )


def assert_codex_ran_the_tools(result: subprocess.CompletedProcess, project: Path, diagnostics: str) -> None:
    assert result.returncode == 0, diagnostics
    assert (project / "hello.txt").read_text() == "hello from deepseek\n", diagnostics
    assert (project / "out.txt").read_text() == "hi\n", diagnostics
    assert ANSWER in result.stdout


def assert_upstream_got_the_whole_history(upstream, diagnostics: str) -> None:
    """Three valid requests (the fake enforces DeepSeek's rules, so a turn replayed without its reasoning_content,
    an unanswered tool call or a `developer` message would be rejected), each carrying the whole history."""
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
    assert second["messages"][: len(first["messages"])] == first["messages"]
    # The apply_patch output went back as a tool message answering the call.
    patch_call = next(m for m in third["messages"] if m.get("tool_calls") and
                      m["tool_calls"][0]["function"]["name"] == "apply_patch")
    answer = third["messages"][third["messages"].index(patch_call) + 1]
    assert answer["role"] == "tool" and answer["tool_call_id"] == patch_call["tool_calls"][0]["id"]
