"""Which configured model serves the model name a Messages client asks for."""

from __future__ import annotations

import pytest

from deepseek_proxy.config import ModelConfig, default_models
from deepseek_proxy.translate.messages_models import resolve_model

MODELS = default_models()


@pytest.mark.parametrize(("requested", "served"), [
    ("claude-opus-4-8", "deepseek-v4-pro"),
    ("claude-sonnet-4-5-20250929", "deepseek-v4-pro"),
    ("claude-haiku-4-5-20251001", "deepseek-v4-flash"),  # Claude Code's Explore sub-agent
    ("claude-3-5-sonnet-latest", "deepseek-v4-pro"),
    ("claude-3-haiku-20240307", "deepseek-v4-flash"),
    ("Claude-Opus-4-8", "deepseek-v4-pro"),
    ("deepseek-v4-pro", "deepseek-v4-pro"),  # a configured name is served as itself
    ("deepseek-v4-flash[1m]", "deepseek-v4-flash"),
])
def test_default_mapping(requested, served):
    assert resolve_model(requested, MODELS).id == served


@pytest.mark.parametrize("requested", ["gpt-5", "", "claude-instant", None])
def test_unknown_names_are_not_served(requested):
    assert resolve_model(requested, MODELS) is None


def test_a_listed_name_wins_over_the_patterns_and_patterns_are_configurable():
    models = {**MODELS, "claude-opus-4-8": ModelConfig(id="claude-opus-4-8", upstream_model="deepseek-v4-flash")}
    assert resolve_model("claude-opus-4-8", models).id == "claude-opus-4-8"
    patterns = [("claude-*", "deepseek-v4-flash")]
    assert resolve_model("claude-sonnet-4-5", MODELS, patterns).id == "deepseek-v4-flash"
    # a pattern naming a model that is not configured is skipped
    assert resolve_model("claude-sonnet-4-5", MODELS, [("claude-*", "gone"), ("claude-*", "deepseek-v4-pro")]).id \
        == "deepseek-v4-pro"
