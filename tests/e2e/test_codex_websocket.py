"""End to end over WebSocket: the real Codex CLI with `supports_websockets = true` → the real proxy → the fake
DeepSeek, the same script and assertions as test_codex_through_proxy.py (two tool calls Codex really runs, then
the answer), plus what only this transport does: Codex warms the socket up (`generate: false`), then sends only
the new input items with `previous_response_id`, and the upstream still receives the whole history, reasoning
included. What the proxy got is read from its log lines (`WS response.create frame=…B …`), one per frame."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import CODEX_FIXTURES
from tests.e2e.codex_cli import make_codex_home, run_codex_exec
from tests.e2e.test_codex_through_proxy import PATCH, REASONING
from tests.fakes.fake_deepseek import Reply

pytestmark = pytest.mark.e2e

FRAME_LINE = re.compile(r"WS response\.create frame=(\d+)B input_items=(\d+) new_items=(\d+) "
                        r"previous=(\S+) generate=(True|False)")


def test_codex_over_websocket_sends_only_new_items_and_the_upstream_gets_the_full_history(proxy, upstream, work):
    upstream.script(
        Reply.tool_calls([("exec_command", {"cmd": "echo hi > out.txt && cat out.txt"})], reasoning=REASONING[0]),
        Reply.tool_calls([("apply_patch", {"input": PATCH})], reasoning=REASONING[1], split_arguments=5),
        Reply.text("Created hello.txt and out.txt.", reasoning=REASONING[2]),
    )
    catalog = json.loads((CODEX_FIXTURES / "config" / "model_catalog_deepseek.json").read_text())
    codex_home = make_codex_home(work, base_url=proxy.base_url + "/v1", model="deepseek-v4-pro",
                                 env_key="DEEPSEEK_PROXY_KEY", catalog=catalog)
    config = codex_home / "config.toml"
    config.write_text(config.read_text().replace('wire_api = "responses"\n',
                                                 'wire_api = "responses"\nsupports_websockets = true\n', 1))
    project = work / "project"
    project.mkdir()
    log_start = len(proxy.log())

    result = run_codex_exec(codex_home, project, "create hello.txt", env_key_value="unused-by-the-proxy",
                            timeout=180)

    log = proxy.log()[log_start:]
    diagnostics = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}\nproxy log:\n{log[-4000:]}"
    assert result.returncode == 0, diagnostics
    assert (project / "hello.txt").read_text() == "hello from deepseek\n", diagnostics
    assert (project / "out.txt").read_text() == "hi\n", diagnostics
    assert "Created hello.txt and out.txt." in result.stdout

    # The transport: every request went over the socket (no fallback to HTTP), warm-up first.
    assert "POST /v1/responses" not in log, diagnostics
    frames = [(int(size), int(total), int(new), previous, generate == "True")
              for size, total, new, previous, generate in FRAME_LINE.findall(log)]
    assert len(frames) == 4, diagnostics  # the warm-up, then one request per model call
    warm_up, *turns = frames
    assert warm_up[4] is False and warm_up[3] == "-"
    for _size, total, new, previous, generate in turns:
        assert generate and previous.startswith("resp_"), frames
        assert new < total, frames  # only the new items travelled ...
    # ... so a frame does not grow with the history: the third call's frame stands for 3 more items than the
    # second's (the reply's reasoning and call, and the tool output) but carries only the tool output. (Most of
    # a frame is the tools and settings, which Codex repeats in every frame; bench/websocket.py measures a 1 MB
    # history.)
    (second_size, second_total, *_), (third_size, third_total, third_new, *_) = turns[1:]
    assert third_total - second_total == 3 and third_new == 1, frames
    assert abs(third_size - second_size) < 1000, frames

    # The upstream: exactly the HTTP e2e's assertions.
    assert upstream.rejections == [], diagnostics
    chats = [r.body for r in upstream.chat_requests]
    assert len(chats) == 3
    first, second, third = chats
    assert first["thinking"] == {"type": "enabled"}
    assert any(t["function"]["name"] == "apply_patch" for t in first["tools"]), "freeform tool offered"
    for request, expected in ((second, REASONING[:1]), (third, REASONING[:2])):
        turns_with_calls = [m for m in request["messages"] if m["role"] == "assistant" and m.get("tool_calls")]
        assert [m["reasoning_content"] for m in turns_with_calls] == expected
    assert third["messages"][: len(second["messages"])] == second["messages"]
    assert second["messages"][: len(first["messages"])] == first["messages"]
    patch_call = next(m for m in third["messages"] if m.get("tool_calls") and
                      m["tool_calls"][0]["function"]["name"] == "apply_patch")
    answer = third["messages"][third["messages"].index(patch_call) + 1]
    assert answer["role"] == "tool" and answer["tool_call_id"] == patch_call["tool_calls"][0]["id"]
