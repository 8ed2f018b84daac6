"""Prefix-break detection wired to a request, without the server: the gate hands the request as it went upstream
(upstream.chat's `on_prepared`) to the scope, RequestScope.finish gives it to ops/prefix.py after a 200 reply, a
break is a WARNING line and a /metrics count; a refused request teaches the memory nothing; a failing detector never
fails the request; `[cache]` turns it off or keeps the memory in the process. The upstream is a `responses` mock."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
import responses
from prometheus_client import REGISTRY

from deepseek_proxy.config import (
    Config,
    ConfigError,
    ModelConfig,
    OpsConfig,
    ServerConfig,
    UpstreamConfig,
    load_config,
)
from deepseek_proxy.core.errors import ProxyError
from deepseek_proxy.core.prefix import LruFingerprints, StoreFingerprints
from deepseek_proxy.frontdoors import gate
from deepseek_proxy.ops import Ops
from deepseek_proxy.ops.prefix import PrefixWatch, kind_of, loggable_key
from deepseek_proxy.ops.request import begin_request
from deepseek_proxy.store.memory import MemoryStore
from deepseek_proxy.upstream.client import UpstreamClient

LIMITS = {"ttl_seconds": 3600.0, "reasoning_ttl_seconds": 600.0, "max_response_bytes": 1 << 20}
PRO = ModelConfig(id="deepseek-v4-pro", upstream_model="deepseek-v4-pro", thinking=False)
BASE = "https://api.deepseek.test"
COMPLETION = {"id": "c1", "object": "chat.completion", "model": "deepseek-v4-pro",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 10, "completion_tokens": 1}}
SYSTEM = {"role": "system", "content": "You are a coding agent. " * 80}
TOOLS = [{"type": "function", "function": {"name": f"tool_{i}", "description": f"Tool {i}. " * 30,
                                           "parameters": {"type": "object", "properties": {}}}} for i in range(3)]


def ops_with(tmp_path, **ops_settings) -> Ops:
    config = Config(server=ServerConfig(reasoning_secret=b"x"),
                    upstreams={"deepseek": UpstreamConfig(name="deepseek", base_url=BASE, api_key="none")},
                    models={"deepseek-v4-pro": PRO}, ops=replace(OpsConfig(), **ops_settings))
    return Ops(config, store=MemoryStore(**LIMITS), env={"HOME": str(tmp_path)})


def chat(turn: int, tools=TOOLS) -> dict:
    messages = [SYSTEM, {"role": "user", "content": "Fix the failing test."}]
    for n in range(1, turn):
        messages += [{"role": "assistant", "content": f"Step {n} done. " * 20},
                     {"role": "user", "content": f"Go on with step {n + 1}."}]
    return {"model": "deepseek-v4-pro", "messages": messages, "tools": list(tools), "stream": False}


def send(ops: Ops, body: dict, *, conversation: str | None = "responses:thread-1", rid: str = "req_1"):
    """One request through the gate's blocking path; its scope (finished)."""
    environ = {"deepseek_proxy.request_id": rid, "REQUEST_METHOD": "POST", "PATH_INFO": "/v1/responses"}
    scope = begin_request(ops, environ=environ, presented_key=None, door="responses", model=PRO, stream=False,
                          conversation=conversation)
    client = UpstreamClient(ops.config.upstreams["deepseek"], env={})
    try:
        gate.complete_chat(client, body, scope=scope, model=PRO, thinking=False)  # type: ignore[arg-type]
    except ProxyError:
        pass
    return scope


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@responses.activate
def test_the_prompt_as_sent_reaches_the_detector_and_a_reordered_tool_list_is_logged_and_counted(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="deepseek_proxy.prefix")
    bodies: list[dict] = []

    def upstream(request):
        bodies.append(json.loads(request.body))
        return 200, {}, json.dumps(COMPLETION)

    responses.add_callback(responses.POST, f"{BASE}/chat/completions", callback=upstream)
    ops = ops_with(tmp_path)
    assert isinstance(ops.prefix.tracker.memory, StoreFingerprints)  # the default: every worker sees every turn
    breaks_before = counted("deepseek_proxy_prefix_breaks_total", door="responses", what="tools")
    checks_before = counted("deepseek_proxy_prefix_checks_total", door="responses")

    first = send(ops, {**chat(1), "max_tokens": 10**9})
    # the request exactly as it went upstream (prepared: max_tokens cut to the model's limit), not the door's
    assert first.prompt == bodies[0] and first.prompt["max_tokens"] == PRO.max_output_tokens
    assert first.conversation == "responses:thread-1"
    send(ops, chat(2))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    send(ops, chat(3, tools=TOOLS[::-1]), rid="req_reordered")

    [line] = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = line.getMessage()
    assert line.name == "deepseek_proxy.prefix"
    assert "conversation responses:thread-1 changed at tools" in message and "request_id=req_reordered" in message
    assert "Fix the failing test" not in message and "Tool 1." not in message
    assert counted("deepseek_proxy_prefix_breaks_total", door="responses", what="tools") == breaks_before + 1
    assert counted("deepseek_proxy_prefix_checks_total", door="responses") == checks_before + 3
    assert counted("deepseek_proxy_prefix_break_lost_bytes_total", door="responses") > 0


@responses.activate
def test_a_request_without_a_key_gets_the_first_messages_key(tmp_path):
    responses.add(responses.POST, f"{BASE}/chat/completions", json=COMPLETION)
    ops = ops_with(tmp_path)
    one, two = send(ops, chat(1), conversation=None), send(ops, chat(2), conversation=None)
    assert one.conversation == two.conversation and one.conversation.startswith("first:")


@responses.activate
def test_the_access_log_line_names_the_conversation_its_usage_row_and_break_lines_carry(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="deepseek_proxy.access")
    responses.add(responses.POST, f"{BASE}/chat/completions", json=COMPLETION)
    ops = ops_with(tmp_path)
    send(ops, chat(1), rid="req_named")
    send(ops, chat(1), conversation=None, rid="req_unnamed")
    lines = {line["request_id"]: line for line in
             (json.loads(r.getMessage()) for r in caplog.records if r.name == "deepseek_proxy.access")}
    assert lines["req_named"]["conversation"] == "responses:thread-1"
    assert lines["req_unnamed"]["conversation"].startswith("first:")


@responses.activate
def test_a_refused_request_teaches_the_memory_nothing(tmp_path):
    responses.add(responses.POST, f"{BASE}/chat/completions", status=400,
                  json={"error": {"message": "bad", "type": "invalid_request_error"}})
    ops = ops_with(tmp_path)
    scope = send(ops, chat(1))
    assert scope.prompt is not None  # it was sent...
    assert ops.prefix.tracker.memory.get("responses:thread-1") is None  # ... but not remembered


@responses.activate
def test_a_failing_detector_never_fails_the_request(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="deepseek_proxy.prefix")
    responses.add(responses.POST, f"{BASE}/chat/completions", json=COMPLETION)
    ops = ops_with(tmp_path)

    class Broken:
        def get(self, key):
            raise RuntimeError("memory on fire")

        def put(self, key, threads):
            raise RuntimeError("memory on fire")

    ops.prefix.tracker.memory = Broken()
    scope = send(ops, chat(1))
    assert scope._finished and [row.status for row in ops.store.usage_rows(since=0)] == [200]
    assert any("prefix-break detection failed" in r.getMessage() and r.levelno == logging.DEBUG
               for r in caplog.records)


def test_detection_runs_after_the_reply_through_the_given_runner(tmp_path):
    later: list = []
    watch = PrefixWatch(None)
    assert watch.after_reply(object()) is None  # type: ignore[arg-type]  # off: nothing to do
    ops = ops_with(tmp_path)
    watch = PrefixWatch(ops.prefix.tracker, run=later.append)
    ops.prefix = watch
    environ = {"deepseek_proxy.request_id": "r", "REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions"}
    scope = begin_request(ops, environ=environ, presented_key=None, door="chat", model=PRO, stream=True)
    scope.prompt = chat(1)
    scope.finish(usage=None, status=200)
    assert len(later) == 1 and ops.store.get_reasoning("prefix:" + scope.conversation) is None  # not yet
    later[0]()
    assert ops.store.get_reasoning("prefix:" + scope.conversation) is not None


def test_config_turns_detection_off_or_keeps_the_memory_in_the_process(tmp_path):
    assert ops_with(tmp_path, detect_prefix_breaks=False).prefix.tracker is None
    assert isinstance(ops_with(tmp_path, prefix_memory="process").prefix.tracker.memory, LruFingerprints)
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path),
           "DEEPSEEK_API_KEY": "sk-from-env"}
    path = tmp_path / "config.toml"
    path.write_text('[cache]\ndetect_prefix_breaks = false\nprefix_memory = "process"\n')
    ops = load_config(path, env=env).ops
    assert (ops.detect_prefix_breaks, ops.prefix_memory) == (False, "process")
    assert load_config(env=env).ops.detect_prefix_breaks is True
    path.write_text('[cache]\nprefix_memory = "disk"\n')
    with pytest.raises(ConfigError, match="cache.prefix_memory"):
        load_config(path, env=env)


def test_log_and_label_values_stay_bounded():
    assert kind_of("message 17") == "message" and kind_of("tools") == "tools"
    assert loggable_key("messages:abc\n2026 WARNING forged") == "messages:abc?2026?WARNING?forged"
    assert "sk-" not in loggable_key("responses:sk-abcdefghijklmnop")
    assert len(loggable_key("x" * 1000)) == 120


def test_a_huge_session_id_becomes_a_short_key():
    from deepseek_proxy.core.prefix import messages_conversation_key, responses_conversation_key

    key = responses_conversation_key({"prompt_cache_key": "x" * 100_000})
    assert key is not None and key.startswith("responses:h") and len(key) < 60
    assert key == responses_conversation_key({"prompt_cache_key": "x" * 100_000})  # stable
    assert messages_conversation_key({}, {"x-claude-code-session-id": " abc "}) == "messages:abc"
