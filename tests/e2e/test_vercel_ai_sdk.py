"""The Vercel AI SDK (`ai` 6 + `@ai-sdk/openai` 3, pinned in tests/e2e/package.json) with its default settings
against the real server and the fake DeepSeek: a multi-step tool loop, a second chat turn and a streamed reply with
reasoning summaries (vercel_ai.mjs). With `store` unset the SDK refers to earlier output by `item_reference`, so
this checks the stored responses end to end; the fake, like DeepSeek in thinking mode, refuses a tool-call turn
sent back without its reasoning."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fakes.fake_deepseek import Reply

pytestmark = pytest.mark.e2e  # drives a real client binary from tests/e2e/node_modules

E2E = Path(__file__).resolve().parent
SCRIPT = E2E / "vercel_ai.mjs"
MODEL = "deepseek-v4-pro"


def run_script(base_url: str) -> dict:
    node = shutil.which("node")
    if node is None or not (E2E / "node_modules" / "ai").is_dir():
        pytest.fail("the Vercel AI SDK test needs node and `npm ci --prefix tests/e2e --no-audit --no-fund`")
    done = subprocess.run([node, str(SCRIPT), base_url, MODEL], capture_output=True, text=True, timeout=120, check=False,
                          cwd=E2E)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_vercel_ai_sdk_tool_loop_second_turn_and_summaries(proxy, upstream):
    upstream.script(
        Reply.tool_calls([("list_files", {"dir": "."})], reasoning="I should look at the directory."),
        Reply.text("There are two files: a.txt and b.txt.", reasoning="Report them."),
        Reply.text("b.txt is larger.", reasoning="Compare."),
        Reply.text("Hi!", reasoning="A greeting is due."),
    )
    result = run_script(proxy.base_url)

    assert result["steps"] == 2 and result["toolResults"] == ["a.txt b.txt in ."]
    assert result["firstText"] == "There are two files: a.txt and b.txt."
    assert result["secondText"] == "b.txt is larger."
    assert result["streamedText"] == "Hi!"
    assert result["streamedReasoning"] == "A greeting is due."
    assert result["finishReasons"] == ["stop", "stop", "stop"]
    assert upstream.rejections == []

    sent = [r.body["messages"] for r in upstream.chat_requests]
    assert len(sent) == 4
    # Step 2 of the loop: the tool-call turn went back with its reasoning (resolved from item references).
    step2 = next(m for m in sent[1] if m["role"] == "assistant")
    assert step2["reasoning_content"] == "I should look at the directory."
    assert step2["tool_calls"][0]["function"]["name"] == "list_files"
    assert [m["role"] for m in sent[1]] == ["user", "assistant", "tool"]
    # The second chat turn carries the whole conversation, in order.
    assert [m["role"] for m in sent[2]] == ["user", "assistant", "tool", "assistant", "user"]
    assert sent[2][-1]["content"] == "Thanks. Which one is larger?"
