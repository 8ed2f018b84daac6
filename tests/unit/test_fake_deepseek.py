"""Tests of the fake DeepSeek upstream itself, driven over real HTTP with plain ``requests``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.fakes.fake_deepseek import (
    MAX_OUTPUT_TOKENS,
    REASONING_CONTENT_REQUIRED,
    FakeDeepSeek,
    Reply,
    reply_from_spec,
)

AUTH = {"Authorization": "Bearer sk-fake-deepseek"}
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake():
    with FakeDeepSeek() as server:
        yield server


def chat_body(**overrides):
    body = {"model": "deepseek-v4-pro", "messages": [{"role": "user", "content": "hi"}]}
    body.update(overrides)
    return body


def post(fake, body, *, path="/chat/completions", headers=AUTH, stream=False, session=requests):
    return session.post(fake.base_url + path, json=body, headers=headers, stream=stream, timeout=5)


def sse_lines(response) -> list[str]:
    """Every non-empty line of the stream (comments included), decoded."""
    return [line.decode() for line in response.iter_lines() if line]


def data_payloads(lines: list[str]) -> list[dict]:
    return [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: {")]


def deltas(payloads: list[dict]) -> list[dict]:
    return [p["choices"][0]["delta"] for p in payloads if p["choices"]]


def joined(payloads, key):
    return "".join(d.get(key) or "" for d in deltas(payloads))


def tool_call_history(*, reasoning="thought about it", answered=True):
    """A user turn, an assistant tool call and (optionally) its tool answer."""
    assistant = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}],
    }
    if reasoning is not None:
        assistant["reasoning_content"] = reasoning
    messages = [{"role": "user", "content": "list files"}, assistant]
    if answered:
        messages.append({"role": "tool", "tool_call_id": "call_1", "content": "a.txt"})
    return messages


FUNCTION_TOOL = {"type": "function", "function": {"name": "ls", "parameters": {"type": "object", "properties": {}}}}


# ---- non-streaming ------------------------------------------------------------------------------------------------


def test_non_stream_text_is_a_chat_completion(fake):
    response = post(fake, chat_body())
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "deepseek-v4-pro"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "ok"
    assert choice["message"]["reasoning_content"]  # thinking is on by default
    usage = body["usage"]
    assert usage["prompt_tokens"] == usage["prompt_cache_hit_tokens"] + usage["prompt_cache_miss_tokens"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_cache_hit_tokens"]
    assert 0 < usage["completion_tokens_details"]["reasoning_tokens"] < usage["completion_tokens"]


def test_non_stream_tool_calls(fake):
    fake.script(Reply.tool_calls([("exec_command", {"cmd": "echo hi"})], ids=["call_x"], content="Running it."))
    message = post(fake, chat_body()).json()["choices"][0]["message"]
    assert message["content"] == "Running it."
    [call] = message["tool_calls"]
    assert call["id"] == "call_x" and call["type"] == "function"
    assert call["function"] == {"name": "exec_command", "arguments": json.dumps({"cmd": "echo hi"})}


def test_thinking_disabled_omits_reasoning(fake):
    body = post(fake, chat_body(thinking={"type": "disabled"})).json()
    assert "reasoning_content" not in body["choices"][0]["message"]
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    legacy = post(fake, chat_body(model="deepseek-chat")).json()  # the non-thinking legacy alias
    assert "reasoning_content" not in legacy["choices"][0]["message"]


def test_thinking_default_can_be_off():
    with FakeDeepSeek(thinking_default=False) as server:
        assert "reasoning_content" not in post(server, chat_body()).json()["choices"][0]["message"]
        enabled = post(server, chat_body(thinking={"type": "enabled"})).json()
        assert enabled["choices"][0]["message"]["reasoning_content"]


# ---- streaming ----------------------------------------------------------------------------------------------------


def test_stream_follows_deepseek_shape(fake):
    fake.script(Reply.text("Hello there world", reasoning="Let me think"))
    response = post(fake, chat_body(stream=True, stream_options={"include_usage": True}), stream=True)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Transfer-Encoding"] == "chunked"
    lines = sse_lines(response)
    assert lines[-1] == "data: [DONE]"
    payloads = data_payloads(lines)
    assert all(p["object"] == "chat.completion.chunk" and p["system_fingerprint"] for p in payloads)
    assert len({p["id"] for p in payloads}) == 1

    first = payloads[0]["choices"][0]
    assert first["delta"] == {"role": "assistant", "content": None, "reasoning_content": ""}
    assert first["logprobs"] is None and first["finish_reason"] is None
    assert joined(payloads, "reasoning_content") == "Let me think"
    assert joined(payloads, "content") == "Hello there world"
    reasoning_at = max(i for i, d in enumerate(deltas(payloads)) if d.get("reasoning_content"))
    content_at = min(i for i, d in enumerate(deltas(payloads)) if d.get("content"))
    assert reasoning_at < content_at

    finish, usage_chunk = payloads[-2], payloads[-1]
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["prompt_tokens"] == usage["prompt_cache_hit_tokens"] + usage["prompt_cache_miss_tokens"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] > 0


def test_stream_without_include_usage_has_no_usage_chunk(fake):
    payloads = data_payloads(sse_lines(post(fake, chat_body(stream=True), stream=True)))
    assert all(p["choices"] and "usage" not in p for p in payloads)
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"


def test_usage_override_and_on_finish_style(fake):
    fake.script(Reply.text("hi", usage={"prompt_tokens": 7777}, usage_style="on_finish"))
    payloads = data_payloads(sse_lines(post(fake, chat_body(stream=True), stream=True)))
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"
    assert payloads[-1]["usage"]["prompt_tokens"] == 7777


def test_stream_without_thinking_has_no_reasoning(fake):
    payloads = data_payloads(sse_lines(post(fake, chat_body(stream=True, model="deepseek-chat"), stream=True)))
    assert deltas(payloads)[0] == {"role": "assistant", "content": ""}
    assert all("reasoning_content" not in d for d in deltas(payloads))
    assert joined(payloads, "content") == "ok"


def test_chunks_control_content_splitting(fake):
    fake.script(Reply.text("abcdef", chunks=["ab", "cd", "ef"], reasoning=None))
    payloads = data_payloads(sse_lines(post(fake, chat_body(stream=True), stream=True)))
    assert [d["content"] for d in deltas(payloads) if d.get("content")] == ["ab", "cd", "ef"]
    with pytest.raises(ValueError):
        Reply.text("abc", chunks=["a"])


def test_stream_tool_call_fragments(fake):
    arguments = {"cmd": "echo hello world", "workdir": "/tmp"}
    fake.script(Reply.tool_calls([("exec_command", arguments), ("noop", "{}")], split_arguments=3))
    payloads = data_payloads(sse_lines(post(fake, chat_body(stream=True), stream=True)))
    fragments = [tc for d in deltas(payloads) for tc in d.get("tool_calls") or []]

    first_of = {}
    for fragment in fragments:
        first_of.setdefault(fragment["index"], fragment)
    for index, name in ((0, "exec_command"), (1, "noop")):
        head = first_of[index]
        assert head["id"].startswith(f"call_{index:02d}_") and head["type"] == "function"
        assert head["function"]["name"] == name
    later = [f for f in fragments if f is not first_of[f["index"]]]
    assert later and all(set(f) == {"index", "function"} and set(f["function"]) == {"arguments"} for f in later)

    by_call = ["".join(f["function"]["arguments"] for f in fragments if f["index"] == i) for i in (0, 1)]
    assert json.loads(by_call[0]) == arguments and by_call[1] == "{}"
    assert len([f for f in fragments if f["index"] == 0]) == 3
    assert payloads[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_keepalives_come_first(fake):
    fake.script(Reply.text("x", keepalives=3))
    lines = sse_lines(post(fake, chat_body(stream=True), stream=True))
    assert lines[:3] == [": keep-alive"] * 3
    assert lines[3].startswith("data: {")


def test_stream_is_incremental(fake):
    """The first event must reach the client before the delayed ones are produced."""
    fake.script(Reply.text("a b c d", reasoning=None, delay=0.15))
    started = time.monotonic()
    response = post(fake, chat_body(stream=True), stream=True)
    lines = response.iter_lines()
    first = next(line for line in lines if line)
    first_at = time.monotonic() - started
    rest = [line for line in lines if line]
    total = time.monotonic() - started
    assert first.startswith(b"data: {")
    assert rest[-1] == b"data: [DONE]"
    assert first_at < 0.12, first_at
    assert total >= 0.15 * 5  # 4 content chunks, the finish chunk and [DONE] each wait `delay`


def test_ttft_delays_the_first_data_event(fake):
    fake.script(Reply.text("x", keepalives=1, ttft=0.3))
    started = time.monotonic()
    lines = post(fake, chat_body(stream=True), stream=True).iter_lines()
    assert next(line for line in lines if line) == b": keep-alive"
    keepalive_at = time.monotonic() - started
    next(line for line in lines if line)
    assert keepalive_at < 0.25 and time.monotonic() - started >= 0.3


def test_raw_sse_is_sent_verbatim(fake):
    fake.script(Reply.raw_sse(["data: {not json", "", "data: [DONE]", ""]))
    response = post(fake, chat_body(stream=True), stream=True)
    assert response.raw.read() == b"data: {not json\n\ndata: [DONE]\n\n"


def test_hang_up_mid_stream(fake):
    fake.script(Reply.hang_up_after(2, Reply.text("one two three four", reasoning=None)))
    response = post(fake, chat_body(stream=True), stream=True)
    received = []
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for line in response.iter_lines():
            if line:
                received.append(line)
    assert len(received) == 2 and b"[DONE]" not in b"".join(received)


def test_hang_up_on_non_stream_request(fake):
    fake.script(Reply.hang_up_after(0, Reply.text("x")))
    with pytest.raises(requests.exceptions.ConnectionError):
        post(fake, chat_body())


def test_client_disconnect_is_counted(fake):
    fake.script(Reply.text("a b c d e f g h", reasoning=None, delay=0.05))
    response = post(fake, chat_body(stream=True), stream=True)
    next(line for line in response.iter_lines() if line)
    response.close()
    assert fake.wait_for_disconnects(1, timeout=3)
    assert fake.disconnects == 1 and fake.requests[-1].client_disconnected


def test_stop_interrupts_a_waiting_stream():
    server = FakeDeepSeek().start()
    server.script(Reply.text("x", ttft=30))
    response = post(server, chat_body(stream=True), stream=True)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        list(response.iter_lines())


# ---- scripting ----------------------------------------------------------------------------------------------------


def test_replies_are_fifo_then_default(fake):
    fake.script(Reply.text("first"), Reply.text("second"))
    contents = [post(fake, chat_body()).json()["choices"][0]["message"]["content"] for _ in range(3)]
    assert contents == ["first", "second", "ok"]
    fake.default_reply = Reply.text("changed default")
    assert post(fake, chat_body()).json()["choices"][0]["message"]["content"] == "changed default"


def test_callable_reply_sees_the_body(fake):
    fake.script(lambda body: Reply.text(f"you said {body['messages'][-1]['content']}"))
    assert post(fake, chat_body()).json()["choices"][0]["message"]["content"] == "you said hi"


def test_a_crashing_callable_reply_gives_500(fake):
    fake.script(lambda body: body["no such key"])
    response = post(fake, chat_body())
    assert response.status_code == 500 and "KeyError" in response.json()["error"]["message"]
    assert fake.rejections == ["fake_internal_error"]


def test_error_reply(fake):
    fake.script(Reply.error(429, "Rate Limit Reached", headers={"retry-after": "1"}))
    response = post(fake, chat_body(stream=True))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "error": {"message": "Rate Limit Reached", "type": "invalid_request_error", "param": None,
                  "code": "invalid_request_error"}
    }
    assert fake.rejections == []  # a scripted error is not a rule violation


def test_rejected_request_does_not_consume_a_scripted_reply(fake):
    fake.script(Reply.text("kept"))
    assert post(fake, chat_body(model="gpt-4o")).status_code == 400
    assert post(fake, chat_body()).json()["choices"][0]["message"]["content"] == "kept"


def test_prefix_cache_reports_hits(fake):
    history = [{"role": "system", "content": "You are a coding agent. " * 200}, {"role": "user", "content": "one"}]
    first = post(fake, chat_body(messages=history)).json()["usage"]
    second = post(fake, chat_body(messages=history + [{"role": "assistant", "content": "ok"},
                                                      {"role": "user", "content": "two"}])).json()["usage"]
    assert first["prompt_cache_hit_tokens"] == 0
    assert second["prompt_cache_hit_tokens"] > 0 and second["prompt_cache_hit_tokens"] % 64 == 0
    assert second["prompt_tokens"] == second["prompt_cache_hit_tokens"] + second["prompt_cache_miss_tokens"]


def test_reply_from_spec_shorthands():
    custom = reply_from_spec({"kind": "custom", "name": "apply_patch", "input": "*** Begin Patch", "id": "call_p"})
    assert [(c.id, c.name, json.loads(c.arguments)) for c in custom.calls] == [
        ("call_p", "apply_patch", {"input": "*** Begin Patch"})
    ]
    hang = reply_from_spec({"kind": "hang_up", "after": 3, "reply": {"kind": "text", "text": "x", "delay": 0.1}})
    assert hang.hang_up_after_chunks == 3 and hang.delay == 0.1
    assert reply_from_spec({"kind": "error", "status": 503, "message": "busy"}).status == 503
    with pytest.raises(ValueError):
        reply_from_spec({"kind": "nope"})
    with pytest.raises(TypeError):
        reply_from_spec({"kind": "text", "text": "x", "typo_option": 1})


# ---- recording and plumbing ---------------------------------------------------------------------------------------


def test_every_request_is_recorded(fake):
    post(fake, chat_body(extra_unknown_key=1), path="/v1/chat/completions", headers={**AUTH, "X-Custom": "yes"})
    requests.post(fake.base_url + "/chat/completions", data=b"{broken", headers=AUTH, timeout=5)
    first, second = fake.requests
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.headers["x-custom"] == "yes" and first.headers["authorization"] == AUTH["Authorization"]
    assert first.body["extra_unknown_key"] == 1 and json.loads(first.raw) == first.body
    assert first.rejection is None
    assert second.body is None and second.raw == b"{broken" and second.rejection == "invalid_json"
    assert fake.chat_requests == [first, second]


def test_keep_alive_connections_are_reused(fake):
    with requests.Session() as session:
        for _ in range(2):
            post(fake, chat_body(), session=session).json()
        list(post(fake, chat_body(stream=True), stream=True, session=session).iter_lines())
        post(fake, chat_body(), session=session).json()
    assert len({r.client_port for r in fake.requests}) == 1


def test_models_endpoint(fake):
    for path in ("/models", "/v1/models"):
        listed = requests.get(fake.base_url + path, headers=AUTH, timeout=5).json()
        assert {m["id"] for m in listed["data"]} >= {"deepseek-v4-pro", "deepseek-v4-flash"}
    assert requests.get(fake.base_url + "/models", timeout=5).status_code == 401


def test_unknown_path_is_404(fake):
    assert post(fake, chat_body(), path="/responses").status_code == 404
    assert fake.rejections == ["not_found"]


# ---- DeepSeek's rules ---------------------------------------------------------------------------------------------

REJECTED = {
    "model_not_exist": (chat_body(model="gpt-5"), "Model Not Exist"),
    "invalid_role": (
        chat_body(messages=[{"role": "developer", "content": "be terse"}, {"role": "user", "content": "hi"}]),
        "messages[0].role: unknown variant `developer`, expected one of `system`, `user`, `assistant`, `tool`",
    ),
    "missing_tool_response": (
        chat_body(messages=tool_call_history(answered=False) + [{"role": "user", "content": "and?"}]),
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
        "'tool_call_id'. (insufficient tool messages following tool_calls message)",
    ),
    "orphan_tool_message": (
        chat_body(messages=[{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "x", "content": "?"}]),
        "Messages with role 'tool' must be a response to a preceding message with 'tool_calls'",
    ),
    "missing_reasoning_content": (chat_body(messages=tool_call_history(reasoning=None)), REASONING_CONTENT_REQUIRED),
    "tool_type": (
        chat_body(tools=[FUNCTION_TOOL, {"type": "custom", "name": "apply_patch"}]),
        "tools[1].type: unknown variant `custom`, expected `function`",
    ),
    "empty_tools": (chat_body(tools=[]), "Invalid 'tools': empty array."),
    "strict_not_beta": (
        chat_body(tools=[{"type": "function", "function": {**FUNCTION_TOOL["function"], "strict": False}}]),
        "strict",
    ),
    "content_null": (chat_body(messages=[{"role": "user", "content": None}]), "invalid type: null"),
    "content_parts": (
        chat_body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
        "unknown variant `image_url`, expected `text`",
    ),
    "assistant_empty": (
        chat_body(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": None},
                            {"role": "user", "content": "b"}]),
        "Invalid assistant message: content or tool_calls must be set",
    ),
    "json_object_without_json": (
        chat_body(response_format={"type": "json_object"}),
        "Prompt must contain the word 'json' in some form to use 'response_format' of type 'json_object'.",
    ),
    "response_format": (
        chat_body(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
        "This response_format type is unavailable now",
    ),
    "max_tokens": (
        chat_body(max_tokens=MAX_OUTPUT_TOKENS + 1),
        f"Invalid max_tokens value, the valid range of max_tokens is [1, {MAX_OUTPUT_TOKENS}]",
    ),
    "missing_messages": ({"model": "deepseek-v4-pro"}, "missing field `messages`"),
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("reason", sorted(REJECTED))
def test_rule_violations_are_rejected(fake, reason, stream):
    body, expected_text = REJECTED[reason]
    response = post(fake, {**body, "stream": stream})
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"  # errors are never SSE
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error["code"] == "invalid_request_error"
    assert expected_text in error["message"]
    assert fake.rejections == [reason]
    assert fake.requests[-1].rejection == reason and fake.requests[-1].error_message == error["message"]


def test_reasoning_content_message_is_exact(fake):
    response = post(fake, chat_body(messages=tool_call_history(reasoning=None)))
    expected = "The `reasoning_content` in the thinking mode must be passed back to the API."
    assert response.json()["error"]["message"] == expected


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(chat_body(messages=tool_call_history() + [{"role": "user", "content": "ok"}]), id="answered"),
        pytest.param(chat_body(messages=tool_call_history(reasoning="")), id="empty-reasoning-is-passed-back"),
        pytest.param(chat_body(messages=tool_call_history(reasoning=None), thinking={"type": "disabled"}),
                     id="no-reasoning-without-thinking"),
        pytest.param(chat_body(messages=tool_call_history(reasoning=None), model="deepseek-chat"), id="legacy-chat"),
        pytest.param(chat_body(response_format={"type": "json_object"},
                               messages=[{"role": "system", "content": "Reply in JSON."},
                                         {"role": "user", "content": "hi"}]), id="json-mentioned"),
        pytest.param(chat_body(max_tokens=MAX_OUTPUT_TOKENS), id="max-tokens-at-limit"),
        pytest.param(chat_body(tools=[FUNCTION_TOOL], tool_choice="auto", parallel_tool_calls=True,
                               prompt_cache_key="k", store=False), id="unknown-keys-ignored"),
        pytest.param(chat_body(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
                     id="text-parts"),
    ],
)
def test_valid_requests_are_accepted(fake, body):
    response = post(fake, body)
    assert response.status_code == 200, response.text
    assert fake.rejections == []


def test_strict_is_allowed_on_the_beta_path(fake):
    tools = [{"type": "function", "function": {**FUNCTION_TOOL["function"], "strict": True}}]
    assert post(fake, chat_body(tools=tools), path="/beta/chat/completions").status_code == 200


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer sk-wrong-key"}, {"Authorization": "sk-fake-deepseek"}]
)
def test_authentication(fake, headers):
    response = post(fake, chat_body(), headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert error["message"].startswith("Authentication Fails, Your api key: ****")
    assert fake.rejections == ["auth"]


def test_malformed_json(fake):
    response = requests.post(fake.base_url + "/chat/completions", data=b'{"model": ', headers=AUTH, timeout=5)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("Failed to parse the request body as JSON: ")


def test_deserialize_status_can_be_switched_to_422(fake):
    fake.rules.deserialize_status = 422
    assert post(fake, chat_body(messages=[{"role": "developer", "content": "x"}])).status_code == 422


# ---- command line -------------------------------------------------------------------------------------------------


def test_cli_serves_a_script(tmp_path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps([
        {"kind": "tool_calls", "calls": [["exec_command", {"cmd": "echo hi"}]], "reasoning": "run it"},
        {"kind": "custom", "name": "apply_patch", "input": "*** Begin Patch\n*** End Patch"},
        {"kind": "text", "text": "Done."},
    ]))
    record = tmp_path / "requests.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.fake_deepseek", "--port", "0", "--script", str(script),
         "--record", str(record)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("LISTENING http://127.0.0.1:"), line
        base_url = line.split(" ", 1)[1]

        def ask():
            response = requests.post(base_url + "/chat/completions", json=chat_body(), headers=AUTH, timeout=5)
            return response.json()["choices"][0]["message"]

        exec_call = ask()["tool_calls"][0]["function"]
        assert (exec_call["name"], json.loads(exec_call["arguments"])) == ("exec_command", {"cmd": "echo hi"})
        patch_call = ask()["tool_calls"][0]["function"]
        assert json.loads(patch_call["arguments"]) == {"input": "*** Begin Patch\n*** End Patch"}
        assert ask()["content"] == "Done."
        assert ask()["content"] == "ok"  # script exhausted: the default reply
        # A request is recorded once its reply is finished, which is after the client has read it: wait for line 4.
        deadline = time.monotonic() + 5
        while (not record.exists() or record.read_text().count("\n") < 4) and time.monotonic() < deadline:
            time.sleep(0.01)
        recorded = [json.loads(line) for line in record.read_text().splitlines()]
        assert len(recorded) == 4 and recorded[0]["body"]["model"] == "deepseek-v4-pro"
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0
