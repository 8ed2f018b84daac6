"""The Chat Completions door's translators, without a server: request (client body → hub Chat request, then the
upstream layer's clean-up), validation, the stream translator driven by the relay, and the blocking reply."""

from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from deepseek_proxy.config import ModelConfig, default_models
from deepseek_proxy.core.chat import completion_as_chunks
from deepseek_proxy.core.errors import ErrorKind, ProxyError
from deepseek_proxy.frontdoors.chat_validation import validate_chat_request
from deepseek_proxy.frontdoors.common import openai_type_and_code
from deepseek_proxy.frontdoors.relay import relay
from deepseek_proxy.jsonfast import dumps
from deepseek_proxy.shutdown import ServerShuttingDown
from deepseek_proxy.translate.chat_request import translate_chat_request
from deepseek_proxy.translate.chat_stream import (
    ChatCompletionStream,
    client_completion,
    normalised_usage,
)
from deepseek_proxy.translate.errors import RequestError
from deepseek_proxy.translate.reasoning import ReasoningCache
from deepseek_proxy.upstream.chat import END, TICK, Failure
from deepseek_proxy.upstream.prepare import prepare_request
from deepseek_proxy.upstream.profiles import profile_named
from tests.fakes.fake_deepseek import DeepSeekRules
from tests.unit.test_relay import FakeEvents, batch

PRO = default_models()["deepseek-v4-pro"]
DEEPSEEK = profile_named("deepseek")
OPENAI = profile_named("openai")
TOOL = {"type": "function", "function": {"name": "run_shell", "parameters": {"type": "object"}}}


def translate(body: dict, model: ModelConfig = PRO, profile=DEEPSEEK, **kwargs):
    body = {"model": "deepseek-v4-pro", **body}
    validate_chat_request(body)
    return translate_chat_request(body, model, profile, **kwargs)


def upstream_body(body: dict, cache: ReasoningCache | None = None, profile=DEEPSEEK) -> dict:
    """What the upstream receives: the door's translation, then the upstream layer's clean-up."""
    chat = translate(body, profile=profile)
    return prepare_request(chat.body, model=PRO, profile=profile, thinking=chat.thinking, cache=cache)


def deepseek_accepts(sent: dict) -> None:
    DeepSeekRules(api_key="k", thinking_default=True).check_chat(dumps(sent), "/chat/completions")


# ---- request -------------------------------------------------------------------------------------------------


def test_a_plain_request_is_nearly_identity_and_byte_stable():
    body = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
            "temperature": 0.2, "stop": ["END"], "stream": True, "stream_options": {"include_usage": True}}
    chat = translate(body)
    assert chat.body["messages"] == body["messages"]
    assert chat.body["messages"][1] is body["messages"][1], "unchanged messages are not copied"
    assert chat.body["temperature"] == 0.2 and chat.body["stop"] == ["END"]
    assert chat.body["stream_options"] == {"include_usage": True} and chat.include_usage and chat.stream
    assert dumps(upstream_body(body)) == dumps(upstream_body(json.loads(json.dumps(body))))
    deepseek_accepts(upstream_body(body))


def test_developer_null_content_and_part_lists_become_what_deepseek_takes():
    sent = upstream_body({"messages": [
        {"role": "developer", "content": [{"type": "text", "text": "Rules."}]},
        {"role": "user", "content": [{"type": "text", "text": "see"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "run_shell", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Done"}], "refusal": None},
        {"role": "user", "content": "thanks"},
    ], "tools": [TOOL]})
    messages = sent["messages"]
    assert messages[0] == {"role": "system", "content": [{"type": "text", "text": "Rules."}]}
    assert messages[1]["content"][1]["type"] == "text" and "image" in messages[1]["content"][1]["text"]
    assert messages[2]["content"] == "" and messages[2]["reasoning_content"] == ""
    assert messages[3] == {"role": "tool", "tool_call_id": "c1", "content": "ab"}
    assert messages[4] == {"role": "assistant", "content": "Done", "reasoning_content": ""}
    deepseek_accepts(sent)


def test_missing_reasoning_is_restored_from_the_cache_by_tool_call_id():
    cache = ReasoningCache()
    cache.put("c1", "I will list the files.")
    history = [{"role": "user", "content": "go"},
               {"role": "assistant", "content": "", "tool_calls": [
                   {"id": "c1", "type": "function", "function": {"name": "run_shell", "arguments": "{}"}}]},
               {"role": "tool", "tool_call_id": "c1", "content": "a.txt"}]
    sent = upstream_body({"messages": history, "tools": [TOOL]}, cache)
    assert sent["messages"][1]["reasoning_content"] == "I will list the files."
    deepseek_accepts(sent)
    # What the client sent back itself wins over the cache.
    own = [history[0], {**history[1], "reasoning_content": "mine"}, history[2]]
    assert upstream_body({"messages": own, "tools": [TOOL]}, cache)["messages"][1]["reasoning_content"] == "mine"


def test_token_limit_names_and_thinking_per_profile():
    chat = translate({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 10, "max_tokens": 99})
    assert chat.body["max_tokens"] == 10, "max_completion_tokens (OpenAI's current name) wins"
    assert translate({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 7}).body["max_tokens"] == 7
    off = translate({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "none"})
    assert off.body["thinking"] == {"type": "disabled"} and not off.thinking
    own_switch = translate({"messages": [{"role": "user", "content": "hi"}], "thinking": {"type": "disabled"}})
    assert own_switch.body["thinking"] == {"type": "disabled"}
    plain = translate({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "low"}, profile=OPENAI)
    assert plain.body["reasoning_effort"] == "low" and "thinking" not in plain.body


def test_tools_strict_parallel_and_names_per_profile():
    dotted = {"type": "function", "function": {"name": "mcp.server/read file", "strict": True,
                                               "parameters": {"type": "object"}}}
    body = {"messages": [{"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "", "tool_calls": [
                             {"id": "c1", "type": "function",
                              "function": {"name": "mcp.server/read file", "arguments": "{}"}}]},
                         {"role": "tool", "tool_call_id": "c1", "content": "x"}],
            "tools": [dotted], "parallel_tool_calls": True,
            "tool_choice": {"type": "function", "function": {"name": "mcp.server/read file"}}}
    chat = translate(body)
    (upstream_name, client_name), = chat.tool_names.items()
    assert client_name == "mcp.server/read file" and upstream_name.startswith("mcp_server_read_file_")
    sent = prepare_request(chat.body, model=PRO, profile=DEEPSEEK, thinking=chat.thinking)
    assert sent["tools"][0]["function"]["name"] == upstream_name and "strict" not in sent["tools"][0]["function"]
    assert sent["messages"][1]["tool_calls"][0]["function"]["name"] == upstream_name, "history says the same name"
    assert sent["tool_choice"] == {"type": "function", "function": {"name": upstream_name}}
    assert "parallel_tool_calls" not in sent
    assert sent["thinking"] == {"type": "disabled"}, "a forced tool_choice runs without thinking"
    deepseek_accepts(sent)
    plain = upstream_body({**body, "tool_choice": "auto"}, profile=OPENAI)
    assert plain["parallel_tool_calls"] is True and plain["tools"][0]["function"]["strict"] is True


def test_json_schema_becomes_json_object_with_the_schema_stated():
    sent = upstream_body({"messages": [{"role": "user", "content": "a colour"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "colour", "schema": {"type": "object"}}}})
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["messages"][-1]["role"] == "system" and "colour" in sent["messages"][-1]["content"]
    deepseek_accepts(sent)


def test_openai_only_and_vendor_fields_are_accepted_not_forwarded():
    chat = translate({"messages": [{"role": "user", "content": "hi"}], "metadata": {"a": "b"}, "store": True,
                      "user": "u1", "top_k": 5, "seed": 3})
    assert chat.dropped == ["metadata", "store", "user"]
    assert "top_k" not in chat.body and "metadata" not in chat.body and chat.body["seed"] == 3


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "hi"}], "functions": [{"name": "f"}]}, "functions"),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "custom", "custom": {"name": "x"}}]},
     "tools[0].type"),
    ({"messages": [{"role": "user", "content": "hi"}], "modalities": ["text", "audio"]}, "modalities"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {"name": "x"}}]}]},
     "messages[0].tool_calls[0].type"),
])
def test_what_cannot_be_forwarded_is_a_400_naming_the_param(body, param):
    with pytest.raises(RequestError) as caught:
        translate(body)
    assert caught.value.param == param and caught.value.status == 400


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 2.5}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}, "top_p"),
    ({"messages": [{"role": "user", "content": "hi"}], "presence_penalty": -3}, "presence_penalty"),
    ({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 21}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 0}, "n"),
    ({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0].image_url"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}]},
     "messages[0].tool_calls[0].function"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {}}]},
     "tools[0].function.name"),
    ({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "sometimes"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}}, "response_format.type"),
    ({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "extreme"}, "reasoning_effort"),
])
def test_validation_names_the_param(body, param):
    with pytest.raises(RequestError) as caught:
        validate_chat_request({"model": "m", **body})
    assert caught.value.param == param and caught.value.status == 400


def test_validation_bounds_nesting_of_echoed_structures():
    deep: dict = {}
    node = deep
    for _ in range(100):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(RequestError) as caught:
        validate_chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                               "tools": [{"type": "function", "function": {"name": "f", "parameters": deep}}]})
    assert caught.value.param == "tools"


# ---- stream --------------------------------------------------------------------------------------------------


def chunk(delta: dict, finish: str | None = None, **extra) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-v4-pro",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


USAGE = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120, "prompt_cache_hit_tokens": 64,
         "prompt_cache_miss_tokens": 36}


def door(**kwargs) -> ChatCompletionStream:
    return ChatCompletionStream(**{"model": "my-alias", "include_usage": True, "error_fields": openai_type_and_code,
                                   **kwargs})


def frames_of(data: bytes) -> list:
    out = []
    for frame in data.split(b"\n\n"):
        if frame.startswith(b"data: "):
            payload = frame[6:]
            out.append(payload.decode() if payload == b"[DONE]" else json.loads(payload))
        elif frame:
            out.append(frame.decode())
    return out


def test_relay_drives_the_chat_stream_nearly_as_identity():
    events = FakeEvents(batch(chunk({"role": "assistant", "content": None, "reasoning_content": ""}),
                              chunk({"reasoning_content": "Think."})),
                        TICK,
                        batch(chunk({"content": "Hi"}), chunk({}, "stop")),
                        batch({"id": "chatcmpl-1", "choices": [], "usage": USAGE}),
                        END)
    translator = door()
    ended = []
    data = list(relay(events, translator, on_end=lambda: ended.append(True)))
    frames = frames_of(b"".join(data))
    assert frames[2] == ": keep-alive", "an SSE comment through the silence"
    assert frames[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate(f) for f in frames if isinstance(f, dict)]
    assert {c.model for c in chunks} == {"my-alias"}, "the model name as the client sent it"
    assert [(c.choices[0].delta.model_extra or {}).get("reasoning_content") for c in chunks[:2]] == ["", "Think."]
    usage = chunks[-1].usage
    assert usage.prompt_tokens_details.cached_tokens == 64 and usage.completion_tokens_details.reasoning_tokens == 0
    assert usage.model_extra["prompt_cache_hit_tokens"] == 64, "DeepSeek's own fields are kept"
    assert events.closed and ended == [True] and translator.finished


def test_usage_is_left_out_unless_asked_for():
    translator = door(include_usage=False)
    assert translator.feed({"id": "x", "choices": [], "usage": USAGE}) == []
    finish = translator.feed(chunk({}, "stop", usage=USAGE))
    assert "usage" not in finish[0]
    assert translator.usage["prompt_tokens_details"]["cached_tokens"] == 64, "still known to the door (its log)"


def test_normalised_usage_keeps_what_the_upstream_gave():
    full = {**USAGE, "prompt_tokens_details": {"cached_tokens": 10}, "completion_tokens_details": {"reasoning_tokens": 5}}
    assert normalised_usage(full) is full
    partial = normalised_usage({**USAGE, "completion_tokens_details": {"reasoning_tokens": 5}})
    assert partial["prompt_tokens_details"] == {"cached_tokens": 64}
    assert partial["completion_tokens_details"] == {"reasoning_tokens": 5}


def test_tool_calls_are_noted_for_the_reasoning_cache_and_names_restored():
    translator = door(tool_names={"read_file_ab12cd34": "read.file"})
    translator.feed(chunk({"reasoning_content": "Need "}))
    translator.feed(chunk({"reasoning_content": "the file."}))
    out = translator.feed(chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                 "function": {"name": "read_file_ab12cd34", "arguments": "{"}}]}))
    translator.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}))
    assert out[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "read.file"
    assert translator.calls_with_reasoning() == [("call_1", "Need the file.")]
    assert door().calls_with_reasoning() == [], "nothing to cache without reasoning"


def test_a_failure_after_the_first_byte_is_one_error_event_and_the_end():
    events = FakeEvents(batch(chunk({"content": "part"})),
                        Failure(ProxyError(ErrorKind.SERVER_ERROR, "engine failed", 500, "engine_failed")))
    translator = door()
    frames = frames_of(b"".join(relay(events, translator)))
    assert frames[-1] == {"error": {"message": "engine failed", "type": "server_error", "param": None,
                                    "code": "engine_failed"}}
    assert "[DONE]" not in frames and translator.failed is not None
    overflow = door().fail(ProxyError(ErrorKind.CONTEXT_OVERFLOW, "too long", 400))
    assert overflow[0]["error"]["code"] == "context_length_exceeded"


def test_shutdown_ends_the_stream_with_a_retryable_error():
    class Stopping(FakeEvents):
        def __next__(self):
            if self.events:
                return self.events.pop(0)
            raise ServerShuttingDown()

    events = Stopping(batch(chunk({"content": "part"})))
    frames = frames_of(b"".join(relay(events, door())))
    assert frames[-1]["error"]["type"] == "server_error" and events.closed


def test_a_replayed_completion_gets_the_fields_a_stream_carries():
    completion = {"id": "x", "object": "chat.completion", "created": 1, "model": "deepseek-v4-pro",
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": "Hi", "reasoning_content": "R"}}],
                  "usage": USAGE}
    translator = door()
    out = [c for piece in completion_as_chunks(completion) for c in translator.feed(piece)]  # type: ignore[arg-type]
    chunks = [ChatCompletionChunk.model_validate(c) for c in out]
    assert len({c.id for c in chunks}) == 1 and chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == "Hi" and chunks[-1].usage.prompt_tokens == 100


def test_the_blocking_reply_gets_the_same_changes():
    completion = {"id": "x", "object": "chat.completion", "created": 1, "model": "deepseek-v4-pro",
                  "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                      "role": "assistant", "content": "", "reasoning_content": "Look first.",
                      "tool_calls": [{"id": "call_9", "type": "function",
                                      "function": {"name": "read_file_ab12cd34", "arguments": "{}"}}]}}],
                  "usage": USAGE}
    translator = door(tool_names={"read_file_ab12cd34": "read.file"})
    reply = ChatCompletion.model_validate(client_completion(completion, translator))
    assert reply.model == "my-alias" and reply.choices[0].message.tool_calls[0].function.name == "read.file"
    assert reply.usage.prompt_tokens_details.cached_tokens == 64
    assert translator.calls_with_reasoning() == [("call_9", "Look first.")]


def test_image_parts_reach_a_model_that_takes_images():
    from dataclasses import replace

    seeing = replace(PRO, images=True)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    chat = translate({"messages": [{"role": "user", "content": [{"type": "text", "text": "see"}, image]}]},
                     model=seeing)
    assert chat.body["messages"][0]["content"][1] == image


# ---- any body: a 400 naming a param, or a request DeepSeek accepts --------------------------------------------

_FUZZ_BASE = {"model": "deepseek-v4-pro", "stream": True, "stream_options": {"include_usage": True},
              "reasoning_effort": "low", "thinking": {"type": "enabled"}, "stop": "x",
              "response_format": {"type": "json_schema", "json_schema": {"name": "n"}},
              "messages": [{"role": "developer", "content": "x"},
                           {"role": "user", "content": [{"type": "text", "text": "a"},
                                                        {"type": "image_url", "image_url": {"url": "u"}}]},
                           {"role": "assistant", "content": None, "tool_calls": [
                               {"id": "c", "type": "function", "function": {"name": "f.g", "arguments": "{}"}}]},
                           {"role": "tool", "tool_call_id": "c", "content": "r"}],
              "tools": [{"type": "function", "function": {"name": "f.g", "parameters": {"type": "object"}}}],
              "tool_choice": {"type": "function", "function": {"name": "f.g"}}}
_FUZZ_VALUES = [None, 0, 1, -1, 2.5, "", "x", "function", "custom", "text", "image_url", "user", "assistant", "tool",
                "developer", [], {}, [{}], {"type": "custom"}, True,
                {"id": "c", "type": "custom", "custom": {"name": "f", "input": "x"}}]  # an OpenAI custom tool call


def _paths(value, path=()):
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _paths(child, (*path, key))


def test_mutated_bodies_are_a_400_or_what_deepseek_accepts():
    """Derandomized: 4000 bodies, each a valid one with one value (sometimes two) replaced or removed."""
    import copy
    import random

    rng = random.Random(20261201)
    paths = [p for p in _paths(_FUZZ_BASE) if p]
    accepted = 0
    for _ in range(4000):
        body = copy.deepcopy(_FUZZ_BASE)
        for path in rng.sample(paths, 1 if rng.random() < 0.7 else 2):
            node = body
            try:
                for key in path[:-1]:
                    node = node[key]
                if isinstance(node, dict) != isinstance(path[-1], str):
                    continue  # an earlier change made a list a dict or back: JSON has no such body
                if rng.random() < 0.2:
                    node.pop(path[-1])
                else:
                    node[path[-1]] = copy.deepcopy(rng.choice(_FUZZ_VALUES))
            except (KeyError, IndexError, TypeError, AttributeError):
                pass  # an earlier change removed the path
        try:
            validate_chat_request(body)
            for profile in (DEEPSEEK, OPENAI):
                chat = translate_chat_request(body, PRO, profile)
                sent = prepare_request(chat.body, model=PRO, profile=profile, thinking=chat.thinking)
                dumps(sent)
                if profile is DEEPSEEK:
                    deepseek_accepts(sent)
            accepted += 1
        except RequestError as error:
            assert error.status in (400, 404) and error.message
    assert accepted > 300, "the mutations still reach the translator often enough to mean something"
