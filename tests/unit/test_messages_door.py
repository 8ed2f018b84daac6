"""The Messages door's pure parts: its body validation (on every captured Claude Code request), its config keys,
the profile's thinking switch, and the pass-through mode's side reader of Anthropic SSE."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from deepseek_proxy.config import ConfigError, load_config
from deepseek_proxy.frontdoors.messages import (
    MessagesDoorStream,
    _PassthroughReader,
    anthropic_url,
)
from deepseek_proxy.frontdoors.messages_validation import validate_messages_request
from deepseek_proxy.translate.errors import RequestError
from deepseek_proxy.translate.messages_passthrough import reasoning_entries_of_message
from deepseek_proxy.translate.reasoning import ReasoningCodec
from deepseek_proxy.translate.tools import ToolMap
from deepseek_proxy.upstream.client import UpstreamClient
from deepseek_proxy.upstream.profiles import profile_named
from tests.conftest import CLAUDE_FIXTURES
from tests.fakes.fake_deepseek import Reply, anthropic_message, anthropic_stream_events

CAPTURED = sorted(p for p in CLAUDE_FIXTURES.glob("*.json")
                  if json.loads(p.read_text()).get("path", "").startswith("/v1/messages"))


# ---- validation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CAPTURED, ids=lambda p: p.stem)
def test_every_captured_claude_code_request_is_valid(path: Path):
    captured = json.loads(path.read_text())
    validate_messages_request(captured["body"], count_tokens=captured["path"].endswith("/count_tokens"))


def test_count_tokens_body_needs_no_max_tokens_but_a_create_does():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    validate_messages_request(body, count_tokens=True)
    with pytest.raises(RequestError) as caught:
        validate_messages_request(body)
    assert caught.value.message == "max_tokens: Field required" and caught.value.param == "max_tokens"


@pytest.mark.parametrize(("change", "param"), [
    ({"max_tokens": -1}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"temperature": 2}, "temperature"),
    ({"temperature": "0.5"}, "temperature"),
    ({"top_p": 1.01}, "top_p"),
    ({"top_k": -3}, "top_k"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user"}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages.0.content.0.type"),
    ({"system": 5}, "system"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"thinking": {"type": "maybe"}}, "thinking.type"),
    ({"stop_sequences": "STOP"}, "stop_sequences"),
    ({"metadata": {"user_id": 7}}, "metadata.user_id"),
    ({"model": ""}, "model"),
])
def test_invalid_values_are_named(change: dict, param: str):
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(RequestError) as caught:
        validate_messages_request(body)
    assert caught.value.param == param
    assert caught.value.message.startswith(param + ": ")
    assert caught.value.status == 400


def test_unknown_top_level_fields_pass():
    validate_messages_request({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
                               "some_new_beta_field": {"a": 1}})


def test_too_deep_is_refused_before_the_schema():
    deep: list = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(RequestError, match="nested more than"):
        validate_messages_request({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
                                   "tools": deep})


# ---- config -------------------------------------------------------------------------------------------------------


def _config(tmp_path: Path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path, env={"HOME": str(tmp_path), "DEEPSEEK_PROXY_SECRET": "s"})


def test_claude_defaults(tmp_path):
    config = _config(tmp_path, "")
    assert config.claude.model_map == () and config.claude.thinking_repair == "fallback"
    assert {m.messages_upstream for m in config.models.values()} == {"translate"}


def test_claude_keys(tmp_path):
    config = _config(tmp_path, """
[claude]
thinking_repair = "always"
[claude.model_map]
"claude-opus-*" = "deepseek-v4-flash"
"claude-*" = "deepseek-v4-pro"
[models.deepseek-v4-pro]
messages_upstream = "anthropic"
[models.deepseek-v4-flash]
""")
    assert config.claude.model_map == (("claude-opus-*", "deepseek-v4-flash"), ("claude-*", "deepseek-v4-pro"))
    assert config.claude.thinking_repair == "always"
    assert config.models["deepseek-v4-pro"].messages_upstream == "anthropic"
    assert config.models["deepseek-v4-flash"].messages_upstream == "translate"


@pytest.mark.parametrize(("text", "named"), [
    ('[claude]\nthinking_repair = "sometimes"\n', "claude.thinking_repair"),
    ('[claude]\nmodel_maps = {}\n', "claude.model_maps"),
    ('[claude.model_map]\n"claude-*" = "gpt-4o"\n', "claude.model_map.claude-*"),
    ('[models.deepseek-v4-pro]\nmessages_upstream = "openai"\n', "models.deepseek-v4-pro.messages_upstream"),
])
def test_claude_key_errors_name_the_key(tmp_path, text: str, named: str):
    with pytest.raises(ConfigError, match=re.escape(f"`{named}`")):
        _config(tmp_path, text)


# ---- the profile's thinking switch --------------------------------------------------------------------------------


def test_thinking_off_per_profile(tmp_path):
    models = _config(tmp_path, "").models
    pro = models["deepseek-v4-pro"]
    assert profile_named("deepseek").thinking_off(pro).fields == {"thinking": {"type": "disabled"}}
    assert profile_named("openai").thinking_off(pro).fields == {}
    assert not profile_named("deepseek").thinking_off(pro).enabled
    assert profile_named("deepseek").accepts_top_k is False


# ---- the pass-through mode -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("piece", [1, 7, 64, 100_000])
def test_passthrough_reader_finds_the_reasoning_however_the_bytes_are_cut(piece: int):
    reply = Reply.tool_calls([("Bash", {"command": "ls -la"}), ("Read", {"file_path": "/x"})],
                             reasoning="Look around first, then read.")
    message = anthropic_message(reply, {"model": "deepseek-v4-pro"}, thinking=True, prompt_tokens=10)
    raw = "".join(anthropic_stream_events(message)).encode()
    reader = _PassthroughReader()
    for i in range(0, len(raw), piece):
        reader.feed(raw[i:i + piece])
    reader.close()
    assert reader.stopped
    assert reader.reasoning_entries() == reasoning_entries_of_message(message) != []


def test_anthropic_url_sits_next_to_the_openai_base_url():
    from deepseek_proxy.config import UpstreamConfig

    for base in ("https://api.deepseek.com", "https://api.deepseek.com/", "https://api.deepseek.com/v1"):
        client = UpstreamClient(UpstreamConfig(name="d", base_url=base, api_key="none"), env={})
        assert anthropic_url(client) == "https://api.deepseek.com/anthropic/v1/messages"


def test_door_stream_renders_neutral_failures_as_error_events():
    from deepseek_proxy.core.errors import ErrorKind, ProxyError

    door = MessagesDoorStream(model="claude-x", tool_map=ToolMap(), codec=ReasoningCodec(b"k"))
    door.start()
    [event] = door.fail(ProxyError(ErrorKind.OVERLOADED, "busy", 503))
    assert event == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    assert door.encode([event]).startswith(b"event: error\ndata: ")
