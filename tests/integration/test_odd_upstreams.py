"""Odd but legal OpenAI-compatible upstreams, through the real server: each reply is written byte for byte by a raw
socket server on loopback (what the fake DeepSeek cannot send on purpose), and the proxy's answer is checked."""

from __future__ import annotations

import email.utils
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable

import pytest
import requests

from tests.fakes.loopback_http import LoopbackHTTPServer
from tests.sse_frames import sse

MODEL = "deepseek-v4-pro"


class RawUpstream(LoopbackHTTPServer):
    """Answers each request with the bytes `reply()` yields, written piece by piece, then closes the connection.
    Counts the bytes it managed to send and notes when the client hung up first."""

    def __init__(self, reply: Callable[[], Iterable[bytes]]):
        self.reply = reply
        self.sent = 0
        self.client_hung_up = threading.Event()
        self.answered = threading.Event()
        super().__init__()

    def _reply(self, connection: socket.socket) -> None:
        try:
            for piece in self.reply():
                connection.sendall(piece)
                self.sent += len(piece)
        except OSError:
            self.client_hung_up.set()
        self.answered.set()


@pytest.fixture()
def raw_upstream(start_proxy):
    made: list[RawUpstream] = []

    def make(reply: Callable[[], Iterable[bytes]]):
        upstream = RawUpstream(reply)
        made.append(upstream)
        return upstream, start_proxy(upstream.base_url)

    yield make
    for upstream in made:
        upstream.close()


def sse_reply(body: bytes) -> Callable[[], Iterable[bytes]]:
    """A close-delimited event stream (no length, no chunking): the body ends when the connection does."""
    return lambda: [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n", body]


def data(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload).encode()


def delta_chunk(delta: dict, finish: str | None = None) -> dict:
    return {"id": "c1", "object": "chat.completion.chunk", "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def stream_events(proxy, **extra) -> list[dict]:
    with requests.post(proxy.base_url + "/v1/responses", json={"model": MODEL, "input": "hi", "stream": True, **extra},
                       stream=True, timeout=30) as response:
        assert response.status_code == 200, response.text[:300]
        return [event for _, event in sse(response)]


def test_sse_with_cr_only_line_endings(raw_upstream):
    lines = [data(delta_chunk({"content": "Hel"})), b"", data(delta_chunk({"content": "lo"})), b"",
             data(delta_chunk({}, "stop")), b"", b"data: [DONE]", b"", b""]
    _, proxy = raw_upstream(sse_reply(b"\r".join(lines)))
    events = stream_events(proxy)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hello"


def test_a_last_event_without_its_blank_line_still_counts(raw_upstream):
    # The finish_reason rides in the last event, and the connection closes right after its data line.
    body = data(delta_chunk({"content": "Hi"})) + b"\n\n" + data(delta_chunk({}, "stop"))
    _, proxy = raw_upstream(sse_reply(body))
    events = stream_events(proxy)
    assert events[-1]["type"] == "response.completed", events[-1]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hi"


def test_tool_call_deltas_without_index_make_one_call_each(raw_upstream):
    fragments = [
        {"tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "exec_command", "arguments": ""}}]},
        {"tool_calls": [{"function": {"arguments": '{"cmd":'}}]},
        {"tool_calls": [{"function": {"arguments": '"ls"}'}}]},
        {"tool_calls": [{"id": "call_2", "type": "function", "function": {"name": "exec_command",
                                                                          "arguments": '{"cmd":"pwd"}'}}]},
    ]
    body = b"".join(data(delta_chunk(f)) + b"\n\n" for f in fragments)
    body += data(delta_chunk({}, "tool_calls")) + b"\n\ndata: [DONE]\n\n"
    _, proxy = raw_upstream(sse_reply(body))
    events = stream_events(proxy, tools=[{"type": "function", "name": "exec_command", "parameters": {}}])
    calls = events[-1]["response"]["output"]
    assert [(c["call_id"], c["arguments"]) for c in calls] == [("call_1", '{"cmd":"ls"}'), ("call_2", '{"cmd":"pwd"}')]


def test_retry_after_as_an_http_date(raw_upstream):
    def reply():
        date = email.utils.formatdate(time.time() + 40, usegmt=True)
        body = json.dumps({"error": {"message": "Rate limit reached", "type": "rate_limit", "code": None}}).encode()
        return [b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: " + date.encode()
                + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body]

    _, proxy = raw_upstream(reply)
    response = requests.post(proxy.base_url + "/v1/responses", json={"model": MODEL, "input": "hi"}, timeout=30)
    assert response.status_code == 429
    assert 30 <= int(response.headers["retry-after"]) <= 41  # not the configured default of 2


CDN_PAGE = (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway | corp-proxy</title></head>\n"
            b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n")


@pytest.mark.parametrize("stream", [True, False])
def test_an_html_error_page_becomes_one_readable_line(raw_upstream, stream):
    _, proxy = raw_upstream(lambda: [b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: "
                                     + str(len(CDN_PAGE)).encode() + b"\r\nConnection: close\r\n\r\n" + CDN_PAGE])
    response = requests.post(proxy.base_url + "/v1/responses", json={"model": MODEL, "input": "hi", "stream": stream},
                             timeout=30)
    if response.headers["content-type"].startswith("text/event-stream"):  # a relay that fails the stream instead
        message = [e for _, e in sse(response)][-1]["response"]["error"]["message"]
    else:
        message = response.json()["error"]["message"]
    assert "502 Bad Gateway | corp-proxy" in message
    assert "<" not in message and "\n" not in message


def test_a_50_mb_error_body_is_not_read_whole(raw_upstream):
    piece = b"x" * (1024 * 1024)

    def reply():
        yield (b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: "
               + str(50 * len(piece)).encode() + b"\r\n\r\n")
        for _ in range(50):
            yield piece

    upstream, proxy = raw_upstream(reply)
    response = requests.post(proxy.base_url + "/v1/responses", json={"model": MODEL, "input": "hi", "stream": True},
                             timeout=30)
    assert response.status_code >= 500 or response.headers["content-type"].startswith("text/event-stream")
    assert len(response.content) < 4096, "the client gets a message, not the body"
    assert upstream.answered.wait(10), "the proxy closed the upstream connection instead of reading on"
    assert upstream.client_hung_up.is_set() and upstream.sent < 20 * len(piece)
