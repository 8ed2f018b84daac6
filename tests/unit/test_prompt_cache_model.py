"""The fake upstream's model of DeepSeek's prefix cache (tests/fakes/fake_deepseek.PromptCache), and its report in
usage, streamed and not."""

from __future__ import annotations

import json

import requests

from tests.fakes.fake_deepseek import (
    FakeDeepSeek,
    PromptCache,
    Reply,
    prompt_pieces,
    prompt_tokens,
)

SYSTEM = {"role": "system", "content": "You are a coding agent. Follow the repository conventions. " * 40}
TOOLS = [
    {"type": "function", "function": {"name": f"tool_{i}", "description": f"Does thing {i} to the workspace. " * 8,
                                      "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}
    for i in range(4)
]


def turn(n: int) -> list[dict]:
    return [{"role": "user", "content": f"Step {n}: look at file_{n}.py and explain it in detail please. " * 6},
            {"role": "assistant", "content": f"File {n} defines a parser for the config format. " * 6}]


def body(messages, tools=TOOLS, **extra):
    return {"model": "deepseek-v4-pro", "messages": messages, "tools": tools, **extra}


def blocks(cache: PromptCache, request: dict) -> int:
    return len(prompt_tokens(request)) // cache.block_tokens * cache.block_tokens


def test_first_request_misses_then_an_identical_one_hits_every_whole_block():
    cache = PromptCache()
    request = body([SYSTEM, *turn(1), *turn(2)])
    total, hit = cache.lookup("k", request)
    assert hit == 0 and total == len(prompt_tokens(request)) > 3 * cache.block_tokens
    again_total, again_hit = cache.lookup("k", request)
    assert again_total == total
    assert again_hit == blocks(cache, request) and again_hit % 64 == 0 and total - again_hit < 64


def test_a_grown_conversation_hits_everything_the_previous_prompt_had_in_whole_blocks():
    cache = PromptCache()
    first = body([SYSTEM, *turn(1)])
    cache.lookup("k", first)
    _, hit = cache.lookup("k", body([SYSTEM, *turn(1), *turn(2)]))
    assert hit == blocks(cache, first)


def test_a_change_at_message_n_hits_only_the_blocks_before_it():
    cache = PromptCache()
    messages = [SYSTEM, *turn(1), *turn(2), *turn(3)]
    cache.lookup("k", body(messages))
    changed = [*messages[:3], {"role": "user", "content": "Something else entirely. " * 20}, *messages[4:]]
    _, hit = cache.lookup("k", body(changed))
    unchanged_prefix = body(messages[:3])  # system, tools, turn 1: what precedes the change
    assert hit == blocks(cache, unchanged_prefix)
    assert 0 < hit < blocks(cache, body(messages))


def test_reordered_tools_break_the_prefix_at_the_tools():
    cache = PromptCache()
    cache.lookup("k", body([SYSTEM, *turn(1)]))
    _, hit = cache.lookup("k", body([SYSTEM, *turn(1)], tools=[TOOLS[1], TOOLS[0], *TOOLS[2:]]))
    assert hit == blocks(cache, body([SYSTEM], tools=[]))  # only the system prompt before the tools still hits
    assert hit > 0


def test_tools_come_after_the_leading_system_messages_and_a_mid_conversation_system_message_stays_in_place():
    late_system = {"role": "system", "content": "The user switched to plan mode."}
    request = body([SYSTEM, *turn(1), late_system, *turn(2)])
    pieces = prompt_pieces(request)
    assert json.loads(pieces[0]) == SYSTEM
    assert [json.loads(p) for p in pieces[1:5]] == TOOLS
    assert json.loads(pieces[7]) == late_system  # after turn 1's two messages, where the client put it


def test_json_key_order_inside_a_message_does_not_matter_but_content_does():
    cache = PromptCache()
    cache.lookup("k", body([SYSTEM, *turn(1)]))
    reordered = [{"content": m["content"], "role": m["role"]} for m in [SYSTEM, *turn(1)]]
    _, hit = cache.lookup("k", body(reordered))
    assert hit == blocks(cache, body(reordered))


def test_accounts_do_not_share_a_cache():
    cache = PromptCache()
    request = body([SYSTEM, *turn(1)])
    cache.lookup("alice", request)
    assert cache.lookup("bob", request)[1] == 0
    assert cache.lookup("alice", request)[1] > 0


def test_entries_expire_and_the_size_is_bounded():
    now = [0.0]
    cache = PromptCache(ttl=10.0, clock=lambda: now[0])
    request = body([SYSTEM, *turn(1)])
    cache.lookup("k", request)
    now[0] = 9.0
    assert cache.lookup("k", request)[1] > 0  # a hit refreshes the entries' lifetime
    now[0] = 18.0
    assert cache.lookup("k", request)[1] > 0
    now[0] = 40.0
    assert cache.lookup("k", request)[1] == 0

    small = PromptCache(max_blocks=3)
    small.lookup("k", request)
    assert len(small) == 3
    assert small.lookup("k", request)[1] == 0  # the first blocks were evicted: nothing leads to the kept ones


def test_a_block_size_is_configurable():
    cache = PromptCache(block_tokens=16)
    request = body([SYSTEM, *turn(1)])
    cache.lookup("k", request)
    assert cache.lookup("k", request)[1] == len(prompt_tokens(request)) // 16 * 16


def _post(fake, payload, stream=False):
    return requests.post(fake.base_url + "/chat/completions", json=payload, stream=stream, timeout=5,
                         headers={"Authorization": "Bearer sk-fake-deepseek"})


def _stream_usage(response) -> dict:
    usage = None
    for line in response.iter_lines():
        if line.startswith(b"data: {"):
            usage = json.loads(line[6:]).get("usage") or usage
    assert usage is not None
    return usage


def test_the_fake_reports_hits_in_usage_streamed_and_not_and_records_them():
    with FakeDeepSeek() as fake:
        request = body([SYSTEM, *turn(1)])
        first = _post(fake, request).json()["usage"]
        fake.script(Reply.text("again"))
        streamed = _stream_usage(_post(fake, dict(request, stream=True, stream_options={"include_usage": True}),
                                       stream=True))
        assert first["prompt_cache_hit_tokens"] == 0
        expected = len(prompt_tokens(request)) // 64 * 64
        assert streamed["prompt_cache_hit_tokens"] == expected > 0
        assert streamed["prompt_tokens_details"]["cached_tokens"] == expected
        assert streamed["prompt_cache_miss_tokens"] == streamed["prompt_tokens"] - expected
        assert [(r.prompt_tokens, r.cache_hit_tokens) for r in fake.chat_requests] == [
            (first["prompt_tokens"], 0), (streamed["prompt_tokens"], expected)]


def test_models_do_not_share_a_cache():
    with FakeDeepSeek() as fake:
        request = body([SYSTEM, *turn(1)])
        _post(fake, request)
        assert _post(fake, dict(request, model="deepseek-v4-flash")).json()["usage"]["prompt_cache_hit_tokens"] == 0
        assert _post(fake, request).json()["usage"]["prompt_cache_hit_tokens"] > 0


def test_a_failed_request_does_not_fill_the_cache():
    with FakeDeepSeek() as fake:
        request = body([SYSTEM, *turn(1)])
        fake.script(Reply.error(503, "Server overloaded"))
        assert _post(fake, request).status_code == 503
        assert _post(fake, request).json()["usage"]["prompt_cache_hit_tokens"] == 0
