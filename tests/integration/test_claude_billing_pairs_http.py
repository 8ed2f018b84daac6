"""Issue 14 through the real server: two Claude Code requests that differ only in the billing block reach DeepSeek
as the same bytes, in the translating mode (Chat Completions) and the pass-through mode (DeepSeek's /anthropic),
streamed and not; the fake records each upstream body as bytes and its cache model says the second one hit
everything the first one cached. The base is a captured Claude Code request (a tool turn with its thinking)."""

from __future__ import annotations

import copy
import json

import pytest
import requests

from tests.conftest import CLAUDE_FIXTURES
from tests.fakes.fake_deepseek import CACHE_UNIT_TOKENS, FakeDeepSeek, RecordedRequest, Reply
from tests.unit.test_claude_billing_pairs import HEADER
from tests.unit.test_claude_billing_pairs import PAIRS as BILLING_PAIRS

PAIRS = {name: BILLING_PAIRS[name] for name in ("session suffix", "cch nonce")}
PASSTHROUGH_CONFIG = """
[models.deepseek-v4-pro]
messages_upstream = "anthropic"
"""


@pytest.fixture()
def door(request, proxy, start_proxy, upstream):
    """(the proxy's base URL, the upstream requests of that mode) for `translate` or `anthropic`."""
    if request.param == "translate":
        return proxy.base_url, lambda: upstream.chat_requests
    return start_proxy(upstream.base_url, PASSTHROUGH_CONFIG).base_url, lambda: upstream.anthropic_requests


def claude_request(billing_line: str, *, stream: bool, system_after: list | None = None) -> dict:
    body = json.loads((CLAUDE_FIXTURES / "p_default_turn2_after_tool.json").read_text())["body"]
    body = copy.deepcopy(body)
    body["system"][0] = {"type": "text", "text": billing_line}
    body["system"] += system_after or []
    body["stream"] = stream
    return body


def send(base_url: str, body: dict) -> None:
    with requests.post(base_url + "/v1/messages?beta=true", json=body, stream=body["stream"], timeout=30,
                       headers={"anthropic-version": "2023-06-01", "x-api-key": "sk-claude"}) as response:
        assert response.status_code == 200, response.text
        content = response.content
    if body["stream"]:
        assert b"event: message_stop" in content
    else:
        assert json.loads(content)["content"][-1]["text"] == "Done."


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "not-streamed"])
@pytest.mark.parametrize("pair", list(PAIRS))
@pytest.mark.parametrize("door", ["translate", "anthropic"], indirect=True)
def test_billing_only_pairs_reach_the_upstream_as_identical_bytes(door, upstream: FakeDeepSeek, pair, stream):
    base_url, sent = door
    upstream.default_reply = Reply.text("Done.", reasoning="Nothing left to do.")
    for line in PAIRS[pair]:
        send(base_url, claude_request(line, stream=stream))

    first, second = sent()
    assert first.raw == second.raw
    assert HEADER.encode() not in first.raw
    assert json.loads(first.raw)["stream"] is stream  # the client's mode went upstream as it was
    assert upstream.rejections == []
    assert first.cache_hit_tokens == 0
    assert second.cache_hit_tokens == _whole_blocks(second) > 20 * CACHE_UNIT_TOKENS


@pytest.mark.parametrize("door", ["translate", "anthropic"], indirect=True)
def test_a_billing_line_that_is_not_the_first_block_reaches_the_upstream(door, upstream: FakeDeepSeek):
    base_url, sent = door
    upstream.default_reply = Reply.text("Done.")
    later = {"type": "text", "text": f"{HEADER} quoted by the user, not Claude Code's"}
    send(base_url, claude_request(PAIRS["session suffix"][0], stream=False, system_after=[later]))
    [request] = sent()
    assert HEADER.encode() in request.raw and b"quoted by the user" in request.raw
    assert b"cc_version=2.1.197.1c0" not in request.raw


def _whole_blocks(record: RecordedRequest) -> int:
    return record.prompt_tokens // CACHE_UNIT_TOKENS * CACHE_UNIT_TOKENS
