"""Issue 14 through the real server: every door's agent session keeps DeepSeek's prefix cache hitting, as measured
by the fake's cache model, and the prefix-break detector agrees that no turn broke the prefix.

The sessions are the benchmark's (bench/cache_doors.py, shortened): Codex on the Responses door (the captured prompt
and tools, reasoning replayed through encrypted_content, a developer steer, a resume that renames the leading items),
Claude Code on the Messages door (the billing header with a per-request nonce, thinking blocks, tool_use /
tool_result, a moving cache_control marker, a system-entry steer, a title side call, a resume with a new session
id; translated, and passed through to the Anthropic endpoint), Gemini CLI on the Gemini door (thought signatures, a resume that replaces them with the skip marker) and a Chat
agent loop on the Chat door."""

from __future__ import annotations

from itertools import pairwise

import pytest

from bench.cache_doors import DOORS
from bench.cache_session import SessionPlan, drive, is_side_call, scripted_replies
from deepseek_proxy.core.prefix import PrefixTracker, anthropic_prompt
from tests.fakes.fake_deepseek import CACHE_UNIT_TOKENS


@pytest.mark.parametrize("door", DOORS, ids=lambda door: door.key)
def test_each_upstream_prompt_hits_everything_the_previous_one_cached(door, proxy, upstream, start_proxy):
    if door.proxy_config:  # the door's own config (the pass-through session: messages_upstream = "anthropic")
        proxy = start_proxy(upstream.base_url, door.proxy_config)
    plan = SessionPlan(calls=8, steer_at=5, resume_at=7, switch_at=0, switch_back_at=0)
    upstream.script(*[scripted_replies(door.tools)] * (plan.calls + 2))  # one callable: it counts the steps
    drive(door.proxy_session(lambda: proxy.base_url, lambda: None), plan, door.tools, steer_text=door.steer_text,
          switches=False)

    sent = upstream.chat_requests + upstream.anthropic_requests  # one door uses one endpoint
    assert [r.rejection for r in sent] == [None] * len(sent)
    records = [r for r in sent if not is_side_call(r.body)]
    assert len(records) == plan.calls
    assert records[0].cache_hit_tokens == 0
    for previous, current in pairwise(records):
        whole_blocks = previous.prompt_tokens // CACHE_UNIT_TOKENS * CACHE_UNIT_TOKENS
        assert current.cache_hit_tokens >= whole_blocks > 0

    tracker = PrefixTracker()
    prompts = [anthropic_prompt(r.body) if r in upstream.anthropic_requests else r.body for r in records]
    assert [tracker.observe(door.key, prompt) for prompt in prompts] == [None] * plan.calls
    # the steer went upstream in place: after the conversation so far, not moved to the front
    steered = records[plan.steer_at - 1].body["messages"]
    where = [i for i, m in enumerate(steered) if door.steer_text in (m.get("content") or "")]
    assert where and where[0] > [i for i, m in enumerate(steered) if m["role"] == "assistant"][0]
