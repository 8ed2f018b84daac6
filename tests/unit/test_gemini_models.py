"""Model names Gemini CLI asks for → configured models (issue 13), and countTokens for the Gemini door."""

from __future__ import annotations

import json

import pytest

from deepseek_proxy.config import ModelConfig, default_models
from deepseek_proxy.translate.errors import RequestError
from deepseek_proxy.translate.gemini_models import (
    gemini_model_list,
    resolve_gemini_model,
)
from deepseek_proxy.translate.gemini_request import translate_gemini_request
from deepseek_proxy.translate.gemini_tokens import count_gemini_tokens
from deepseek_proxy.translate.messages_tokens import (
    PER_MESSAGE,
    count_chat_tokens,
    estimate_text_tokens,
)
from deepseek_proxy.translate.reasoning import ReasoningCodec
from deepseek_proxy.upstream.profiles import profile_named
from tests.conftest import GEMINI_FIXTURES

MODELS = default_models()
CODEC = ReasoningCodec(b"k")
DEEPSEEK = profile_named("deepseek")


@pytest.mark.parametrize(("requested", "target", "thinking"), [
    ("gemini-3.5-flash-lite", "deepseek-v4-flash", False),  # the router (fixture)
    ("gemini-2.5-flash-lite-preview-06-17", "deepseek-v4-flash", False),
    ("gemini-3-flash-preview", "deepseek-v4-flash", False),  # the next-speaker check
    ("gemini-3.8-flash", "deepseek-v4-pro", True),  # the main loop (fixture)
    ("gemini-3.1-pro-preview-customtools", "deepseek-v4-pro", True),
    ("models/gemini-2.5-pro", "deepseek-v4-pro", True),
    ("GEMINI-2.5-PRO", "deepseek-v4-pro", True),
    ("deepseek-v4-pro", "deepseek-v4-pro", True),  # -m deepseek-v4-pro
    ("models/deepseek-v4-flash", "deepseek-v4-flash", True),
])
def test_names_resolve(requested, target, thinking):
    choice = resolve_gemini_model(requested, MODELS)
    assert choice is not None and choice.model is MODELS[target] and choice.thinking_allowed is thinking


@pytest.mark.parametrize("requested", ["gpt-5", "", None, "gemini-embedding-001"])
def test_unknown_names_do_not_resolve(requested):
    assert resolve_gemini_model(requested, MODELS) is None


def test_patterns_are_a_parameter_and_need_a_configured_target():
    patterns = (("gemini-*", "local", True),)
    local = ModelConfig(id="local")
    assert resolve_gemini_model("gemini-3.8-flash", {"local": local}, patterns).model is local
    assert resolve_gemini_model("gemini-3.8-flash", {"other": local}) is None


def test_model_list_shape():
    listed = gemini_model_list(MODELS)["models"]
    assert [m["name"] for m in listed] == ["models/deepseek-v4-pro", "models/deepseek-v4-flash"]
    assert all("generateContent" in m["supportedGenerationMethods"] for m in listed)
    assert listed[0]["inputTokenLimit"] == MODELS["deepseek-v4-pro"].context_window


def test_count_tokens_counts_what_the_model_reads():
    body = json.loads((GEMINI_FIXTURES / "stream_turn3_parallel_function_responses.json").read_text())["body"]
    model = MODELS["deepseek-v4-pro"]
    expected = count_chat_tokens(translate_gemini_request(body, model, DEEPSEEK, CODEC).body)
    assert count_gemini_tokens(body, model, DEEPSEEK, CODEC) == {"totalTokens": expected}
    assert count_gemini_tokens({"generateContentRequest": {**body, "model": "models/x"}}, model, DEEPSEEK, CODEC) == (
        {"totalTokens": expected})
    simple = {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}
    assert count_gemini_tokens(simple, model, DEEPSEEK, CODEC) == {
        "totalTokens": PER_MESSAGE + estimate_text_tokens("hello there")}
    # Thought parts are read only as the turn's reasoning, in thinking mode: without thinking they are not counted.
    with_thought = {"contents": [{"role": "user", "parts": [{"text": "q"}]}, {"role": "model", "parts": [
        {"text": "a very long private thought " * 50, "thought": True}, {"text": "a"}]},
        {"role": "user", "parts": [{"text": "b"}]}]}
    thinking = count_gemini_tokens(with_thought, model, DEEPSEEK, CODEC)["totalTokens"]
    not_thinking = count_gemini_tokens({**with_thought, "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}},
                                       model, DEEPSEEK, CODEC)["totalTokens"]
    assert not_thinking == 3 * PER_MESSAGE + sum(estimate_text_tokens(t) for t in "qab")
    assert thinking - not_thinking == estimate_text_tokens("a very long private thought " * 50)


def test_count_tokens_refuses_what_the_translator_refuses():
    with pytest.raises(RequestError):
        count_gemini_tokens({"contents": []}, MODELS["deepseek-v4-pro"], DEEPSEEK, CODEC)
    with pytest.raises(RequestError):
        count_gemini_tokens({"generateContentRequest": 3}, MODELS["deepseek-v4-pro"], DEEPSEEK, CODEC)
