"""Issue 14 through the real server: a Codex-shaped session on the Responses door keeps DeepSeek's prefix cache
hitting, as measured by the fake's cache model, and the prefix-break detector agrees that no turn broke the prefix.

The session is the benchmark's (bench/cache_session.py: the captured Codex prompt and tools, exec_command /
apply_patch / answer, reasoning replayed through encrypted_content, a mid-conversation developer message and a
resume that renames the leading items), shortened."""

from __future__ import annotations

from itertools import pairwise

from bench.cache_session import SessionPlan, run_proxy_session, scripted_reply
from deepseek_proxy.core.prefix import PrefixTracker
from tests.fakes.fake_deepseek import CACHE_UNIT_TOKENS


def test_each_upstream_prompt_hits_everything_the_previous_one_cached(proxy, upstream):
    plan = SessionPlan(calls=8, steer_at=5, resume_at=7)
    upstream.script(*(scripted_reply(call) for call in range(1, plan.calls + 1)))
    run_proxy_session(lambda: proxy.base_url, lambda: None, plan)

    records = upstream.chat_requests
    assert [r.rejection for r in records] == [None] * plan.calls
    assert records[0].cache_hit_tokens == 0
    for previous, current in pairwise(records):
        whole_blocks = previous.prompt_tokens // CACHE_UNIT_TOKENS * CACHE_UNIT_TOKENS
        assert current.cache_hit_tokens >= whole_blocks > 0

    tracker = PrefixTracker()
    assert [tracker.observe("codex", r.body) for r in records] == [None] * plan.calls
    # the steer went upstream in place, as a system message after the conversation so far
    steered = records[plan.steer_at - 1].body["messages"]
    assert steered[0]["role"] == "system" and any(
        m["role"] == "system" and "<steer>" in (m.get("content") or "") for m in steered[3:])
