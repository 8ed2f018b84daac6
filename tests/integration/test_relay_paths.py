"""The relay on every read path, on the real server: idle ticks whatever the upstream body's framing, a client
that hangs up noticed within a second while the upstream is silent (and the upstream closed then), upstream
replies past the configured size or duration ended with response.failed, and client keys compared as bytes."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from tests.conftest import FAKE_KEY
from tests.fakes.fake_deepseek import Reply
from tests.fakes.paced_http import PacedHTTPServer, paced_reply, sse_events, text_chunks
from tests.integration.test_responses_api import MODEL, strict_stream

FAST_TICKS = "[server]\nkeepalive_interval = 0.2\n"


@pytest.mark.parametrize("framing", ["sized", "gzip", "close"])
def test_idle_ticks_whatever_the_body_framing(start_proxy, framing):
    chunks = text_chunks(["one", " two", " three"])
    first, second = sse_events(chunks[0], done=False), sse_events(*chunks[1:])
    upstream = PacedHTTPServer(paced_reply(framing, first, second, silence=1.5))
    try:
        server = start_proxy(upstream.base_url, FAST_TICKS)
        events = strict_stream(server, {"model": MODEL, "input": "hi", "stream": True})
    finally:
        upstream.close()
    types = [e["type"] for e in events]
    assert types[-1] == "response.completed", types
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "one two three"
    # Keep-alives (a repeated response.in_progress) while the upstream was silent, after the start events.
    assert types[2:].count("response.in_progress") >= 3, types


def test_client_hang_up_is_noticed_within_a_second_while_the_upstream_is_silent(start_proxy):
    chunks = text_chunks(["one", " two"])
    chunked_head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    first = sse_events(chunks[0], done=False)
    upstream = PacedHTTPServer([(0, chunked_head + b"%x\r\n%s\r\n" % (len(first), first)), (30, b"0\r\n\r\n")])
    try:
        # keep-alives far apart: only the proxy's look at its client's socket can notice the hang-up
        server = start_proxy(upstream.base_url, "[server]\nkeepalive_interval = 60\n")
        body = json.dumps({"model": MODEL, "input": "hi", "stream": True}).encode()
        client = socket.create_connection(("127.0.0.1", server.port))
        client.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        received = b""
        while b"output_text.delta" not in received:
            received += client.recv(65536)
        client.close()
        closed_at = time.monotonic()
        assert upstream.client_closed.wait(5), "the proxy kept its upstream open after its client left"
        assert upstream.client_closed_at - closed_at < 1.5
    finally:
        upstream.close()


def test_upstream_reply_past_the_size_limit_is_a_failed_response(start_proxy):
    first = sse_events(*text_chunks(["word"] * 40)[:-1], done=False)  # ~5 KiB, then the upstream goes quiet
    chunked_head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    upstream = PacedHTTPServer([(0, chunked_head + b"%x\r\n%s\r\n" % (len(first), first)), (30, b"0\r\n\r\n")])
    try:
        server = start_proxy(upstream.base_url, "[server]\nmax_upstream_stream_mb = 0.002\n")  # ~2 KiB
        events = strict_stream(server, {"model": MODEL, "input": "hi", "stream": True})
        assert upstream.client_closed.wait(5), "the upstream connection was left open"
    finally:
        upstream.close()
    assert events[-1]["type"] == "response.failed"
    error = events[-1]["response"]["error"]
    assert error["code"] == "invalid_prompt" and "max_upstream_stream_mb" in error["message"]


def test_upstream_reply_past_the_duration_limit_is_a_failed_response(start_proxy, fake_deepseek):
    fake_deepseek.reset()
    server = start_proxy(fake_deepseek.base_url, "[server]\nmax_upstream_stream_seconds = 0.6\n")
    fake_deepseek.script(Reply.text(" ".join(["word"] * 40), reasoning=None, delay=0.1))
    events = strict_stream(server, {"model": MODEL, "input": "hi", "stream": True})
    assert events[-1]["type"] == "response.failed"
    error = events[-1]["response"]["error"]
    assert error["code"] == "server_error" and "max_upstream_stream_seconds" in error["message"]
    assert any(e["type"] == "response.output_text.delta" for e in events), "what arrived in time was relayed"


@pytest.mark.parametrize("authorization", ["Bearer é", "Bearer é".encode(), b"Bearer \xff\xfe"])
def test_non_ascii_client_key_is_a_401_not_a_500(start_proxy, fake_deepseek, authorization):
    fake_deepseek.reset()
    server = start_proxy(fake_deepseek.base_url, '[server]\nclient_keys = ["team-secret-1"]\n')
    for path in ("/v1/responses", "/v1/models"):
        response = requests.post(server.base_url + path, json={"model": MODEL, "input": "hi"},
                                 headers={"Authorization": authorization}, timeout=10) if path.endswith("responses") \
            else requests.get(server.base_url + path, headers={"Authorization": authorization}, timeout=10)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert FAKE_KEY not in server.log()
