"""Responses over WebSocket on the real server (gunicorn + gevent, `deepseek-proxy serve`), with a WebSocket client
(tests/ws_client.py, on wsproto) and the fake DeepSeek: every event as one text frame, validated against the
openai SDK's models; previous_response_id on the same connection expands to the full history upstream; error
frames; the warm-up; a client that leaves closes the upstream; SIGTERM closes the socket with a close frame."""

from __future__ import annotations

import json
import signal
import time

import pytest
import requests

from tests.fakes.fake_deepseek import Reply
from tests.fakes.paced_http import PacedHTTPServer, sse_events, text_chunks
from tests.integration.strict_events import validate_event
from tests.integration.test_responses_api import MODEL
from tests.ws_client import Rejected, WsClient


def create(**fields) -> dict:
    return {"type": "response.create", "model": MODEL, **fields}


def user(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def text_of(events: list[dict]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def test_a_full_body_streams_every_event_as_one_text_frame(proxy, upstream):
    upstream.script(Reply.text("Hello there, friend", reasoning="The user greets me."))
    client = WsClient(proxy.port)
    try:
        assert client.extensions, "permessage-deflate offered and not accepted"
        client.send(create(input=[user("hi")], tools=[], store=False))
        events = client.response()
    finally:
        client.close()
    for event in events:
        validate_event(event)
    types = [e["type"] for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert "response.reasoning_text.delta" in types
    assert text_of(events) == "Hello there, friend"
    final = events[-1]["response"]
    assert final["id"].startswith("resp_") and final["status"] == "completed"
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert len(upstream.requests) == 1 and upstream.requests[0].body["stream"] is True


def test_previous_response_id_with_new_items_sends_the_full_history_upstream(proxy, upstream):
    upstream.script(Reply.tool_calls([("exec_command", {"cmd": "ls"})], reasoning="I should list the files."),
                    Reply.text("Two files.", reasoning="The listing shows two files."))
    tools = [{"type": "function", "name": "exec_command", "strict": False,
              "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}]
    client = WsClient(proxy.port)
    try:
        client.send(create(input=[user("what is here?")], tools=tools))
        first = client.response()
        assert first[-1]["type"] == "response.completed", first[-1]
        call = next(item for item in first[-1]["response"]["output"] if item["type"] == "function_call")
        sent_before = client.bytes_sent
        client.send(create(previous_response_id=first[-1]["response"]["id"], tools=tools,
                           input=[{"type": "function_call_output", "call_id": call["call_id"],
                                   "output": "a.txt\nb.txt"}]))
        second = client.response()
        second_frame = client.bytes_sent - sent_before
    finally:
        client.close()
    assert second[-1]["type"] == "response.completed", second[-1]
    assert second[-1]["response"]["previous_response_id"] == first[-1]["response"]["id"]
    assert text_of(second) == "Two files."
    assert len(upstream.requests) == 2
    messages = upstream.requests[1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[0]["content"] == "what is here?"
    # The first reply's reasoning and tool call went back upstream although the client did not resend them.
    assert messages[1]["reasoning_content"] == "I should list the files."
    assert messages[1]["tool_calls"][0]["id"] == call["call_id"]
    assert messages[2] == {"role": "tool", "tool_call_id": call["call_id"], "content": "a.txt\nb.txt"}
    assert second_frame < 600, second_frame  # only the new item travelled


def test_the_warm_up_answers_without_the_upstream_and_can_be_continued(proxy, upstream):
    upstream.script(Reply.text("ready", reasoning="Short."))
    developer = {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]}
    client = WsClient(proxy.port)
    try:
        client.send(create(input=[developer], tools=[], generate=False))
        warm = client.response()
        assert upstream.requests == []
        assert [e["type"] for e in warm] == ["response.created", "response.in_progress", "response.completed"]
        for event in warm:
            validate_event(event)
        assert warm[-1]["response"]["output"] == []
        client.send(create(previous_response_id=warm[-1]["response"]["id"], input=[user("go")], tools=[]))
        turn = client.response()
    finally:
        client.close()
    assert text_of(turn) == "ready"
    messages = upstream.requests[0].body["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [("system", "Be brief."), ("user", "go")]


def test_errors_are_error_frames_and_the_connection_stays_usable(proxy, upstream):
    upstream.script(Reply.error(429, "Rate limit reached", code="rate_limit_exceeded",
                                headers={"retry-after": "2"}),
                    Reply.text("fine", reasoning=None))
    client = WsClient(proxy.port)
    try:
        client.send("{not json")
        bad_json = client.recv_event()
        client.send({"type": "session.update"})
        unknown = client.recv_event()
        client.send(create(previous_response_id="resp_unknown", input=[user("hi")]))
        not_found = client.recv_event()
        client.send(create(input=[user("hi")], temperature=7))
        invalid = client.recv_event()
        client.send(create(model="no-such-model", input=[user("hi")]))
        no_model = client.recv_event()
        client.send(create(input=[user("hi")]))
        limited = client.recv_event()
        client.send(create(input=[user("hi again")]))
        works = client.response()
    finally:
        client.close()
    assert bad_json["type"] == "error" and bad_json["status"] == 400
    assert unknown["status"] == 400 and unknown["error"]["code"] == "unsupported_message_type"
    assert not_found["status"] == 404 and not_found["error"]["code"] == "previous_response_not_found"
    assert not_found["error"]["param"] == "previous_response_id"
    assert invalid["status"] == 400 and invalid["error"]["param"] == "temperature"
    assert no_model["status"] == 404 and no_model["error"]["code"] == "model_not_found"
    assert limited == {"type": "error", "status": 429, "headers": {"retry-after": "2"},
                       "error": {"type": "rate_limit_error", "code": "rate_limit_exceeded",
                                 "message": limited["error"]["message"], "param": None}}
    assert works[-1]["type"] == "response.completed" and text_of(works) == "fine"


def test_a_client_that_leaves_mid_stream_closes_the_upstream(proxy, upstream):
    for leave in ("close_frame", "drop"):
        upstream.reset()
        upstream.script(Reply.text(" ".join(["word"] * 200), reasoning=None, delay=0.05))
        client = WsClient(proxy.port)
        client.send(create(input=[user("talk")]))
        while client.recv_event()["type"] != "response.output_text.delta":
            pass
        left_at = time.monotonic()
        client.close() if leave == "close_frame" else client.drop()
        assert upstream.wait_for_disconnects(1, timeout=5), f"{leave}: the upstream stayed open"
        assert time.monotonic() - left_at < 2.0, leave


def test_a_client_that_leaves_while_the_upstream_is_silent_closes_it(start_proxy):
    chunks = text_chunks(["one", " two"])
    chunked_head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    first = sse_events(chunks[0], done=False)
    upstream = PacedHTTPServer([(0, chunked_head + b"%x\r\n%s\r\n" % (len(first), first)), (30, b"0\r\n\r\n")])
    try:
        # keep-alives far apart: only the look at the client's socket can notice it left
        server = start_proxy(upstream.base_url, "[server]\nkeepalive_interval = 60\n")
        for leave in ("close_frame", "drop"):
            upstream.client_closed.clear()
            client = WsClient(server.port)
            client.send(create(input=[user("hi")]))
            while client.recv_event()["type"] != "response.output_text.delta":
                pass
            client.close() if leave == "close_frame" else client.drop()
            left_at = time.monotonic()
            assert upstream.client_closed.wait(5), f"{leave}: the proxy kept its upstream open"
            assert upstream.client_closed_at - left_at < 1.5, leave
    finally:
        upstream.close()


def test_keepalive_frames_and_pings_while_the_upstream_is_silent(start_proxy, upstream):
    server = start_proxy(upstream.base_url, "[server]\nkeepalive_interval = 0.2\n")
    upstream.script(Reply.text("done", reasoning=None, ttft=1.2))
    client = WsClient(server.port)
    try:
        client.send(create(input=[user("hi")]))
        events = client.response()
    finally:
        client.close()
    types = [e["type"] for e in events]
    assert types[2:].count("response.in_progress") >= 3, types  # Codex's idle timer counts text frames
    assert client.pings >= 3
    assert types[-1] == "response.completed"


def test_an_open_websocket_outlives_the_idle_timeout(start_proxy, upstream):
    server = start_proxy(upstream.base_url, "[server]\nidle_timeout = 0.5\nbody_timeout = 0.5\n")
    upstream.script(Reply.text("still here", reasoning=None))
    client = WsClient(server.port)
    try:
        time.sleep(1.5)
        client.send(create(input=[user("hi")]))
        events = client.response()
    finally:
        client.close()
    assert text_of(events) == "still here"


def test_sigterm_closes_an_idle_websocket_with_a_close_frame(start_proxy, upstream):
    server = start_proxy(upstream.base_url, "[server]\nshutdown_grace_seconds = 10\n")
    client = WsClient(server.port)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert client.recv_text(timeout=8) is None
    assert client.close_code == 1001, (client.close_code, server.log())
    assert time.monotonic() - started < 5  # not the whole grace period
    assert server.process.wait(timeout=10) == 0


def test_sigterm_after_the_grace_period_fails_the_response_then_closes(start_proxy, upstream):
    server = start_proxy(upstream.base_url, "[server]\nshutdown_grace_seconds = 0.5\n")
    upstream.script(Reply.text("late", reasoning=None, ttft=30))
    client = WsClient(server.port)
    client.send(create(input=[user("hi")]))
    assert client.recv_event()["type"] == "response.created"
    server.process.send_signal(signal.SIGTERM)
    events = []
    while (event := client.recv_event(timeout=10)) is not None:
        events.append(event)
    assert events[-1]["type"] == "response.failed", events
    assert events[-1]["response"]["error"]["code"] == "server_error"  # Codex retries it
    assert client.close_code == 1001
    assert server.process.wait(timeout=10) == 0


def test_upgrade_refusals_are_http_errors(proxy, start_proxy, upstream):
    plain = requests.get(proxy.base_url + "/v1/responses", timeout=10)
    assert plain.status_code == 426 and plain.json()["error"]["code"] == "upgrade_required"
    keyed = start_proxy(upstream.base_url, '[server]\nclient_keys = ["sk-right"]\n')
    with pytest.raises(Rejected) as refused:
        WsClient(keyed.port, key="sk-wrong")
    assert refused.value.status == 401
    assert json.loads(refused.value.body)["error"]["code"] == "invalid_api_key"
    client = WsClient(keyed.port, key="sk-right", path="/responses", deflate=False)
    try:
        assert client.extensions == []
        upstream.script(Reply.text("ok", reasoning=None))
        client.send(create(input="hi"))
        assert client.response()[-1]["type"] == "response.completed"
    finally:
        client.close()


def test_a_malformed_deflate_offer_is_declined_not_an_error(proxy, upstream):
    upstream.script(Reply.text("plain", reasoning=None))
    client = WsClient(proxy.port, deflate=False,
                      extra_headers=[(b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits=abc")])
    try:
        assert client.extensions == []
        client.send(create(input="hi"))
        assert text_of(client.response()) == "plain"
    finally:
        client.close()


def test_a_response_stored_over_http_is_continued_over_websocket(proxy, upstream):
    """An id this connection did not produce comes from the response store: created with `store: true` over HTTP
    (another connection, as after a reconnect), continued over WebSocket with only the new item."""
    upstream.script(Reply.text("The answer is 4.", reasoning="Two and two."), Reply.text("Yes, 4.", reasoning="Same."))
    first = requests.post(proxy.base_url + "/v1/responses", timeout=30,
                          json={"model": MODEL, "input": "what is 2+2?", "store": True}).json()
    assert first["status"] == "completed", first
    client = WsClient(proxy.port)
    try:
        client.send(create(previous_response_id=first["id"], input=[user("sure?")], tools=[]))
        events = client.response()
        client.send(create(previous_response_id="resp_not_stored_anywhere", input=[user("again?")], tools=[]))
        missing = client.recv_event()
    finally:
        client.close()
    assert events[-1]["type"] == "response.completed", events[-1]
    assert text_of(events) == "Yes, 4."
    messages = upstream.requests[-1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == "what is 2+2?" and messages[1]["content"] == "The answer is 4."
    assert missing is not None and missing["type"] == "error" and missing["status"] == 404, missing
    assert missing["error"]["code"] == "previous_response_not_found"
