"""End to end: the real Codex CLI → the real proxy (gunicorn + gevent) → the fake DeepSeek, in thinking mode.

The fake is scripted like a model at work: (1) run a command with `exec_command`, (2) create a file with the
freeform `apply_patch` tool, (3) answer (tests/e2e/codex_on_proxy.py). Codex really runs both tools; the fake
enforces DeepSeek's rules, so a turn replayed without its reasoning_content, an unanswered tool call or a
`developer` message would fail the run.
"""

from __future__ import annotations

import pytest

from tests.e2e import codex_on_proxy as tool_run

pytestmark = pytest.mark.e2e


# Codex 0.169 asks for reasoning summaries on every request (`reasoning: {"effort": "high", "summary": "auto"}`,
# see tests/fixtures/codex/normal), so this run streams reasoning as summary parts (issue 11) and still replays it
# word for word from encrypted_content. The reasoning_text path (no summary asked) is covered by
# tests/integration/test_responses_api.py.
def test_codex_runs_tools_through_the_proxy_with_reasoning_replayed(proxy, upstream, work):
    tool_run.script_tool_run(upstream)
    codex_home = tool_run.proxy_codex_home(proxy, work)

    project, result = tool_run.run_in_new_project(codex_home, work, "create hello.txt", timeout=180)

    explained = tool_run.diagnostics(result, proxy.log())
    tool_run.assert_codex_ran_the_tools(result, project, explained)
    tool_run.assert_upstream_got_the_whole_history(upstream, explained)
