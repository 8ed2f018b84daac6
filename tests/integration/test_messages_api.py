"""The Messages door on the real server (gunicorn + gevent, `deepseek-proxy serve`) driven by the official anthropic
SDK and raw HTTP, against the fake DeepSeek on loopback. Every streamed event is validated against the SDK's typed
models (beta and plain unions, unknown fields rejected at any depth); the block lifecycle Claude Code needs is
checked on every stream."""

from __future__ import annotations

import json
import socket
from typing import Any

import anthropic
import pytest
import requests
from anthropic.types.beta import BetaMessage
from anthropic.types.beta_error_response import BetaErrorResponse

from tests.anthropic_events import check_lifecycle, no_extra, validate_event
from tests.conftest import CLAUDE_FIXTURES, FAKE_KEY
from tests.fakes.fake_deepseek import (
    REASONING_CONTENT_REQUIRED,
    THINKING_BLOCK_REQUIRED,
    Reply,
)
from tests.sse_frames import sse

TOOLS = [{"name": "Bash", "description": "Run a shell command.",
          "input_schema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                           "properties": {"command": {"type": "string"}}, "required": ["command"],
                           "additionalProperties": False}}]
OVERFLOW = ("This model's maximum context length is 131072 tokens. However, you requested 140000 tokens "
            "(130000 in the messages, 10000 in the completion). Please reduce the length of the messages or "
            "completion.")


# ---- helpers ------------------------------------------------------------------------------------------------------


def strict_stream(base_url: str, body: dict, path: str = "/v1/messages?beta=true", **headers) -> list[dict]:
    with requests.post(base_url + path, json={**body, "stream": True}, stream=True, timeout=30,
                       headers={"anthropic-version": "2023-06-01", **headers}) as response:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse(response)
    for name, data in events:
        assert name == data["type"]
        validate_event(data)
    check_lifecycle(events and [d for _, d in events])
    return [d for _, d in events]


def sdk(proxy, **kwargs) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.base_url, api_key="sk-anything", max_retries=0,
                               _strict_response_validation=True, **kwargs)


def claude_body(name: str = "p_default_turn1.json") -> dict:
    return json.loads((CLAUDE_FIXTURES / name).read_text())["body"]


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def tool_result(call_id: str, output: str) -> dict:
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call_id, "content": output}]}


# ---- the basics ---------------------------------------------------------------------------------------------------


def test_probe_and_alias_paths(proxy):
    assert requests.head(proxy.base_url + "/", timeout=10).status_code == 200
    assert requests.get(proxy.base_url + "/", timeout=10).status_code == 200


def test_sdk_text_reply_not_streamed(proxy, upstream):
    upstream.script(Reply.text("Hello there.", reasoning="Greet back."))
    message = sdk(proxy).messages.create(model="claude-sonnet-4-5", max_tokens=1000, messages=[user("Hi")])
    assert [b.type for b in message.content] == ["text"], "thinking was not asked for: none is shown"
    assert message.content[0].text == "Hello there."
    assert message.stop_reason == "end_turn" and message.model == "claude-sonnet-4-5"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    sent = upstream.chat_requests[-1].body
    assert sent["model"] == "deepseek-v4-pro" and sent["stream"] is False
    assert sent["thinking"] == {"type": "disabled"} and sent["max_tokens"] == 1000


def test_sdk_stream_with_thinking_and_tool_use(proxy, upstream):
    upstream.script(Reply.tool_calls([("Bash", {"command": "ls"})], reasoning="List the files first."))
    with sdk(proxy).messages.stream(model="claude-opus-4-1", max_tokens=32000, messages=[user("What is here?")],
                                    tools=TOOLS, thinking={"type": "adaptive"}) as stream:
        for _ in stream:
            pass
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "tool_use"]
    assert final.content[0].thinking == "List the files first."
    assert final.content[0].signature
    assert final.content[1].name == "Bash" and final.content[1].input == {"command": "ls"}
    assert final.stop_reason == "tool_use"
    sent = upstream.chat_requests[-1].body
    assert sent["thinking"] == {"type": "enabled"} and sent["stream"] is True
    assert sent["tools"][0]["function"]["name"] == "Bash"


def test_raw_stream_events_are_strict_on_both_paths(proxy, upstream):
    upstream.script(Reply.text("Fine.", reasoning="Think a bit.", keepalives=0))
    body = {"model": "claude-haiku-4-5-20251001", "max_tokens": 200, "messages": [user("ok?")],
            "thinking": {"type": "enabled", "budget_tokens": 1024}}
    events = strict_stream(proxy.base_url, body, path="/anthropic/v1/messages?beta=true")
    types = [e["type"] for e in events]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    assert "ping" in types
    assert upstream.chat_requests[-1].body["model"] == "deepseek-v4-flash"
    delta = next(e for e in events if e["type"] == "message_delta")
    assert delta["usage"]["output_tokens"] > 0


def test_pings_flow_through_upstream_silence(start_proxy, upstream):
    proxy = start_proxy(upstream.base_url, "[server]\nkeepalive_interval = 0.2\n")
    upstream.script(Reply.text("Late.", keepalives=4, ttft=1.2))
    events = strict_stream(proxy.base_url, {"model": "claude-sonnet-4-5", "max_tokens": 100,
                                            "messages": [user("hi")]})
    first_block = next(i for i, e in enumerate(events) if e["type"] == "content_block_start")
    assert sum(e["type"] == "ping" for e in events[:first_block]) >= 3, [e["type"] for e in events]


def test_claude_code_request_translates_and_billing_block_dropped(proxy, upstream):
    upstream.script(Reply.text("Done."))
    body = claude_body()
    body["system"] = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.abc; cc_entrypoint=cli;"},
                      *body["system"][1:]]
    events = strict_stream(proxy.base_url, body)
    assert events[-1]["type"] == "message_stop"
    sent = upstream.chat_requests[-1].body
    assert "x-anthropic-billing-header" not in json.dumps(sent["messages"])
    assert sent["thinking"] == {"type": "enabled"}
    assert upstream.rejections == []


# ---- thinking round trip ------------------------------------------------------------------------------------------


def ask_with_tools(client: anthropic.Anthropic, messages: list[dict]):
    """Claude Code's agent turn: the Bash tool offered, adaptive thinking on."""
    return client.messages.create(model="claude-sonnet-4-5", max_tokens=4000, tools=TOOLS,
                                  thinking={"type": "adaptive"}, messages=messages)


def assistant_sent_upstream(upstream) -> dict:
    return next(m for m in upstream.chat_requests[-1].body["messages"] if m["role"] == "assistant")


def test_thinking_round_trip_signature_carries_reasoning_upstream(proxy, upstream):
    client = sdk(proxy)
    upstream.script(Reply.tool_calls([("Bash", {"command": "echo hi"})], reasoning="Secret plan: echo."),
                    Reply.text("It printed hi."))
    first = ask_with_tools(client, [user("Say hi via bash")])
    thinking, call = first.content[0], first.content[-1]
    assert thinking.type == "thinking" and call.type == "tool_use"
    history = [user("Say hi via bash"),
               {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
               tool_result(call.id, "hi")]
    # A client that shows the thinking differently: the signature we issued is what counts.
    history[1]["content"][0]["thinking"] = "(edited by the client)"
    second = ask_with_tools(client, history)
    assert second.content[-1].text == "It printed hi."
    assistant = assistant_sent_upstream(upstream)
    assert assistant["reasoning_content"] == "Secret plan: echo."
    assert assistant["tool_calls"][0]["id"] == call.id
    assert upstream.rejections == []


def test_history_without_thinking_is_repaired_from_the_cache(proxy, upstream):
    client = sdk(proxy)
    upstream.script(Reply.tool_calls([("Bash", {"command": "date"})], reasoning="Check the clock."),
                    Reply.text("It is today."))
    call = ask_with_tools(client, [user("time?")]).content[-1]
    # A resumed session / model switch: the assistant turn comes back without its thinking block.
    ask_with_tools(client, [user("time?"), {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
                            tool_result(call.id, "Tue")])
    assert assistant_sent_upstream(upstream)["reasoning_content"] == "Check the clock."
    assert REASONING_CONTENT_REQUIRED not in (upstream.chat_requests[-1].error_message or "")
    assert upstream.rejections == []


# ---- count_tokens -------------------------------------------------------------------------------------------------


def test_count_tokens_is_honest_and_grows(proxy):
    client = sdk(proxy)
    small = client.messages.count_tokens(model="claude-sonnet-4-5", messages=[user("Hello")])
    big = client.messages.count_tokens(model="claude-sonnet-4-5",
                                       messages=[user("Hello, " + "the quick brown fox jumps over it. " * 200)])
    with_tools = client.messages.count_tokens(model="claude-sonnet-4-5", messages=[user("Hello")], tools=TOOLS)
    assert 0 < small.input_tokens < 20
    assert 1400 < big.input_tokens < 2600  # ~8 words and a period per sentence, 200 sentences
    assert with_tools.input_tokens > small.input_tokens
    fixture = claude_body("count_tokens_tools.json")
    response = requests.post(proxy.base_url + "/v1/messages/count_tokens?beta=true", json=fixture, timeout=30)
    assert response.status_code == 200 and response.json()["input_tokens"] > 100


# ---- errors -------------------------------------------------------------------------------------------------------


def _error(response: requests.Response) -> dict:
    body = response.json()
    no_extra(BetaErrorResponse.model_validate(body), "error")
    assert body["type"] == "error"
    return body["error"]


def post(proxy, body: dict, **kwargs) -> requests.Response:
    return requests.post(proxy.base_url + "/v1/messages", json=body, timeout=30, **kwargs)


def test_balance_is_billing_error_without_retry(proxy, upstream):
    upstream.script(Reply.error(402, "Insufficient Balance", code="invalid_request_error"))
    response = post(proxy, {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [user("hi")],
                            "stream": True})
    assert response.status_code == 402
    assert response.headers["x-should-retry"] == "false"
    assert _error(response) == {"type": "billing_error", "message": "Insufficient Balance"}
    upstream.script(Reply.error(402, "Insufficient Balance", code="invalid_request_error"))
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk(proxy).messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[user("hi")])
    assert caught.value.status_code == 402 and caught.value.response.headers["x-should-retry"] == "false"


def test_rate_limit_has_retry_after(proxy, upstream):
    upstream.script(Reply.error(429, "Rate limit reached", code="rate_limit"))
    response = post(proxy, {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [user("hi")]})
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert _error(response)["type"] == "rate_limit_error"
    with pytest.raises(anthropic.RateLimitError):
        upstream.script(Reply.error(429, "Rate limit reached", code="rate_limit"))
        sdk(proxy).messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[user("hi")])


def test_upstream_503_is_overloaded_529(proxy, upstream):
    upstream.script(Reply.error(503, "Server is busy", code="server_busy", type="service_unavailable_error"))
    response = post(proxy, {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [user("hi")],
                            "stream": True})
    assert response.status_code == 529
    assert _error(response)["type"] == "overloaded_error"


def test_context_overflow_message_claude_code_recovers_from(proxy, upstream):
    upstream.script(Reply.error(400, OVERFLOW, code="invalid_request_error"))
    response = post(proxy, {"model": "claude-sonnet-4-5", "max_tokens": 10000, "messages": [user("hi")],
                            "stream": True})
    assert response.status_code == 400
    error = _error(response)
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("input length and `max_tokens` exceed context limit: 130000 + 10000 > 131072")


def test_unknown_model_is_404_not_found(proxy, upstream):
    response = post(proxy, {"model": "gpt-4o", "max_tokens": 10, "messages": [user("hi")]})
    assert response.status_code == 404
    error = _error(response)
    assert error["type"] == "not_found_error" and "gpt-4o" in error["message"]
    with pytest.raises(anthropic.NotFoundError):
        sdk(proxy).messages.create(model="gpt-4o", max_tokens=10, messages=[user("hi")])
    assert upstream.chat_requests == []


@pytest.mark.parametrize(("body", "field"), [
    ({"model": "claude-sonnet-4-5", "messages": [user("hi")]}, "max_tokens"),
    ({"model": "claude-sonnet-4-5", "max_tokens": 0, "messages": [user("hi")]}, "max_tokens"),
    ({"model": "claude-sonnet-4-5", "max_tokens": "10", "messages": [user("hi")]}, "max_tokens"),
    ({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [user("hi")], "temperature": 1.5}, "temperature"),
    ({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [user("hi")], "top_p": -0.1}, "top_p"),
    ({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [user("hi")], "top_k": 1.5}, "top_k"),
    ({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": "hi"}, "messages"),
    ({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "tool", "content": "x"}]},
     "messages.0.role"),
    ({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [user("hi")], "stream": "yes"}, "stream"),
])
def test_invalid_bodies_name_the_field(proxy, upstream, body, field):
    response = post(proxy, body)
    assert response.status_code == 400
    error = _error(response)
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(field + ":"), error["message"]
    assert upstream.chat_requests == []


def test_bad_json_and_deep_nesting_are_400s_in_anthropic_format(proxy, upstream):
    response = requests.post(proxy.base_url + "/v1/messages", data=b"{not json", timeout=30,
                             headers={"content-type": "application/json"})
    assert response.status_code == 400 and _error(response)["type"] == "invalid_request_error"
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    response = post(proxy, {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [user("hi")],
                            "metadata": {"user_id": "u", "extra": deep}})
    assert response.status_code == 400 and _error(response)["type"] == "invalid_request_error"
    assert response.headers.get("x-request-id", "").startswith("req_")
    # Deep inside a tool call's input (no depth check there): the encoder refuses it, the door's handler says 400.
    history = [user("hi"), {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash",
                                                               "input": {"deep": deep}}]},
               tool_result("toolu_1", "x")]
    response = post(proxy, {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": history, "tools": TOOLS})
    assert response.status_code == 400, response.text
    error = _error(response)
    assert error["type"] == "invalid_request_error" and "nested too deeply" in error["message"]
    assert upstream.chat_requests == []


def test_mid_stream_failure_is_an_error_event(proxy, upstream):
    upstream.script(Reply.hang_up_after(3, Reply.text("one two three four five six", reasoning=None)))
    events = strict_stream(proxy.base_url, {"model": "claude-sonnet-4-5", "max_tokens": 100,
                                            "messages": [user("count")]})
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["type"] == "api_error"


def test_client_keys_answer_401_in_anthropic_format(start_proxy, upstream):
    proxy = start_proxy(upstream.base_url, '[server]\nclient_keys = ["sk-proxy-key"]\n')
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [user("hi")]}
    refused = post(proxy, body, headers={"x-api-key": "sk-wrong"})
    assert refused.status_code == 401 and refused.headers["x-should-retry"] == "false"
    assert _error(refused)["type"] == "authentication_error"
    assert "sk-wrong" not in refused.text and "sk-wrong" not in proxy.log()
    upstream.script(Reply.text("in"))
    assert post(proxy, body, headers={"x-api-key": "sk-proxy-key"}).status_code == 200
    upstream.script(Reply.text("in"))
    assert post(proxy, body, headers={"Authorization": "Bearer sk-proxy-key"}).status_code == 200
    assert requests.head(proxy.base_url + "/", timeout=10).status_code == 200, "the probe needs no key"


# ---- config: model map and the pass-through mode -----------------------------------------------------------------


def test_model_map_from_config(start_proxy, upstream):
    proxy = start_proxy(upstream.base_url, '[claude.model_map]\n"claude-opus-*" = "deepseek-v4-flash"\n')
    upstream.script(Reply.text("a"), Reply.text("b"))
    assert post(proxy, {"model": "claude-opus-4-1", "max_tokens": 5, "messages": [user("x")]}).status_code == 200
    assert upstream.chat_requests[-1].body["model"] == "deepseek-v4-flash"
    assert post(proxy, {"model": "deepseek-v4-pro", "max_tokens": 5, "messages": [user("x")]}).status_code == 200
    assert upstream.chat_requests[-1].body["model"] == "deepseek-v4-pro", "a configured name is served as itself"


PASSTHROUGH_CONFIG = """
[models.deepseek-v4-pro]
messages_upstream = "anthropic"
[models.deepseek-v4-flash]
"""


def test_passthrough_stream_is_byte_for_byte_and_repairs_thinking(start_proxy, upstream):
    proxy = start_proxy(upstream.base_url, PASSTHROUGH_CONFIG)
    upstream.script(Reply.tool_calls([("Bash", {"command": "pwd"})], reasoning="Where am I?", ids=["call_7"]),
                    Reply.text("You are home.", reasoning="Answer."))
    body = {"model": "claude-sonnet-4-5", "max_tokens": 2000, "tools": TOOLS, "thinking": {"type": "adaptive"},
            "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.f00;"},
                       {"type": "text", "text": "You are a coding agent."}],
            "messages": [user("where?")]}
    with requests.post(proxy.base_url + "/v1/messages?beta=true", json={**body, "stream": True}, stream=True,
                       timeout=30, headers={"anthropic-version": "2023-06-01"}) as response:
        assert response.status_code == 200
        raw = response.content
    sent = upstream.anthropic_requests[-1]
    assert sent.body["model"] == "deepseek-v4-pro"
    assert [b["text"] for b in sent.body["system"]] == ["You are a coding agent."]
    assert sent.headers["x-api-key"] == FAKE_KEY and sent.headers["anthropic-version"] == "2023-06-01"
    events = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]
    for event in events:
        validate_event(event)
    check_lifecycle(events)
    call = next(e["content_block"] for e in events if e["type"] == "content_block_start"
                and e["content_block"]["type"] == "tool_use")
    # The fake's own rendering, unchanged: its signature came through as it was.
    assert b'"signature":"ds-' in raw
    # Next turn without the thinking block (a resumed session): the proxy puts the reasoning back.
    history = [user("where?"), {"role": "assistant", "content": [{"type": "tool_use", "id": call["id"],
                                                                   "name": "Bash", "input": {"command": "pwd"}}]},
               tool_result(call["id"], "/root")]
    response = post(proxy, {**body, "messages": history})
    assert response.status_code == 200, response.text
    assert response.json()["content"][-1]["text"] == "You are home."
    repaired = upstream.anthropic_requests[-1].body["messages"][1]["content"][0]
    assert repaired["type"] == "thinking" and repaired["thinking"] == "Where am I?"
    assert upstream.rejections == []


def test_passthrough_without_repair_gets_deepseeks_400(start_proxy, upstream):
    proxy = start_proxy(upstream.base_url, PASSTHROUGH_CONFIG + '[claude]\nthinking_repair = "off"\n')
    history = [user("where?"), {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                                                   "name": "Bash", "input": {}}]},
               tool_result("toolu_1", "/")]
    response = post(proxy, {"model": "claude-sonnet-4-5", "max_tokens": 100, "tools": TOOLS,
                            "thinking": {"type": "adaptive"}, "messages": history})
    assert response.status_code == 400
    assert _error(response)["message"] == THINKING_BLOCK_REQUIRED
    assert upstream.rejections == ["missing_thinking_block"]


def test_passthrough_errors_render_like_the_translating_mode(start_proxy, upstream):
    proxy = start_proxy(upstream.base_url, PASSTHROUGH_CONFIG)
    upstream.script(Reply.error(402, "Insufficient Balance"), Reply.error(400, OVERFLOW))
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10000, "messages": [user("hi")], "stream": True}
    response = post(proxy, body)
    assert response.status_code == 402 and response.headers["x-should-retry"] == "false"
    assert _error(response)["type"] == "billing_error"
    response = post(proxy, body)
    assert response.status_code == 400
    assert _error(response)["message"].startswith("input length and `max_tokens` exceed context limit: ")


def test_passthrough_non_stream_sdk(start_proxy, upstream):
    proxy = start_proxy(upstream.base_url, PASSTHROUGH_CONFIG)
    upstream.script(Reply.text("Plain.", reasoning="Think."))
    message = sdk(proxy).messages.create(model="claude-opus-4-1", max_tokens=100, messages=[user("hi")],
                                         thinking={"type": "adaptive"})
    assert isinstance(message, anthropic.types.Message)
    assert [b.type for b in message.content] == ["thinking", "text"]
    BetaMessage.model_validate(message.model_dump())


def test_passthrough_pings_between_events_through_upstream_silence(start_proxy, upstream):
    proxy = start_proxy(upstream.base_url, PASSTHROUGH_CONFIG + "[server]\nkeepalive_interval = 0.2\n")
    upstream.script(Reply.text("slow words here", reasoning=None, delay=0.7))
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [user("hi")], "stream": True,
            "thinking": {"type": "disabled"}}
    with requests.post(proxy.base_url + "/v1/messages", json=body, stream=True, timeout=30) as response:
        assert response.status_code == 200
        events = sse(response)
    for name, data in events:
        assert name == data["type"]
        validate_event(data)
    check_lifecycle([d for _, d in events])
    types = [d["type"] for _, d in events]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    # The fake sends one ping of its own; the rest are the proxy's, each between two whole events.
    assert types.count("ping") >= 4, types
    assert "".join(d["delta"]["text"] for _, d in events if d["type"] == "content_block_delta") == "slow words here"


def test_too_large_body_is_anthropic_request_too_large(start_proxy, upstream):
    proxy = start_proxy(upstream.base_url, "[server]\nmax_body_mb = 0.01\n")
    response = post(proxy, {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [user("x" * 20_000)]})
    assert response.status_code == 413
    # Anthropic's own type for a 413 (its errors page), which the SDK's typed union (2.15) does not list yet.
    body = response.json()
    assert body["type"] == "error" and body["request_id"].startswith("req_")
    assert body["error"]["type"] == "request_too_large" and "max_body_mb" in body["error"]["message"]
    assert upstream.chat_requests == []


def test_passthrough_to_an_unreachable_upstream_is_an_anthropic_api_error(start_proxy):
    """The pass-through mode words a request that got no answer as every upstream call does
    (UpstreamClient.transport_error), in Anthropic's format: `api_error`, whose status is 500 (Claude Code retries
    it), as the translating mode answers it."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{unused.getsockname()[1]}"
    proxy = start_proxy(closed, PASSTHROUGH_CONFIG)
    response = post(proxy, {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [user("hi")]})
    assert response.status_code == 500, proxy.log()
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "the upstream (deepseek) is unreachable" in error["error"]["message"]
