"""The pass-through mode's request repair: thinking blocks for thinking-less tool turns, the billing header dropped,
nothing else touched."""

from __future__ import annotations

import copy
import json

import pytest

from deepseek_proxy.translate.messages_passthrough import (
    reasoning_entries_of_message,
    repair_passthrough_body,
)
from deepseek_proxy.translate.messages_request import REASONING_PLACEHOLDER
from deepseek_proxy.translate.reasoning import ReasoningCache
from tests.conftest import CLAUDE_FIXTURES


def fixture_body(name: str) -> dict:
    return json.loads((CLAUDE_FIXTURES / f"{name}.json").read_text())["body"]


def test_a_thinking_less_tool_turn_gets_a_placeholder_thinking_block():
    body = fixture_body("main_after_agent_tool")  # an Agent tool_use turn without thinking, thinking adaptive
    original = copy.deepcopy(body)
    repaired, indexes = repair_passthrough_body(body)
    assert body == original
    assert indexes == [2]
    content = repaired["messages"][2]["content"]
    assert content[0] == {"type": "thinking", "thinking": REASONING_PLACEHOLDER, "signature": ""}
    assert content[1:] == body["messages"][2]["content"]
    assert [m for i, m in enumerate(repaired["messages"]) if i != 2] == [
        m for i, m in enumerate(body["messages"]) if i != 2]


def test_the_cache_supplies_the_real_reasoning_keyed_like_the_reply_that_made_it():
    body = fixture_body("main_after_agent_tool")
    reply = {"content": [{"type": "thinking", "thinking": "delegate the search", "signature": "ds-sig"},
                         *body["messages"][2]["content"]]}
    cache = ReasoningCache()
    for key, reasoning in reasoning_entries_of_message(reply):
        cache.put(key, reasoning)
    repaired, _ = repair_passthrough_body(body, cache)
    assert repaired["messages"][2]["content"][0]["thinking"] == "delegate the search"


@pytest.mark.parametrize("name", ["p_default_turn3_parallel_tools", "interactive_thinking_replay_turn3"])
def test_turns_that_carry_thinking_are_left_alone(name):
    body = fixture_body(name)
    assert repair_passthrough_body(body) == (body, [])


def test_no_repair_when_thinking_is_off_or_repair_is_off_but_the_billing_header_always_goes():
    body = fixture_body("subagent_explore_after_tool")  # thinking disabled, a tool turn without thinking
    body["system"][0]["text"] = "x-anthropic-billing-header: cc_version=2.1.197.abc; cc_entrypoint=cli;"
    repaired, indexes = repair_passthrough_body(body)
    assert indexes == [] and repaired["messages"] == body["messages"]
    assert repaired["system"] == body["system"][1:]
    adaptive = {**fixture_body("main_after_agent_tool")}
    assert repair_passthrough_body(adaptive, repair="off") == (adaptive, [])
    text_turn = {"thinking": {"type": "adaptive"}, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    assert repair_passthrough_body(text_turn)[1] == []
    assert repair_passthrough_body(text_turn, repair="always")[0]["messages"][1]["content"] == [
        {"type": "thinking", "thinking": REASONING_PLACEHOLDER, "signature": ""}, {"type": "text", "text": "hello"}]
