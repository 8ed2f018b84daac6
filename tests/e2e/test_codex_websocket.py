"""End to end over WebSocket: the real Codex CLI with `supports_websockets = true` → the real proxy → the fake
DeepSeek, the same script and assertions as test_codex_through_proxy.py (two tool calls Codex really runs, then
the answer), plus what only this transport does: Codex warms the socket up (`generate: false`), then sends only
the new input items with `previous_response_id`, and the upstream still receives the whole history, reasoning
included. What the proxy got is read from its log lines (`WS response.create frame=…B …`), one per frame."""

from __future__ import annotations

import re

import pytest

from tests.e2e import codex_on_proxy as tool_run

pytestmark = pytest.mark.e2e

FRAME_LINE = re.compile(r"WS response\.create frame=(\d+)B input_items=(\d+) new_items=(\d+) "
                        r"previous=(\S+) generate=(True|False)")


def test_codex_over_websocket_sends_only_new_items_and_the_upstream_gets_the_full_history(proxy, upstream, work):
    tool_run.script_tool_run(upstream)
    codex_home = tool_run.proxy_codex_home(proxy, work)
    config = codex_home / "config.toml"
    config.write_text(config.read_text().replace('wire_api = "responses"\n',
                                                 'wire_api = "responses"\nsupports_websockets = true\n', 1))
    log_start = len(proxy.log())

    project, result = tool_run.run_in_new_project(codex_home, work, "create hello.txt", timeout=180)

    log = proxy.log()[log_start:]
    explained = tool_run.diagnostics(result, log)
    tool_run.assert_codex_ran_the_tools(result, project, explained)

    # The transport: every request went over the socket (no fallback to HTTP), warm-up first.
    assert "POST /v1/responses" not in log, explained
    frames = [(int(size), int(total), int(new), previous, generate == "True")
              for size, total, new, previous, generate in FRAME_LINE.findall(log)]
    assert len(frames) == 4, explained  # the warm-up, then one request per model call
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
    tool_run.assert_upstream_got_the_whole_history(upstream, explained)
