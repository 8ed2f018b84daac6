"""The fake DeepSeek's Anthropic endpoint (the pass-through mode's upstream) models the prefix cache the way its chat
endpoint does, so pass-through tests can measure hits: on the prompt rendered from the Messages body (system text,
tools, conversation), with `cache_control` markers left out, per key and model."""

from __future__ import annotations

import copy

import requests

from tests.fakes.fake_deepseek import CACHE_UNIT_TOKENS, FakeDeepSeek, Reply, anthropic_prompt_body, prompt_tokens

KEY = "sk-fake-anthropic-cache"
TOOLS = [{"name": f"tool_{i}", "description": f"Tool number {i} does a thing. " * 30,
          "input_schema": {"type": "object", "properties": {}}} for i in range(3)]
SYSTEM = [{"type": "text", "text": "You are a coding agent in a repository. " * 40,
           "cache_control": {"type": "ephemeral"}}]


def body(question: str, *, marked: bool = True) -> dict:
    content = [{"type": "text", "text": question, **({"cache_control": {"type": "ephemeral"}} if marked else {})}]
    return {"model": "deepseek-v4-pro", "max_tokens": 100, "system": copy.deepcopy(SYSTEM), "tools": TOOLS,
            "messages": [{"role": "user", "content": content}]}


def post(fake: FakeDeepSeek, payload: dict, key: str = KEY) -> dict:
    response = requests.post(fake.base_url + "/anthropic/v1/messages", json=payload, timeout=10,
                             headers={"x-api-key": key, "anthropic-version": "2023-06-01"})
    assert response.status_code == 200, response.text
    return response.json()["usage"]


def test_a_second_request_hits_the_shared_system_and_tools_and_usage_says_so():
    with FakeDeepSeek(api_key=KEY) as fake:
        fake.default_reply = Reply.text("ok")
        first = post(fake, body("What is in this repository?"))
        second = post(fake, body("Which tests are slow?", marked=False))  # cache_control moved: not prompt text
        records = fake.anthropic_requests

    lead = len(prompt_tokens(anthropic_prompt_body({**body(""), "messages": []})))
    assert lead > 4 * CACHE_UNIT_TOKENS
    assert first["cache_read_input_tokens"] == records[0].cache_hit_tokens == 0
    assert records[1].cache_hit_tokens >= lead // CACHE_UNIT_TOKENS * CACHE_UNIT_TOKENS
    assert records[1].cache_hit_tokens < records[1].prompt_tokens
    assert second["cache_read_input_tokens"] == records[1].cache_hit_tokens
    assert second["input_tokens"] == records[1].prompt_tokens - records[1].cache_hit_tokens


def test_the_rendering_ignores_cache_control_but_not_the_text():
    marked, unmarked = body("same question"), body("same question", marked=False)
    unmarked["system"][0].pop("cache_control")
    assert prompt_tokens(anthropic_prompt_body(marked)) == prompt_tokens(anthropic_prompt_body(unmarked))
    other = body("same question")
    other["system"][0]["text"] += "!"
    assert prompt_tokens(anthropic_prompt_body(other)) != prompt_tokens(anthropic_prompt_body(marked))


def test_another_key_does_not_share_the_cache():
    with FakeDeepSeek(api_key=KEY) as fake:
        fake.default_reply = Reply.text("ok")
        post(fake, body("a"))
        fake.rules.api_key = "sk-other-fake-key"
        post(fake, body("a"), key="sk-other-fake-key")
        assert [r.cache_hit_tokens for r in fake.anthropic_requests] == [0, 0]
