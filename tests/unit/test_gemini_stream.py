"""Chat Completions chunks → Gemini GenerateContentResponse objects (issue 13's stream rules).

Every object is validated against the google-genai SDK's own `types.GenerateContentResponse` (pydantic, unknown
fields forbidden), and whole streams are read by the SDK's real client through an in-process httpx2 MockTransport
(the SDK's own SSE parser and its mid-stream error detection; no socket). The captured responses that Gemini CLI
accepted (tests/fixtures/gemini-cli/response_accepted_*) give the shape to match.
"""

from __future__ import annotations

import base64
import json

import httpx2
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from deepseek_proxy.config import default_models
from deepseek_proxy.translate.gemini_request import (
    decode_signature,
    translate_gemini_request,
)
from deepseek_proxy.translate.gemini_stream import GeminiStream, encode_sse
from deepseek_proxy.translate.messages_request import reasoning_key
from deepseek_proxy.translate.reasoning import ReasoningCodec
from deepseek_proxy.translate.tools import ToolMap, ToolOrigin
from deepseek_proxy.upstream.profiles import profile_named
from tests.conftest import GEMINI_FIXTURES

CODEC = ReasoningCodec(b"unit-test-secret")
MODEL = "gemini-3.8-flash"


def delta(finish=None, **fields) -> dict:
    return {"choices": [{"index": 0, "delta": fields, "finish_reason": finish}]}


def usage(prompt=100, completion=30, reasoning=10, cached=64) -> dict:
    return {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                     "total_tokens": prompt + completion,
                                     "prompt_tokens_details": {"cached_tokens": cached},
                                     "prompt_cache_hit_tokens": cached, "prompt_cache_miss_tokens": prompt - cached,
                                     "completion_tokens_details": {"reasoning_tokens": reasoning}}}


def tool_delta(index, *, call_id=None, name=None, arguments="") -> dict:
    call: dict = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        call["id"] = call_id
        call["type"] = "function"
        call["function"]["name"] = name
    return delta(tool_calls=[call])


def make_stream(tool_map=None, **kwargs) -> GeminiStream:
    kwargs.setdefault("include_thoughts", True)
    return GeminiStream(model=MODEL, tool_map=tool_map or ToolMap(), codec=CODEC, response_id="resp-1", **kwargs)


def run(stream: GeminiStream, chunks) -> list[dict]:
    out = stream.start()
    for chunk in chunks:
        out += stream.feed(chunk)
    return out + stream.finish()


def validate(objects) -> list[types.GenerateContentResponse]:
    return [types.GenerateContentResponse.model_validate(obj) for obj in objects]


def parts(objects) -> list[dict]:
    return [p for obj in objects for c in obj.get("candidates", []) for p in c.get("content", {}).get("parts", [])]


def sdk_client(handler) -> genai.Client:
    """The real google-genai client, its HTTP answered in-process by `handler` (no network)."""
    transport = httpx2.MockTransport(handler)
    return genai.Client(api_key="test-key", http_options=types.HttpOptions(
        base_url="http://127.0.0.1:9", httpx_client=httpx2.Client(transport=transport)))


def sse_handler(body: bytes):
    def handler(request):
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    return handler


TEXT_REPLY = [delta(reasoning_content=""), delta(reasoning_content="The user "), delta(reasoning_content="greets."),
              delta(content="Hel"), delta(content="lo "), delta(content="there."), delta("stop"), usage()]
TOOL_MAP = ToolMap({"run_shell_command": ToolOrigin("function", "run_shell_command"),
                    "mcp_x_tool_1234abcd": ToolOrigin("function", "mcp.x/tool")})
PARALLEL_REPLY = [
    delta(reasoning_content="Two calls."),
    tool_delta(0, call_id="call_00_a", name="run_shell_command"),
    tool_delta(0, arguments='{"command": '), tool_delta(0, arguments='"cat out.txt"}'),
    tool_delta(1, call_id="call_01_b", name="mcp_x_tool_1234abcd", arguments='{"path":'),
    tool_delta(1, arguments=' "/tmp/out.txt"}'),
    delta("tool_calls"), usage(),
]


# --------------------------------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------------------------------


def test_accepted_fixtures_validate_against_the_sdk():
    """The checker itself: what Gemini CLI accepted validates, and an unknown field does not."""
    for path in GEMINI_FIXTURES.glob("response_accepted_*.sse"):
        lines = [line[len("data: "):] for line in path.read_text().splitlines() if line.startswith("data: ")]
        assert lines and validate(json.loads(line) for line in lines)
    validate([json.loads((GEMINI_FIXTURES / "response_accepted_router_generateContent.json").read_text())])
    with pytest.raises(ValueError):
        validate([{"candidates": [], "notAField": 1}])


def test_text_reply_with_thoughts():
    objects = run(make_stream(), TEXT_REPLY)
    validate(objects)
    assert all(set(obj) >= {"candidates", "modelVersion", "responseId"} for obj in objects)
    assert {obj["modelVersion"] for obj in objects} == {MODEL}
    assert {obj["responseId"] for obj in objects} == {"resp-1"}
    streamed = parts(objects)
    thoughts = [p["text"] for p in streamed if p.get("thought")]
    texts = [p for p in streamed if not p.get("thought")]
    assert "".join(thoughts) == "The user greets."
    assert "".join(p["text"] for p in texts) == "Hello there."
    # The reasoning rides on the first non-thought part only.
    assert decode_signature(CODEC, texts[0]["thoughtSignature"]) == "The user greets."
    assert all("thoughtSignature" not in p for p in texts[1:])
    last = objects[-1]
    assert last["candidates"][0]["finishReason"] == "STOP"
    assert last["candidates"][0]["content"]["parts"], "the last chunk carries content, like the accepted ones"
    assert all("finishReason" not in obj["candidates"][0] for obj in objects[:-1])
    assert last["usageMetadata"] == {"promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 10,
                                     "cachedContentTokenCount": 64, "totalTokenCount": 130}


def test_thoughts_are_not_streamed_without_include_thoughts_but_still_signed():
    objects = run(make_stream(include_thoughts=False), TEXT_REPLY)
    validate(objects)
    streamed = parts(objects)
    assert not any(p.get("thought") for p in streamed)
    assert decode_signature(CODEC, streamed[0]["thoughtSignature"]) == "The user greets."


def test_reasoning_is_dropped_when_the_request_did_not_think():
    objects = run(make_stream(thinking=False), TEXT_REPLY)
    assert all("thoughtSignature" not in p and not p.get("thought") for p in parts(objects))


def test_parallel_calls_each_their_own_part_with_complete_args():
    stream = make_stream(TOOL_MAP)
    objects = run(stream, PARALLEL_REPLY)
    validate(objects)
    calls = [p for p in parts(objects) if "functionCall" in p]
    assert [p["functionCall"] for p in calls] == [
        {"name": "run_shell_command", "args": {"command": "cat out.txt"}, "id": "call_00_a"},
        {"name": "mcp.x/tool", "args": {"path": "/tmp/out.txt"}, "id": "call_01_b"}]
    assert decode_signature(CODEC, calls[0]["thoughtSignature"]) == "Two calls."
    assert "thoughtSignature" not in calls[1]
    # The first call goes out as soon as the second starts, not at the end.
    first_call_object = next(i for i, obj in enumerate(objects) if "functionCall" in json.dumps(obj))
    assert first_call_object < len(objects) - 1
    assert objects[-1]["candidates"][0]["finishReason"] == "STOP"
    assert stream.reasoning_entries() == [(reasoning_key([
        ("call_00_a", "run_shell_command", {"command": "cat out.txt"}),
        ("call_01_b", "mcp.x/tool", {"path": "/tmp/out.txt"})]), "Two calls.")]


def test_accepted_tool_turn_shape():
    """Gemini CLI accepted a thought chunk, then a chunk with the signed functionCall, finishReason and usage."""
    accepted = [json.loads(line[len("data: "):]) for line in
                (GEMINI_FIXTURES / "response_accepted_turn1_thought_functionCall.sse").read_text().splitlines()
                if line.startswith("data: ")]
    objects = run(make_stream(TOOL_MAP), [
        delta(reasoning_content="use the shell"),
        tool_delta(0, call_id="call_0", name="run_shell_command", arguments='{"command": "echo hi > out.txt"}'),
        delta("tool_calls"), usage()])
    assert len(objects) == len(accepted)
    for ours, theirs in zip(objects, accepted, strict=True):
        assert set(ours) == set(theirs)
        assert set(ours["candidates"][0]) == set(theirs["candidates"][0])
        assert [set(p) for p in ours["candidates"][0]["content"]["parts"]] == [
            set(p) for p in theirs["candidates"][0]["content"]["parts"]]


@pytest.mark.parametrize(("finish", "expected"), [("length", "MAX_TOKENS"), ("content_filter", "SAFETY"),
                                                  ("stop", "STOP"), (None, "STOP")])
def test_finish_reasons(finish, expected):
    objects = run(make_stream(), [delta(content="x"), delta(finish)])
    assert objects[-1]["candidates"][0]["finishReason"] == expected


def test_arguments_that_do_not_parse_end_with_malformed_function_call():
    stream = make_stream(TOOL_MAP)
    objects = run(stream, [tool_delta(0, call_id="c0", name="run_shell_command", arguments='{"command": "ls"'),
                           delta("tool_calls")])
    validate(objects)
    assert not [p for p in parts(objects) if "functionCall" in p]
    candidate = objects[-1]["candidates"][0]
    assert candidate["finishReason"] == "MALFORMED_FUNCTION_CALL"
    assert "run_shell_command" in candidate["finishMessage"]
    assert stream.reasoning_entries() == []


def test_a_reply_that_is_only_reasoning_still_carries_its_signature():
    objects = run(make_stream(include_thoughts=False), [delta(reasoning_content="hmm"), delta("length")])
    validate(objects)
    signed = [p for p in parts(objects) if "thoughtSignature" in p]
    assert len(signed) == 1 and decode_signature(CODEC, signed[0]["thoughtSignature"]) == "hmm"
    assert objects[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"


def test_usage_estimated_when_the_upstream_reports_none():
    objects = run(make_stream(input_tokens=42), [delta(content="hello world"), delta("stop")])
    metadata = objects[-1]["usageMetadata"]
    assert metadata["promptTokenCount"] == 42 and metadata["candidatesTokenCount"] > 0
    assert metadata["totalTokenCount"] == 42 + metadata["candidatesTokenCount"]


def test_the_input_estimate_may_be_a_function_called_only_when_the_upstream_reports_no_usage():
    counted: list[int] = []

    def count() -> int:
        counted.append(42)
        return 42

    objects = run(make_stream(input_tokens=count), [delta(content="hello"), delta("stop"), usage()])
    assert objects[-1]["usageMetadata"]["promptTokenCount"] == 100 and counted == []  # the upstream's figure
    objects = run(make_stream(input_tokens=count), [delta(content="hello"), delta("stop")])
    assert objects[-1]["usageMetadata"]["promptTokenCount"] == 42 and counted == [42]


def test_insufficient_system_resource_is_an_unavailable_error_not_a_cut_answer():
    stream = make_stream()
    objects = run(stream, [delta(content="partial"), delta("insufficient_system_resource")])
    assert objects[-1]["error"]["status"] == "UNAVAILABLE" and objects[-1]["error"]["code"] == 503
    assert stream.response is None


# --------------------------------------------------------------------------------------------------------------------
# The complete response (generateContent) and replay
# --------------------------------------------------------------------------------------------------------------------


def test_replay_of_a_completion_gives_the_complete_response():
    completion = {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "tool_calls",
                  "message": {"role": "assistant", "content": "Checking.", "reasoning_content": "Need the file.",
                              "tool_calls": [{"id": "call_0", "type": "function", "function": {
                                  "name": "run_shell_command", "arguments": '{"command":"cat a"}'}}]}}],
                  "usage": usage()["usage"]}
    stream = make_stream(TOOL_MAP)
    objects = stream.replay(completion)
    validate(objects)
    response = stream.response
    validate([response])
    assert response["candidates"][0]["content"]["parts"] == [
        {"text": "Need the file.", "thought": True},
        {"text": "Checking.", "thoughtSignature": response["candidates"][0]["content"]["parts"][1]["thoughtSignature"]},
        {"functionCall": {"name": "run_shell_command", "args": {"command": "cat a"}, "id": "call_0"}}]
    assert decode_signature(CODEC, response["candidates"][0]["content"]["parts"][1]["thoughtSignature"]) == (
        "Need the file.")
    assert response["candidates"][0]["finishReason"] == "STOP"
    assert response["usageMetadata"]["thoughtsTokenCount"] == 10


def test_router_reply_matches_the_accepted_shape():
    accepted = json.loads((GEMINI_FIXTURES / "response_accepted_router_generateContent.json").read_text())
    stream = make_stream(thinking=False, include_thoughts=False)
    stream.replay({"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": '{"complexity_reasoning": "x", "complexity_score": 1}'}}],
        "usage": usage(reasoning=0, cached=0)["usage"]})
    assert set(stream.response) == set(accepted)
    assert set(stream.response["candidates"][0]) == set(accepted["candidates"][0])
    assert set(stream.response["usageMetadata"]) == {"promptTokenCount", "candidatesTokenCount", "totalTokenCount"}


# --------------------------------------------------------------------------------------------------------------------
# Through the real google-genai client
# --------------------------------------------------------------------------------------------------------------------


def test_the_sdk_reads_the_stream_keepalives_included():
    stream = make_stream(TOOL_MAP)
    objects = stream.start() + stream.keepalive()
    for chunk in PARALLEL_REPLY[:3]:
        objects += stream.feed(chunk) + stream.keepalive()
    for chunk in PARALLEL_REPLY[3:]:
        objects += stream.feed(chunk)
    objects += stream.finish() + stream.keepalive()  # nothing after the end
    assert stream.keepalive() == []
    client = sdk_client(sse_handler(encode_sse(objects)))
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="go"))
    calls = [c for chunk in chunks for c in (chunk.function_calls or [])]
    assert [(c.name, c.args, c.id) for c in calls] == [("run_shell_command", {"command": "cat out.txt"}, "call_00_a"),
                                                       ("mcp.x/tool", {"path": "/tmp/out.txt"}, "call_01_b")]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.cached_content_token_count == 64
    signature = next(p.thought_signature for ch in chunks if ch.candidates for p in ch.candidates[0].content.parts
                     if p.thought_signature)
    # The SDK holds the signature as bytes; re-encoded the way it sends it back, it is still ours.
    assert decode_signature(CODEC, base64.b64encode(signature).decode()) == "Two calls."


def test_a_mid_stream_failure_raises_in_the_sdk_after_the_content_so_far():
    stream = make_stream()
    objects = stream.feed(delta(content="The answer is")) + stream.feed(delta(content=" forty")) + stream.fail(
        "overloaded", "The upstream connection broke.")
    body = encode_sse(objects)
    assert body.endswith(b"\n") and b"data: {\"error\"" not in body  # bare, as the SDKs recognise it
    client = sdk_client(sse_handler(body))
    seen = []
    with pytest.raises(genai_errors.ServerError) as error:
        for chunk in client.models.generate_content_stream(model=MODEL, contents="q"):
            seen.append(chunk.text)
    assert seen == ["The answer is"]
    assert error.value.code == 503 and error.value.status == "UNAVAILABLE"
    assert error.value.message == "The upstream connection broke."


def test_the_sdk_chat_sends_our_signature_back_and_it_restores_the_reasoning():
    """A two-turn chat with the SDK: the second request it sends translates with the first turn's reasoning."""
    sent: list[dict] = []

    def handler(request):
        sent.append(json.loads(request.content))
        stream = make_stream(include_thoughts=False)  # so only the signature can bring the reasoning back
        stream.replay({"choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "Hi!", "reasoning_content": f"turn {len(sent)} reasoning"}}]})
        return httpx2.Response(200, json=stream.response)

    chat = sdk_client(handler).chats.create(model=MODEL)
    assert chat.send_message("hello").text == "Hi!"
    chat.send_message("again")
    translated = translate_gemini_request(sent[-1], default_models()["deepseek-v4-pro"], profile_named("deepseek"),
                                          CODEC, repair="off")
    assistant = [m for m in translated.body["messages"] if m["role"] == "assistant"]
    assert assistant == [{"role": "assistant", "content": "Hi!", "reasoning_content": "turn 1 reasoning"}]
