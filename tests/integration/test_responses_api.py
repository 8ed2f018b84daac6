"""The real server (gunicorn + gevent, `deepseek-proxy serve`) driven by the official openai SDK and raw HTTP,
against the fake DeepSeek on loopback. Every event received is validated against the SDK's typed models."""

from __future__ import annotations

import json
import time

import openai
import pytest
import requests

from tests.conftest import FAKE_KEY, codex_fixture
from tests.fakes.fake_deepseek import Reply
from tests.integration.strict_events import validate_event, validate_response
from tests.sse_frames import sse

MODEL = "deepseek-v4-pro"
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello \"world\"\n*** End Patch\n"


def post_stream(proxy, body: dict, **kwargs) -> requests.Response:
    return requests.post(proxy.base_url + "/v1/responses", json=body, stream=True, timeout=30, **kwargs)


def codex_body(relative: str) -> dict:
    body = codex_fixture(relative)
    body["stream"] = True
    return body


def strict_stream(proxy, body: dict) -> list[dict]:
    with post_stream(proxy, body) as response:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse(response)
    for name, data in events:
        assert name == data["type"], "every frame has an `event:` line naming its type (Codex's idle timer)"
        validate_event(data)
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    return [d for _, d in events]


# ---- streaming -----------------------------------------------------------------------------------------------


def test_codex_turn_streams_tool_call_with_reasoning(proxy, upstream):
    upstream.script(Reply.tool_calls([("exec_command", {"cmd": "echo hi > out.txt"})], reasoning="Run it."))
    events = strict_stream(proxy, codex_body("normal/turn1_request.json"))

    types = [e["type"] for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [i["type"] for i in done] == ["reasoning", "function_call"]
    assert done[0]["content"] == [{"type": "reasoning_text", "text": "Run it."}]
    assert done[0]["encrypted_content"].startswith("dsp1.")
    assert json.loads(done[1]["arguments"]) == {"cmd": "echo hi > out.txt"}
    assert done[1]["call_id"].startswith("call_")
    final = events[-1]["response"]
    assert final["id"].startswith("resp_") and final["output"] == done
    assert final["usage"]["input_tokens"] > 0

    sent = upstream.chat_requests[-1].body
    assert {m["role"] for m in sent["messages"]} <= {"system", "user", "assistant", "tool"}
    assert sent["stream_options"] == {"include_usage": True}
    assert all(t["type"] == "function" for t in sent["tools"])
    assert upstream.rejections == []


def test_reasoning_is_replayed_on_the_next_turn(proxy, upstream):
    """Thinking mode: the turn after a tool call must carry the earlier reasoning, or DeepSeek answers 400."""
    upstream.script(
        Reply.tool_calls([("exec_command", {"cmd": "ls"})], reasoning="I need to list files."),
        Reply.text("There are two files.", reasoning="Summarise."),
    )
    client = openai.OpenAI(base_url=proxy.base_url + "/v1", api_key="unused")
    history = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "what is here?"}]}]
    tools = [{"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {
        "cmd": {"type": "string"}}, "required": ["cmd"]}}]

    first = client.responses.create(model=MODEL, input=history, tools=tools, include=["reasoning.encrypted_content"])
    call = next(item for item in first.output if item.type == "function_call")
    # Codex echoes the items as it received them (reasoning with content and encrypted_content), then the output.
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": call.call_id, "output": "a.txt b.txt"})
    second = client.responses.create(model=MODEL, input=history, tools=tools)

    assert second.output_text == "There are two files."
    replayed = upstream.chat_requests[-1].body["messages"]
    assistant = next(m for m in replayed if m["role"] == "assistant")
    assert assistant["reasoning_content"] == "I need to list files."
    assert assistant["tool_calls"][0]["id"] == call.call_id
    assert upstream.rejections == []


def test_dropped_reasoning_item_is_recovered_from_the_call_id_cache(proxy, upstream):
    upstream.script(Reply.tool_calls([("exec_command", {"cmd": "pwd"})], reasoning="Where am I?"), Reply.text("Home."))
    body = {"model": MODEL, "input": [{"role": "user", "content": "where?"}], "stream": False,
            "tools": [{"type": "function", "name": "exec_command", "parameters": {"type": "object"}}]}
    first = requests.post(proxy.base_url + "/v1/responses", json=body, timeout=30).json()
    call = next(i for i in first["output"] if i["type"] == "function_call")
    body["input"] = body["input"] + [  # a client that keeps the call but drops the reasoning item
        {"type": "function_call", "call_id": call["call_id"], "name": "exec_command", "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "/root"},
    ]
    second = requests.post(proxy.base_url + "/v1/responses", json=body, timeout=30)
    assert second.status_code == 200, second.text
    assistant = next(m for m in upstream.chat_requests[-1].body["messages"] if m["role"] == "assistant")
    assert assistant["reasoning_content"] == "Where am I?"


def test_apply_patch_comes_back_as_a_custom_tool_call(proxy, upstream):
    upstream.script(Reply.tool_calls([("apply_patch", {"input": PATCH})], split_arguments=7))
    events = strict_stream(proxy, codex_body("normal/turn2_request.json"))

    deltas = "".join(e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta")
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"][-1]
    assert done["type"] == "custom_tool_call" and done["name"] == "apply_patch"
    assert done["input"] == PATCH
    assert deltas == PATCH, "the raw patch streams as it is generated, not only at the end"
    sent_tool = next(t for t in upstream.chat_requests[-1].body["tools"] if t["function"]["name"] == "apply_patch")
    assert sent_tool["function"]["parameters"]["required"] == ["input"]


def test_parallel_calls_each_get_an_item(proxy, upstream):
    upstream.script(Reply.tool_calls([("exec_command", {"cmd": "a"}), ("exec_command", {"cmd": "b"})]))
    events = strict_stream(proxy, codex_body("normal/turn1_request.json"))
    calls = [e["item"] for e in events if e["type"] == "response.output_item.done" and e["item"]["type"] == "function_call"]
    assert [json.loads(c["arguments"])["cmd"] for c in calls] == ["a", "b"]
    assert len({c["call_id"] for c in calls}) == 2
    indexes = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    assert indexes == list(range(len(indexes)))


def test_sdk_stream_helper_accumulates_text(proxy, upstream):
    upstream.script(Reply.text("Hello there, world.", reasoning="Greet.",
                               usage={"prompt_cache_hit_tokens": 64, "prompt_tokens_details": {"cached_tokens": 64}}))
    client = openai.OpenAI(base_url=proxy.base_url + "/v1", api_key="unused")
    with client.responses.stream(model=MODEL, input="hi") as stream:
        # The helper enforces the event order and rebuilds the output from the deltas.
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == "Hello there, world."
    assert final.output_text == "Hello there, world."
    assert final.usage.input_tokens_details.cached_tokens == 64
    assert final.usage.output_tokens_details.reasoning_tokens > 0


def test_length_finish_is_an_incomplete_response(proxy, upstream):
    upstream.script(Reply.text("cut sh", finish_reason="length"))
    events = strict_stream(proxy, {"model": MODEL, "input": "hi", "stream": True})
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_insufficient_system_resource_is_a_failed_response(proxy, upstream):
    upstream.script(Reply.text("", finish_reason="insufficient_system_resource"))
    events = strict_stream(proxy, {"model": MODEL, "input": "hi", "stream": True})
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_is_overloaded"


def test_upstream_hang_up_mid_stream_is_response_failed(proxy, upstream):
    upstream.script(Reply.hang_up_after(3, Reply.text("one two three four five six", reasoning=None)))
    events = strict_stream(proxy, {"model": MODEL, "input": "hi", "stream": True})
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "server_error"
    assert any(e["type"] == "response.output_text.delta" for e in events), "what arrived was relayed first"


def test_error_chunk_mid_stream_is_response_failed_with_its_code(proxy, upstream):
    first = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-v4-pro",
             "choices": [{"index": 0, "delta": {"content": "partial"}, "finish_reason": None}]}
    error = {"error": {"message": "This model's maximum context length is 1048576 tokens.", "type": "invalid_request_error"}}
    upstream.script(Reply.raw_sse([f"data: {json.dumps(first)}", "", f"data: {json.dumps(error)}", ""]))
    events = strict_stream(proxy, {"model": MODEL, "input": "hi", "stream": True})
    assert any(e["type"] == "response.output_text.delta" for e in events)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["code"] == "context_length_exceeded"


def test_client_disconnect_closes_the_upstream(proxy, upstream):
    upstream.script(Reply.text(" ".join(["word"] * 200), delay=0.02))
    with post_stream(proxy, {"model": MODEL, "input": "hi", "stream": True}) as response:
        lines = response.iter_lines()
        for line in lines:
            if b"output_text.delta" in line:
                break
    assert upstream.wait_for_disconnects(1, timeout=5), "the proxy kept reading after its client left"


def test_deltas_are_relayed_as_they_arrive(proxy, upstream):
    upstream.script(Reply.text("a b c d", reasoning=None, delay=0.4))
    arrivals = []
    with post_stream(proxy, {"model": MODEL, "input": "hi", "stream": True}) as response:
        for line in response.iter_lines():
            if line.startswith(b"data:") and b'"response.output_text.delta"' in line:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 4
    assert arrivals[1] - arrivals[0] > 0.2, "deltas were buffered instead of streamed"


# ---- non-streaming -------------------------------------------------------------------------------------------


def test_non_stream_returns_a_response_object(proxy, upstream):
    upstream.script(Reply.tool_calls([("exec_command", {"cmd": "ls"})], content="Let me look."))
    response = requests.post(proxy.base_url + "/v1/responses", json={
        "model": MODEL, "input": "look", "tools": [{"type": "function", "name": "exec_command",
                                                    "parameters": {"type": "object"}}]}, timeout=30)
    assert response.status_code == 200
    parsed = validate_response(response.json())
    assert [item.type for item in parsed.output] == ["reasoning", "message", "function_call"]
    assert parsed.status == "completed"
    assert upstream.chat_requests[-1].body["stream"] is False


def test_sdk_non_stream_text(proxy, upstream):
    upstream.script(Reply.text("Forty-two."))
    client = openai.OpenAI(base_url=proxy.base_url + "/v1", api_key="unused")
    result = client.responses.create(model=MODEL, input="answer", instructions="Be brief.", max_output_tokens=50)
    assert result.output_text == "Forty-two."
    sent = upstream.chat_requests[-1].body
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_tokens"] == 50


# ---- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status, message, code, want_code", [
    (402, "Insufficient Balance", "invalid_request_error", "insufficient_quota"),
    (400, "This model's maximum context length is 1048576 tokens. However, you requested 1100000 tokens.",
     "invalid_request_error", "context_length_exceeded"),
    (401, "Authentication Fails, Your api key: ****abcd is invalid", "invalid_request_error", "invalid_api_key"),
    (503, "Server overloaded, please try again later.", "server_error", "server_is_overloaded"),
])
def test_upstream_errors_keep_status_with_openai_codes(proxy, upstream, status, message, code, want_code):
    """Non-streamed requests: the upstream's status and an OpenAI error body."""
    upstream.script(Reply.error(status, message, code=code))
    response = requests.post(proxy.base_url + "/v1/responses", json={"model": MODEL, "input": "hi"}, timeout=30)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == want_code and error["message"] == message


@pytest.mark.parametrize("status, message, want_code", [
    (402, "Insufficient Balance", "invalid_prompt"),
    (401, "Authentication Fails, Your api key: ****abcd is invalid", "invalid_prompt"),
    (403, "Forbidden", "invalid_prompt"),
    (422, "Failed to deserialize the JSON body", "invalid_prompt"),
    (400, "This model's maximum context length is 1048576 tokens. However, you requested 1100000 tokens.",
     "context_length_exceeded"),
])
def test_streamed_refusals_retrying_cannot_fix_are_a_failed_response(proxy, upstream, status, message, want_code):
    """Streamed: a 200 stream ending in response.failed with a code Codex stops at, and the upstream's words."""
    upstream.script(Reply.error(status, message))
    events = strict_stream(proxy, {"model": MODEL, "input": "hi", "stream": True})
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "response.failed"]
    assert events[-1]["response"]["error"] == {"code": want_code, "message": message}


@pytest.mark.parametrize("status", [429, 500, 503])
def test_streamed_retryable_refusals_stay_http_statuses(proxy, upstream, status):
    upstream.script(Reply.error(status, "busy"))
    response = post_stream(proxy, {"model": MODEL, "input": "hi", "stream": True})
    assert response.status_code == status
    if status in (429, 503):
        assert int(response.headers["retry-after"]) >= 1


def test_rate_limit_gets_a_retry_after_header(proxy, upstream):
    """Codex retries a 429 only when `retry-after` is present; DeepSeek never sends one."""
    upstream.script(Reply.error(429, "Rate Limit Reached", code="rate_limit_reached"))
    response = post_stream(proxy, {"model": MODEL, "input": "hi", "stream": True})
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_sdk_sees_typed_errors(proxy, upstream):
    upstream.script(Reply.error(402, "Insufficient Balance"))
    client = openai.OpenAI(base_url=proxy.base_url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.responses.create(model=MODEL, input="hi")
    assert caught.value.status_code == 402
    assert caught.value.body["code"] == "insufficient_quota"


@pytest.mark.parametrize("body, status, param", [
    (b"{not json", 400, None),
    (b"", 400, None),
    (b"[1, 2]", 400, None),
    (json.dumps({"model": MODEL, "input": "hi", "frobnicate": 1}).encode(), 400, "frobnicate"),
    (json.dumps({"model": MODEL, "input": "hi", "previous_response_id": "resp_1"}).encode(), 404, "previous_response_id"),
    (json.dumps({"model": "gpt-9", "input": "hi"}).encode(), 404, "model"),
    (json.dumps({"input": "hi"}).encode(), 400, "model"),
    (json.dumps({"model": MODEL, "input": 5}).encode(), 400, "input"),
])
def test_bad_requests_get_clear_openai_errors(proxy, upstream, body, status, param):
    response = requests.post(proxy.base_url + "/v1/responses", data=body,
                             headers={"content-type": "application/json"}, timeout=10)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"] and error["param"] == param
    assert upstream.chat_requests == [], "a bad request never reaches the upstream"


def test_store_true_is_accepted(proxy, upstream):
    response = requests.post(proxy.base_url + "/v1/responses", json={"model": MODEL, "input": "hi", "store": True},
                             timeout=10)
    assert response.status_code == 200


def test_big_codex_history_is_accepted(proxy, upstream):
    """Codex resends the whole history every turn: 33 MB must pass (the default limit is 64 MB)."""
    big = "x" * (33 * 1024 * 1024)
    response = requests.post(proxy.base_url + "/v1/responses", json={"model": MODEL, "input": [
        {"role": "user", "content": "summarise"},
        {"type": "function_call", "call_id": "call_1", "name": "read", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": big}]}, timeout=60)
    assert response.status_code == 200, response.text[:300]
    assert len(upstream.chat_requests[-1].raw) > 33 * 1024 * 1024


def test_oversized_body_is_a_413_in_openai_format(start_proxy, fake_deepseek):
    small = start_proxy(fake_deepseek.base_url, "[server]\nmax_body_mb = 1\n")
    response = requests.post(small.base_url + "/v1/responses", data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                             headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


# ---- keep-alive, non-streaming upstreams, auth --------------------------------------------------------------


def test_upstream_keepalives_become_in_progress_events(start_proxy, fake_deepseek):
    fake_deepseek.reset()
    server = start_proxy(fake_deepseek.base_url, "[server]\nkeepalive_interval = 0\n")
    fake_deepseek.script(Reply.text("late", keepalives=3, ttft=0.3))
    events = strict_stream(server, {"model": MODEL, "input": "hi", "stream": True})
    in_progress = [e for e in events if e["type"] == "response.in_progress"]
    assert len(in_progress) == 1 + 3


def test_upstream_silence_keeps_the_client_idle_timer_alive(start_proxy, fake_deepseek):
    """No bytes at all from the upstream for a while (no comments either): the client still gets an event line
    every keepalive_interval, which is what resets Codex's stream idle timer."""
    fake_deepseek.reset()
    server = start_proxy(fake_deepseek.base_url, "[server]\nkeepalive_interval = 0.2\n")
    fake_deepseek.script(Reply.text("slow but sure", reasoning=None, delay=0.7))
    events = strict_stream(server, {"model": MODEL, "input": "hi", "stream": True})
    types = [e["type"] for e in events]
    first, last = types.index("response.output_text.delta"), len(types) - 1 - types[::-1].index("response.output_text.delta")
    assert types[first:last].count("response.in_progress") >= 4
    assert events[-1]["type"] == "response.completed"


def test_non_streaming_upstream_is_replayed_as_sse(start_proxy, fake_deepseek):
    fake_deepseek.reset()
    config = '[models."deepseek-v4-pro"]\nstream = false\n'
    server = start_proxy(fake_deepseek.base_url, config)
    fake_deepseek.script(Reply.tool_calls([("exec_command", {"cmd": "ls"})], reasoning="Plan."))
    events = strict_stream(server, codex_body("normal/turn1_request.json"))
    assert fake_deepseek.chat_requests[-1].body["stream"] is False
    done = [e["item"]["type"] for e in events if e["type"] == "response.output_item.done"]
    assert done == ["reasoning", "function_call"]
    assert events[-1]["type"] == "response.completed"


def test_client_key_passthrough_and_proxy_keys(start_proxy, fake_deepseek):
    fake_deepseek.reset()
    passthrough = start_proxy(fake_deepseek.base_url, '[upstreams.deepseek]\napi_key = "client"\n',
                              extra_env={"DEEPSEEK_API_KEY": ""})
    ok = requests.post(passthrough.base_url + "/v1/responses", json={"model": MODEL, "input": "hi"},
                       headers={"Authorization": f"Bearer {FAKE_KEY}"}, timeout=10)
    assert ok.status_code == 200
    bad = requests.post(passthrough.base_url + "/v1/responses", json={"model": MODEL, "input": "hi"},
                        headers={"Authorization": "Bearer sk-wrong"}, timeout=10)
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"

    guarded = start_proxy(fake_deepseek.base_url, '[server]\nclient_keys = ["team-secret-1"]\n')
    denied = requests.post(guarded.base_url + "/v1/responses", json={"model": MODEL, "input": "hi"}, timeout=10)
    assert denied.status_code == 401
    allowed = requests.post(guarded.base_url + "/v1/responses", json={"model": MODEL, "input": "hi"},
                            headers={"Authorization": "Bearer team-secret-1"}, timeout=10)
    assert allowed.status_code == 200
    for server in (passthrough, guarded):
        log = server.log()
        assert FAKE_KEY not in log and "team-secret-1" not in log and "sk-wrong" not in log


# ---- models and health ---------------------------------------------------------------------------------------


def test_models_endpoints(proxy):
    client = openai.OpenAI(base_url=proxy.base_url + "/v1", api_key="unused")
    assert {m.id for m in client.models.list()} == {"deepseek-v4-pro", "deepseek-v4-flash"}
    assert client.models.retrieve("deepseek-v4-flash").id == "deepseek-v4-flash"
    assert requests.get(proxy.base_url + "/models/nope", timeout=5).status_code == 404
    assert requests.get(proxy.base_url + "/models", timeout=5).json()["object"] == "list"


def test_health_and_readiness(proxy, start_proxy, fake_deepseek):
    assert requests.get(proxy.base_url + "/healthz", timeout=5).json() == {"status": "ok"}
    ready = requests.get(proxy.base_url + "/readyz?deep=1", timeout=10)
    assert ready.status_code == 200 and ready.json()["upstreams"]["deepseek"]["reachable"] is True

    keyless = start_proxy(fake_deepseek.base_url, extra_env={"DEEPSEEK_API_KEY": ""})
    not_ready = requests.get(keyless.base_url + "/readyz", timeout=5)
    assert not_ready.status_code == 503
    assert "DEEPSEEK_API_KEY" in not_ready.json()["upstreams"]["deepseek"]["error"]
    wrong_key = start_proxy(fake_deepseek.base_url, extra_env={"DEEPSEEK_API_KEY": "sk-wrong"})
    deep = requests.get(wrong_key.base_url + "/readyz?deep=1", timeout=10)
    assert deep.status_code == 503 and "401" in deep.json()["upstreams"]["deepseek"]["error"]


def test_no_secret_reaches_the_log(proxy):
    requests.post(proxy.base_url + "/v1/responses", json={"model": MODEL, "input": "hi"},
                  headers={"Authorization": "Bearer sk-client-secret-value"}, timeout=10)
    log = proxy.log()
    assert "listening on http://127.0.0.1" in log
    assert "POST /v1/responses 200" in log and "model=deepseek-v4-pro" in log  # one line per request
    assert FAKE_KEY not in log and "sk-client-secret-value" not in log
