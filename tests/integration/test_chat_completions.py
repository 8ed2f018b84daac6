"""The Chat Completions door on the real server (gunicorn + gevent, `deepseek-proxy serve`), driven by the official
openai SDK and raw HTTP, against the fake DeepSeek on loopback (which enforces DeepSeek's request rules: a
thinking-mode tool-call turn without reasoning_content is a 400 there, as at DeepSeek)."""

from __future__ import annotations

import json
import time

import openai
import pytest
import requests
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.fakes.fake_deepseek import Reply

MODEL = "deepseek-v4-pro"
LS_TOOL = {"type": "function", "function": {"name": "run_shell", "description": "Run a command.",
                                            "parameters": {"type": "object",
                                                           "properties": {"cmd": {"type": "string"}},
                                                           "required": ["cmd"]}}}


def sdk(proxy, **kwargs) -> openai.OpenAI:
    # Strict validation: every chunk and completion must parse as the SDK's typed models.
    return openai.OpenAI(base_url=proxy.base_url + "/v1", api_key="unused", max_retries=0,
                         _strict_response_validation=True, **kwargs)


def post(proxy, body: dict, path: str = "/v1/chat/completions", **kwargs) -> requests.Response:
    return requests.post(proxy.base_url + path, json=body, timeout=30, **kwargs)


def data_lines(response: requests.Response) -> list[str]:
    return [line[5:].strip() for line in response.iter_lines(decode_unicode=True) if line.startswith("data:")]


# ---- streaming -----------------------------------------------------------------------------------------------


def test_sdk_stream_relays_reasoning_text_and_usage(proxy, upstream):
    upstream.script(Reply.text("Hello there, friend.", reasoning="The user greets me."))
    stream = sdk(proxy).chat.completions.create(model=MODEL, stream=True, stream_options={"include_usage": True},
                                                messages=[{"role": "user", "content": "hi"}])
    chunks = list(stream)
    assert all(isinstance(c, ChatCompletionChunk) and c.model == MODEL for c in chunks)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                        for c in chunks if c.choices)
    assert content == "Hello there, friend."
    assert reasoning == "The user greets me.", "reasoning_content deltas pass through as they come"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens_details.reasoning_tokens > 0
    assert usage.prompt_tokens_details.cached_tokens == usage.model_extra["prompt_cache_hit_tokens"]
    assert usage.model_extra["prompt_cache_miss_tokens"] == usage.prompt_tokens - usage.prompt_tokens_details.cached_tokens


def test_usage_reports_cached_tokens_of_a_repeated_prefix(proxy, upstream):
    upstream.script(Reply.text("One."), Reply.text("Two."))
    history = [{"role": "system", "content": "You are terse. " * 100}, {"role": "user", "content": "count"}]
    client = sdk(proxy)
    first = client.chat.completions.create(model=MODEL, messages=history)
    second = client.chat.completions.create(model=MODEL, messages=[
        *history, {"role": "assistant", "content": "One."}, {"role": "user", "content": "again"}])
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens >= 64, "the repeated prefix is billed as a cache hit"
    assert second.usage.model_extra["prompt_cache_hit_tokens"] == second.usage.prompt_tokens_details.cached_tokens


def test_usage_is_normalised_when_the_upstream_sends_only_deepseek_fields(proxy, upstream):
    upstream.script(Reply.text("ok", usage={"prompt_tokens_details": None, "completion_tokens_details": None,
                                            "prompt_cache_hit_tokens": 128}))
    chunks = list(sdk(proxy).chat.completions.create(model=MODEL, stream=True, stream_options={"include_usage": True},
                                                     messages=[{"role": "user", "content": "hi"}]))
    usage = chunks[-1].usage
    assert usage.prompt_tokens_details.cached_tokens == 128
    assert usage.completion_tokens_details.reasoning_tokens == 0
    assert usage.model_extra["prompt_cache_hit_tokens"] == 128


def test_no_usage_chunk_unless_the_client_asks(proxy, upstream):
    upstream.script(Reply.text("ok"))
    chunks = list(sdk(proxy).chat.completions.create(model=MODEL, stream=True,
                                                     messages=[{"role": "user", "content": "hi"}]))
    assert chunks and all(c.usage is None and c.choices for c in chunks)
    assert upstream.chat_requests[-1].body["stream_options"] == {"include_usage": True}, "the proxy still logs usage"


def test_stream_ends_with_done_and_echoes_the_model_name(proxy, upstream):
    upstream.script(Reply.text("ok"))
    with post(proxy, {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
              path="/chat/completions", stream=True) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = data_lines(response)
    assert lines[-1] == "[DONE]"
    assert {json.loads(line)["model"] for line in lines[:-1]} == {MODEL}


def test_deltas_are_relayed_as_they_arrive(proxy, upstream):
    upstream.script(Reply.text("a b c d", reasoning=None, delay=0.4))
    arrivals = []
    with post(proxy, {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
              stream=True) as response:
        for line in response.iter_lines():
            if b'"content":"' in line and b'"content":""' not in line:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 4
    assert arrivals[1] - arrivals[0] > 0.2, "deltas were buffered instead of streamed"


def test_upstream_silence_is_bridged_with_keepalive_comments(start_proxy, fake_deepseek):
    fake_deepseek.reset()
    server = start_proxy(fake_deepseek.base_url, "[server]\nkeepalive_interval = 0.2\n")
    fake_deepseek.script(Reply.text("slow but sure", reasoning=None, delay=0.7))
    with post(server, {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
              stream=True) as response:
        lines = [line for line in response.iter_lines(decode_unicode=True) if line]
    assert lines.count(": keep-alive") >= 4
    assert lines[-1] == "data: [DONE]"
    # ... and the SDK reads through them.
    fake_deepseek.script(Reply.text("slow but sure", reasoning=None, delay=0.5))
    chunks = list(sdk(server).chat.completions.create(model=MODEL, stream=True,
                                                      messages=[{"role": "user", "content": "hi"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "slow but sure"


def test_non_streaming_upstream_is_replayed_as_a_stream(start_proxy, fake_deepseek):
    fake_deepseek.reset()
    server = start_proxy(fake_deepseek.base_url, '[models."deepseek-v4-pro"]\nstream = false\n')
    fake_deepseek.script(Reply.tool_calls([("run_shell", {"cmd": "ls"})], reasoning="Plan."))
    chunks = list(sdk(server).chat.completions.create(model=MODEL, stream=True, tools=[LS_TOOL],
                                                      stream_options={"include_usage": True},
                                                      messages=[{"role": "user", "content": "look"}]))
    assert fake_deepseek.chat_requests[-1].body["stream"] is False
    assert len({c.id for c in chunks}) == 1 and chunks[0].choices[0].delta.role == "assistant"
    calls = chunks[0].choices[0].delta.tool_calls
    assert calls[0].function.name == "run_shell" and json.loads(calls[0].function.arguments) == {"cmd": "ls"}
    assert chunks[0].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage.prompt_tokens > 0


# ---- non-streaming -------------------------------------------------------------------------------------------


def test_sdk_non_stream_completion(proxy, upstream):
    upstream.script(Reply.text("Forty-two.", reasoning="Arithmetic."))
    result = sdk(proxy).chat.completions.create(
        model=MODEL, max_completion_tokens=50,
        messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "answer"}])
    assert isinstance(result, ChatCompletion) and result.model == MODEL
    assert result.choices[0].message.content == "Forty-two."
    assert result.choices[0].message.model_extra["reasoning_content"] == "Arithmetic."
    assert result.usage.prompt_tokens_details.cached_tokens is not None
    sent = upstream.chat_requests[-1].body
    assert sent["stream"] is False
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}, "developer becomes system"
    assert sent["max_tokens"] == 50 and "max_completion_tokens" not in sent


# ---- tools and DeepSeek's reasoning replay -------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_tool_round_trip_in_thinking_mode_restores_the_reasoning(proxy, upstream, stream):
    """Turn 2 sends the assistant tool call back without reasoning_content, as Cline and most OpenAI clients do;
    the fake DeepSeek would answer 400 if it arrived without it."""
    upstream.script(Reply.tool_calls([("run_shell", {"cmd": "ls"})], reasoning="I should list the files."),
                    Reply.text("There are two files."))
    client = sdk(proxy)
    messages: list[dict] = [{"role": "user", "content": "what is here?"}]
    if stream:
        chunks = list(client.chat.completions.create(model=MODEL, messages=messages, tools=[LS_TOOL], stream=True))
        calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
        call_id, name = calls[0].id, calls[0].function.name
        arguments = "".join(call.function.arguments or "" for call in calls)
    else:
        reply = client.chat.completions.create(model=MODEL, messages=messages, tools=[LS_TOOL])
        call = reply.choices[0].message.tool_calls[0]
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
    assert name == "run_shell" and json.loads(arguments) == {"cmd": "ls"}

    messages += [{"role": "assistant", "content": None,
                  "tool_calls": [{"id": call_id, "type": "function",
                                  "function": {"name": name, "arguments": arguments}}]},
                 {"role": "tool", "tool_call_id": call_id, "content": "a.txt\nb.txt"}]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=[LS_TOOL])
    assert second.choices[0].message.content == "There are two files."
    assert upstream.rejections == []
    replayed = upstream.chat_requests[-1].body["messages"][1]
    assert replayed["reasoning_content"] == "I should list the files."
    assert replayed["content"] == "", "DeepSeek wants a string, not null"


def test_unknown_tool_call_id_gets_an_empty_reasoning_and_is_accepted(proxy, upstream):
    upstream.script(Reply.text("fine"))
    sdk(proxy).chat.completions.create(model=MODEL, tools=[LS_TOOL], messages=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "call_from_another_proxy", "type": "function",
                                              "function": {"name": "run_shell", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_from_another_proxy", "content": "done"}])
    assert upstream.rejections == []
    assert upstream.chat_requests[-1].body["messages"][1]["reasoning_content"] == ""


def test_profile_fixes_for_tools(proxy, upstream):
    upstream.script(Reply.text("ok"), Reply.text("ok"))
    strict_tool = {"type": "function", "function": {**LS_TOOL["function"], "strict": True}}
    client = sdk(proxy)
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=[strict_tool],
                                   parallel_tool_calls=False, tool_choice="auto")
    sent = upstream.chat_requests[-1].body
    assert "strict" not in sent["tools"][0]["function"], "DeepSeek refuses strict outside its beta URL"
    assert "parallel_tool_calls" not in sent and sent["tool_choice"] == "auto"
    assert sent["thinking"] == {"type": "enabled"}
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], tools=[],
                                   tool_choice="none")
    sent = upstream.chat_requests[-1].body
    assert "tools" not in sent and "tool_choice" not in sent, "DeepSeek refuses an empty tools array"
    assert upstream.rejections == []


def test_forced_tool_choice_runs_without_thinking(proxy, upstream):
    upstream.script(Reply.tool_calls([("run_shell", {"cmd": "ls"})], reasoning=None))
    client = sdk(proxy)
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "go"}], tools=[LS_TOOL],
                                           tool_choice={"type": "function", "function": {"name": "run_shell"}})
    assert reply.choices[0].message.tool_calls[0].function.name == "run_shell"
    assert upstream.chat_requests[-1].body["thinking"] == {"type": "disabled"}


def test_reasoning_effort_and_deepseek_thinking_switch(proxy, upstream):
    upstream.script(Reply.text("ok", reasoning=None), Reply.text("ok", reasoning=None))
    client = sdk(proxy)
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], reasoning_effort="medium")
    assert upstream.chat_requests[-1].body["reasoning_effort"] == "high"  # the model's effort_map
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                   extra_body={"thinking": {"type": "disabled"}})
    assert upstream.chat_requests[-1].body["thinking"] == {"type": "disabled"}


# ---- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_insufficient_balance_is_a_402_the_sdk_raises(proxy, upstream, stream):
    upstream.script(Reply.error(402, "Insufficient Balance"))
    with pytest.raises(openai.APIStatusError) as caught:
        result = sdk(proxy).chat.completions.create(model=MODEL, stream=stream,
                                                    messages=[{"role": "user", "content": "hi"}])
        list(result) if stream else None
    assert caught.value.status_code == 402
    assert caught.value.body["code"] == "insufficient_quota"
    assert caught.value.message.endswith("Insufficient Balance")


def test_rate_limit_is_a_429_with_retry_after(proxy, upstream):
    upstream.script(Reply.error(429, "Rate Limit Reached", code="rate_limit_reached"))
    response = post(proxy, {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_context_overflow_is_context_length_exceeded(proxy, upstream):
    message = ("This model's maximum context length is 1048576 tokens. However, you requested 1200000 tokens "
               "(1200000 in the messages, 0 in the completion). Please reduce the length of the messages.")
    upstream.script(Reply.error(400, message))
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(proxy).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "context_length_exceeded"
    assert "maximum context length" in caught.value.message


def test_unknown_model_is_a_404(proxy, upstream):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(proxy).chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found" and "deepseek-v4-pro" in caught.value.message
    assert upstream.chat_requests == []


def test_mid_stream_failure_is_an_error_event_the_sdk_raises(proxy, upstream):
    first = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
             "choices": [{"index": 0, "delta": {"content": "partial"}, "finish_reason": None}]}
    error = {"error": {"message": "Internal engine failure", "type": "server_error", "code": "engine_failed"}}
    upstream.script(Reply.raw_sse([f"data: {json.dumps(first)}", "", f"data: {json.dumps(error)}", ""]))
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in sdk(proxy).chat.completions.create(model=MODEL, stream=True,
                                                        messages=[{"role": "user", "content": "hi"}]):
            received.append(chunk.choices[0].delta.content)
    assert received == ["partial"], "what arrived was relayed first"
    assert "Internal engine failure" in caught.value.message
    assert caught.value.body["code"] == "engine_failed"


def test_upstream_hang_up_mid_stream_is_an_error_the_sdk_raises(proxy, upstream):
    upstream.script(Reply.hang_up_after(3, Reply.text("one two three four five six", reasoning=None)))
    with post(proxy, {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
              stream=True) as response:
        lines = data_lines(response)
    assert "[DONE]" not in lines
    assert json.loads(lines[-1])["error"]["type"] == "server_error"
    upstream.script(Reply.hang_up_after(3, Reply.text("one two three four five six", reasoning=None)))
    with pytest.raises(openai.APIError):
        list(sdk(proxy).chat.completions.create(model=MODEL, stream=True,
                                                messages=[{"role": "user", "content": "hi"}]))


def test_client_disconnect_closes_the_upstream(proxy, upstream):
    upstream.script(Reply.text(" ".join(["word"] * 200), delay=0.02))
    with post(proxy, {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
              stream=True) as response:
        for line in response.iter_lines():
            if b'"content":"' in line:
                break
    assert upstream.wait_for_disconnects(1, timeout=5), "the proxy kept reading after its client left"


@pytest.mark.parametrize("body, param", [
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "temperature"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "top_p": -0.1}, "top_p"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
    ({"model": MODEL, "messages": []}, "messages"),
    ({"model": MODEL}, "messages"),
    ({"model": MODEL, "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
      "tools": [{"type": "function", "function": {"name": "f", "parameters": "nope"}}]}, "tools[0].function.parameters"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
])
def test_bad_requests_are_400s_naming_the_param(proxy, upstream, body, param):
    response = post(proxy, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"
    assert upstream.chat_requests == [], "a bad request never reaches the upstream"


def test_n_above_one_says_why(proxy, upstream):
    response = post(proxy, {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 3})
    assert "single choice" in response.json()["error"]["message"]


def test_client_keys_are_checked_in_openai_format(start_proxy, fake_deepseek):
    fake_deepseek.reset()
    server = start_proxy(fake_deepseek.base_url, '[server]\nclient_keys = ["team-secret-1"]\n')
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(server).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "invalid_api_key"
    fake_deepseek.script(Reply.text("ok"))
    allowed = openai.OpenAI(base_url=server.base_url + "/v1", api_key="team-secret-1", max_retries=0)
    assert allowed.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}]).choices
    assert "team-secret-1" not in server.log()
