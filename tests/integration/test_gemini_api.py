"""The Gemini door on the real server (gunicorn + gevent), driven by the official google-genai Python SDK and raw
HTTP, against the fake DeepSeek on loopback. Assertions look at both ends: what the SDK parsed and what the proxy
sent upstream (the fake's recorded requests)."""

from __future__ import annotations

import json

import pytest
import requests
from google import genai
from google.genai import errors, types

from tests.fakes.fake_deepseek import Reply

MAIN = "gemini-2.5-pro"  # served by deepseek-v4-pro (the default patterns)


def client_for(proxy, **options) -> genai.Client:
    return genai.Client(api_key="any-key", http_options=types.HttpOptions(base_url=proxy.base_url,
                                                                          api_version="v1beta", **options))


_CLIENTS: list[genai.Client] = []


def _keep(client: genai.Client) -> genai.Client:
    """A client the test holds: google-genai closes its HTTP client when the Client object is collected, which
    a temporary `client_for(proxy).models...` chain allows in the middle of a call."""
    _CLIENTS.append(client)
    return client


WEATHER_TOOL = types.Tool(function_declarations=[types.FunctionDeclaration(
    name="get_weather", description="The weather in a city.",
    parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})])


def test_stream_and_not(proxy, upstream):
    upstream.script(Reply.text("Hello there, friend.", reasoning="The user greets me."),
                    Reply.text("Plain answer.", reasoning="Short."))
    client = client_for(proxy)
    chunks = list(client.models.generate_content_stream(model=MAIN, contents="Say hello."))
    text = "".join(part.text or "" for c in chunks for part in (c.candidates[0].content.parts if c.candidates
                                                                  and c.candidates[0].content else [])
                   if not part.thought)
    assert text == "Hello there, friend."
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    usage = chunks[-1].usage_metadata
    assert usage.prompt_token_count > 0 and usage.candidates_token_count > 0 and usage.thoughts_token_count > 0
    assert chunks[-1].model_version == MAIN

    response = client.models.generate_content(model=MAIN, contents="Again.")
    assert response.text == "Plain answer."
    assert response.candidates[0].content.parts[0].thought_signature  # the reasoning rides along
    sent = [r.body for r in upstream.chat_requests]
    assert sent[0]["model"] == "deepseek-v4-pro" and sent[0]["stream"] is True
    assert sent[1]["stream"] is False  # a non-streaming client gets a blocking upstream call
    assert sent[0]["max_tokens"] == 65536  # the door's default (config gemini.max_output_tokens)


def test_include_thoughts_streams_thought_parts(proxy, upstream):
    upstream.script(Reply.text("Done.", reasoning="Let me think about it."))
    config = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(include_thoughts=True))
    chunks = list(_keep(client_for(proxy)).models.generate_content_stream(model=MAIN, contents="Hi", config=config))
    parts = [p for c in chunks if c.candidates and c.candidates[0].content for p in c.candidates[0].content.parts]
    assert "".join(p.text for p in parts if p.thought) == "Let me think about it."


def test_function_calling_round_trip_restores_reasoning(proxy, upstream):
    upstream.script(Reply.tool_calls([("get_weather", {"city": "Paris"})], reasoning="I need the weather first."),
                    Reply.text("It is sunny in Paris.", reasoning="Now answer."))
    client = client_for(proxy)
    config = types.GenerateContentConfig(tools=[WEATHER_TOOL],
                                         automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    history: list[types.Content] = [types.Content(role="user", parts=[types.Part(text="Weather in Paris?")])]
    chunks = list(client.models.generate_content_stream(model=MAIN, contents=history, config=config))
    model_parts = [p for c in chunks if c.candidates and c.candidates[0].content for p in c.candidates[0].content.parts]
    calls = [p for p in model_parts if p.function_call]
    assert len(calls) == 1 and calls[0].function_call.name == "get_weather"
    assert calls[0].function_call.args == {"city": "Paris"}
    assert calls[0].thought_signature, "the reasoning rides on the call's part"
    call_id = calls[0].function_call.id
    history.append(types.Content(role="model", parts=model_parts))
    history.append(types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
        id=call_id, name="get_weather", response={"output": "sunny, 24 C"}))]))
    final = client.models.generate_content(model=MAIN, contents=history, config=config)
    assert final.text == "It is sunny in Paris."

    second = upstream.chat_requests[1].body
    assistant = next(m for m in second["messages"] if m["role"] == "assistant")
    assert assistant["reasoning_content"] == "I need the weather first."  # restored from the thoughtSignature
    assert assistant["tool_calls"][0]["id"] == call_id
    tool = next(m for m in second["messages"] if m["role"] == "tool")
    assert tool == {"role": "tool", "tool_call_id": call_id, "content": "sunny, 24 C"}
    assert upstream.rejections == []


def test_parallel_calls_are_parts_of_their_own(proxy, upstream):
    upstream.script(Reply.tool_calls([("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})]))
    config = types.GenerateContentConfig(tools=[WEATHER_TOOL],
                                         automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
    response = _keep(client_for(proxy)).models.generate_content(model=MAIN, contents="Paris and Rome?", config=config)
    assert [c.args["city"] for c in response.function_calls] == ["Paris", "Rome"]
    assert len({c.id for c in response.function_calls}) == 2


def test_json_output_by_response_schema(proxy, upstream):
    upstream.script(Reply.text('{"next_speaker": "user", "reasoning": "done"}', reasoning=None))
    schema = {"type": "OBJECT", "properties": {"next_speaker": {"type": "STRING", "enum": ["user", "model"]},
                                               "reasoning": {"type": "STRING"}}}
    config = types.GenerateContentConfig(response_mime_type="application/json", response_schema=schema)
    # gemini-3-flash-preview: Gemini CLI's next-speaker check, on flash without thinking.
    response = _keep(client_for(proxy)).models.generate_content(model="gemini-3-flash-preview", contents="Who speaks next?",
                                                         config=config)
    assert json.loads(response.text) == {"next_speaker": "user", "reasoning": "done"}
    sent = upstream.chat_requests[0].body
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["model"] == "deepseek-v4-flash" and sent["thinking"] == {"type": "disabled"}
    last = sent["messages"][-1]
    assert last["role"] == "system" and "JSON" in last["content"] and '"next_speaker"' in last["content"]
    assert upstream.rejections == []


def test_count_tokens(proxy, upstream):
    client = client_for(proxy)
    small = client.models.count_tokens(model=MAIN, contents="hello").total_tokens
    large = client.models.count_tokens(model=MAIN, contents="hello " * 500).total_tokens
    assert 0 < small < large
    assert upstream.chat_requests == []  # an estimate, no upstream call


def test_rate_limit_carries_retry_info(proxy, upstream):
    upstream.script(Reply.error(429, "Rate limit reached for requests", code="rate_limit_exceeded",
                                headers={"retry-after": "3"}))
    with pytest.raises(errors.ClientError) as caught:
        _keep(client_for(proxy)).models.generate_content(model=MAIN, contents="hi")
    assert caught.value.code == 429 and caught.value.status == "RESOURCE_EXHAUSTED"
    details = caught.value.details["error"]["details"]
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"} in details


def test_rate_limit_then_success_with_sdk_retries(proxy, upstream):
    upstream.script(Reply.error(429, "Rate limit reached", code="rate_limit_exceeded"), Reply.text("ok"))
    client = client_for(proxy, retry_options=types.HttpRetryOptions(attempts=2, initial_delay=0.1, max_delay=0.2))
    assert client.models.generate_content(model=MAIN, contents="hi").text == "ok"
    assert len(upstream.chat_requests) == 2


def test_insufficient_balance_is_not_retried(proxy, upstream):
    upstream.script(Reply.error(402, "Insufficient Balance", code="invalid_request_error"), Reply.text("never"))
    client = client_for(proxy, retry_options=types.HttpRetryOptions(attempts=3, initial_delay=0.1, max_delay=0.2))
    with pytest.raises(errors.ClientError) as caught:
        list(client.models.generate_content_stream(model=MAIN, contents="hi"))
    assert caught.value.code == 402 and "Insufficient Balance" in caught.value.message
    assert len(upstream.chat_requests) == 1


def test_context_overflow_is_invalid_argument(proxy, upstream):
    upstream.script(Reply.error(400, "This model's maximum context length is 1000000 tokens. However, you requested "
                                     "1200000 tokens (1100000 in the messages, 100000 in the completion). Please "
                                     "reduce the length of the messages or completion.",
                                code="invalid_request_error"))
    with pytest.raises(errors.ClientError) as caught:
        _keep(client_for(proxy)).models.generate_content(model=MAIN, contents="hi")
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    assert "exceeds the maximum number of tokens" in caught.value.message


def test_mid_stream_failure_raises_in_the_sdk(proxy, upstream):
    upstream.script(Reply.hang_up_after(3, Reply.text("one two three four five six seven eight", reasoning=None)))
    received: list[str] = []
    with pytest.raises(errors.APIError) as caught:
        for chunk in _keep(client_for(proxy)).models.generate_content_stream(model=MAIN, contents="count"):
            received.append(chunk.text or "")
    assert caught.value.code >= 500  # retryable: the client may send it again
    assert "".join(received) != "one two three four five six seven eight"


def test_bad_body_names_the_field(proxy, upstream):
    url = f"{proxy.base_url}/v1beta/models/{MAIN}:generateContent"
    response = requests.post(url, json={"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                                        "generationConfig": {"temperature": "hot"}}, timeout=10)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and "generationConfig.temperature" in error["message"]
    response = requests.post(url, data=b"{not json", headers={"content-type": "application/json"}, timeout=10)
    assert response.status_code == 400 and response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert upstream.chat_requests == []


def test_json_array_stream_without_alt_sse(proxy, upstream):
    upstream.script(Reply.text("Array form.", reasoning=None))
    url = f"{proxy.base_url}/v1beta/models/{MAIN}:streamGenerateContent"
    response = requests.post(url, json={"contents": [{"role": "user", "parts": [{"text": "x"}]}]}, timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    objects = json.loads(response.text)
    assert "".join(p["text"] for o in objects for p in o["candidates"][0].get("content", {}).get("parts", [])) \
        == "Array form."
    assert objects[-1]["candidates"][0]["finishReason"] == "STOP"


def test_models_list_and_get(proxy):
    listing = requests.get(f"{proxy.base_url}/v1beta/models", timeout=10).json()
    assert "models/deepseek-v4-pro" in [m["name"] for m in listing["models"]]
    got = requests.get(f"{proxy.base_url}/v1beta/models/gemini-2.5-flash-lite", timeout=10).json()
    assert got["baseModelId"] == "deepseek-v4-flash"
    missing = requests.get(f"{proxy.base_url}/v1beta/models/claude-x", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"


def test_client_keys_checked_in_every_form(fake_deepseek, start_proxy):
    fake_deepseek.reset()
    server = start_proxy(fake_deepseek.base_url, '[server]\nclient_keys = ["sk-proxy-1"]\n')
    url = f"{server.base_url}/v1beta/models"
    wrong = requests.get(url, headers={"x-goog-api-key": "nope"}, timeout=10)
    assert wrong.status_code == 400 and wrong.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert "nope" not in wrong.text
    for kwargs in ({"headers": {"x-goog-api-key": "sk-proxy-1"}}, {"params": {"key": "sk-proxy-1"}},
                   {"headers": {"Authorization": "Bearer sk-proxy-1"}}):
        assert requests.get(url, timeout=10, **kwargs).status_code == 200


def test_keepalive_objects_through_a_silent_upstream(fake_deepseek, start_proxy):
    """A queued upstream (silent for longer than keepalive_interval): the door sends {modelVersion, responseId}
    objects, which the SDK takes as empty chunks; the answer arrives whole after them."""
    fake_deepseek.reset()
    server = start_proxy(fake_deepseek.base_url, "[server]\nkeepalive_interval = 0.2\n")
    fake_deepseek.script(Reply.text("Worth the wait.", reasoning=None, ttft=1.2))
    raw = requests.post(f"{server.base_url}/v1beta/models/{MAIN}:streamGenerateContent?alt=sse",
                        json={"contents": [{"role": "user", "parts": [{"text": "x"}]}]}, timeout=20)
    objects = [json.loads(line[6:]) for line in raw.text.splitlines() if line.startswith("data: ")]
    assert {"modelVersion": MAIN, "responseId": objects[-1]["responseId"]} in objects  # at least one keepalive

    fake_deepseek.script(Reply.text("Worth the wait.", reasoning=None, ttft=1.2))
    chunks = list(_keep(client_for(server)).models.generate_content_stream(model=MAIN, contents="x"))
    assert any(not c.candidates for c in chunks)
    assert "".join(c.text or "" for c in chunks) == "Worth the wait."
