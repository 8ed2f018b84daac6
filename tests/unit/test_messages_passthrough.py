"""The pass-through mode's request repair: thinking blocks for thinking-less tool turns, the billing header dropped,
nothing else touched."""

from __future__ import annotations

import copy
import json

import pytest

from deepseek_proxy.translate.messages_passthrough import (
    reasoning_entries_of_message,
    repair_passthrough_body,
    text_as_blocks,
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
    sent, repaired = repair_passthrough_body(body)
    assert repaired == []
    assistant = [i for i, m in enumerate(body["messages"]) if m["role"] == "assistant"]
    assert assistant and [sent["messages"][i] for i in assistant] == [body["messages"][i] for i in assistant]


def unmarked(value):
    if isinstance(value, dict):
        return {k: unmarked(v) for k, v in value.items() if k != "cache_control"}
    return [unmarked(v) for v in value] if isinstance(value, list) else value


def test_a_prompt_reads_the_same_as_the_newest_message_and_as_history():
    """Claude Code sends the newest prompt as a marked text block and, one turn later, the same prompt as a string
    (the captured turn 3 has turn 2's 'second' as a string): sent on as is, the previous upstream prompt would stop
    being a prefix of the next one at that message, and the cached prefix with it."""
    turn3 = fixture_body("interactive_thinking_replay_turn3")
    assert turn3["messages"][3] == {"role": "user", "content": "second"}
    turn2 = {**turn3, "messages": [*turn3["messages"][:3], {"role": "user", "content": [
        {"type": "text", "text": "second", "cache_control": {"type": "ephemeral"}}]}]}
    original = copy.deepcopy(turn3)
    sent2, sent3 = repair_passthrough_body(turn2)[0], repair_passthrough_body(turn3)[0]
    assert turn3 == original
    assert unmarked(sent2["messages"]) == unmarked(sent3["messages"][:4])
    assert sent3["messages"][3] == {"role": "user", "content": [{"type": "text", "text": "second"}]}
    assert sent3["messages"][1] == turn3["messages"][1]  # Claude Code's `role: system` entry: as it came


def test_only_non_empty_user_and_assistant_strings_become_a_block():
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""},
                {"role": "system", "content": "steer"}, {"role": "user", "content": [{"type": "text", "text": "x"}]}]
    assert text_as_blocks(messages) == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}, *messages[1:]]
    assert messages[0] == {"role": "user", "content": "hi"}
    rest = messages[1:]
    assert text_as_blocks(rest) is rest  # nothing to change: the same list, no copy


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
