"""The socket-level body reader: chunked framing at every split, and connection reuse through the pool."""

from __future__ import annotations

import json

import pytest
import requests

from deepseek_proxy.config import UpstreamConfig
from deepseek_proxy.upstream.body import ChunkedDecoder, iter_body
from deepseek_proxy.upstream.client import UpstreamClient
from tests.fakes.canned_http import CannedHTTPServer
from tests.fakes.fake_deepseek import FakeDeepSeek, Reply

FRAMED = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n1\r\n!\r\n0\r\nX-Trailer: yes\r\n\r\n"


@pytest.mark.parametrize("split", range(1, len(FRAMED)))
def test_chunked_decoder_at_every_split(split):
    decoder = ChunkedDecoder()
    out = decoder.feed(FRAMED[:split])
    assert not decoder.done or split == len(FRAMED)
    out += decoder.feed(FRAMED[split:])
    assert out == b"hello, world!"
    assert decoder.done


def test_chunked_decoder_byte_by_byte():
    decoder = ChunkedDecoder()
    assert b"".join(decoder.feed(FRAMED[i:i + 1]) for i in range(len(FRAMED))) == b"hello, world!"
    assert decoder.done


def test_bad_chunk_size_is_an_error():
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        ChunkedDecoder().feed(b"zz\r\nhello\r\n")


@pytest.fixture()
def fake():
    with FakeDeepSeek(api_key="sk-k") as server:
        yield server


def _client(fake) -> UpstreamClient:
    config = UpstreamConfig(name="t", base_url=fake.base_url, api_key="env:K")
    return UpstreamClient(config, env={"K": "sk-k"})


def _body(stream: bool) -> dict:
    body = {"model": "deepseek-v4-pro", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def test_streamed_body_is_complete_and_the_connection_is_reused(fake):
    client = _client(fake)
    fake.script(Reply.text("one two three"), Reply.text("four five"))
    texts = []
    for _ in range(2):
        response = client.post_chat(_body(stream=True))
        raw = b"".join(iter_body(response))
        response.close()
        assert raw.rstrip().endswith(b"data: [DONE]")
        chunks = [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]
        texts.append("".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]))
    assert texts == ["one two three", "four five"]
    ports = [r.client_port for r in fake.chat_requests]
    assert ports[0] == ports[1], "the second request should reuse the pooled connection"


def test_length_delimited_body_and_reuse(fake):
    client = _client(fake)
    first = client.post_chat(_body(stream=False))
    assert json.loads(b"".join(iter_body(first)))["object"] == "chat.completion"
    first.close()
    second = client.post_chat(_body(stream=False))
    assert json.loads(b"".join(iter_body(second)))["object"] == "chat.completion"
    second.close()
    assert fake.chat_requests[0].client_port == fake.chat_requests[1].client_port


def test_silence_yields_empty_reads_then_the_data(fake):
    client = _client(fake)
    fake.script(Reply.text("slow words arrive", reasoning=None, delay=0.35))
    response = client.post_chat(_body(stream=True))
    pieces = list(iter_body(response, idle_interval=0.1))
    response.close()
    assert b"".join(pieces).rstrip().endswith(b"data: [DONE]")
    assert pieces.count(b"") >= 4, "each 0.1 s of silence between the 0.35 s-apart events is reported"
    client.post_chat(_body(stream=False)).close()
    ports = [r.client_port for r in fake.chat_requests]
    assert ports[0] == ports[1], "the connection went back to the pool"


def test_silence_longer_than_the_read_timeout_is_a_read_timeout(fake):
    config = UpstreamConfig(name="t", base_url=fake.base_url, api_key="env:K", read_timeout=0.5)
    client = UpstreamClient(config, env={"K": "sk-k"})
    fake.script(Reply.text("a b", reasoning=None, delay=1.5))
    response = client.post_chat(_body(stream=True))
    with pytest.raises(requests.exceptions.ReadTimeout):
        for _ in iter_body(response, idle_interval=0.1):
            pass
    response.close()


# ---- over TLS, as the real DeepSeek is ---------------------------------------------------------------------------


def _tls_client(tls_upstream, tls_cert) -> UpstreamClient:
    assert tls_upstream.base_url.startswith("https://")
    config = UpstreamConfig(name="t", base_url=tls_upstream.base_url, api_key="env:K")
    return UpstreamClient(config, env={"K": tls_upstream.api_key, "REQUESTS_CA_BUNDLE": tls_cert[0]})


def _streamed_text(raw: bytes) -> str:
    assert raw.rstrip().endswith(b"data: [DONE]")
    chunks = [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_tls_headers_alone_then_a_late_first_chunk(tls_upstream, tls_cert):
    """The headers arrive in a TLS record of their own and the body only later: the first, non-blocking read of
    what came with the headers finds nothing (an SSL socket says so with SSLWantReadError, not BlockingIOError)."""
    client = _tls_client(tls_upstream, tls_cert)
    tls_upstream.script(Reply.text("late but whole", reasoning=None, ttft=0.6))
    response = client.post_chat(_body(stream=True))
    pieces = list(iter_body(response, idle_interval=0.1))
    response.close()
    assert _streamed_text(b"".join(pieces)) == "late but whole"
    assert pieces.count(b"") >= 2, "the silence before the first chunk is reported as empty reads"
    assert tls_upstream.rejections == []


def test_tls_connection_is_reused(tls_upstream, tls_cert):
    client = _tls_client(tls_upstream, tls_cert)
    tls_upstream.script(Reply.text("one two", ttft=0.2), Reply.text("three four"))
    texts = []
    for _ in range(2):
        response = client.post_chat(_body(stream=True))
        texts.append(_streamed_text(b"".join(iter_body(response))))
        response.close()
    third = client.post_chat(_body(stream=False))
    assert json.loads(b"".join(iter_body(third)))["object"] == "chat.completion"
    third.close()
    assert texts == ["one two", "three four"]
    ports = [r.client_port for r in tls_upstream.chat_requests]
    assert len(ports) == 3 and len(set(ports)) == 1, f"one pooled TLS connection for all three requests: {ports}"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_hang_up_mid_body_raises_and_drops_the_connection(scheme, request):
    if scheme == "https":
        server = request.getfixturevalue("tls_upstream")
        client = _tls_client(server, request.getfixturevalue("tls_cert"))
    else:
        server = request.getfixturevalue("fake")
        client = _client(server)
    server.script(Reply.hang_up_after(2, Reply.text("a b c d e f")), Reply.text("again"))
    response = client.post_chat(_body(stream=True))
    with pytest.raises(requests.RequestException):
        b"".join(iter_body(response))
    response.close()
    again = client.post_chat(_body(stream=True))
    assert _streamed_text(b"".join(iter_body(again))) == "again"
    again.close()
    assert server.chat_requests[0].client_port != server.chat_requests[1].client_port


# ---- bodies that came with the headers ---------------------------------------------------------------------------


def _canned_client(server: CannedHTTPServer) -> UpstreamClient:
    config = UpstreamConfig(name="t", base_url=server.base_url, api_key="none", read_timeout=3)
    return UpstreamClient(config, env={})


def test_an_empty_body_ends_at_once_and_the_connection_is_reused():
    server = CannedHTTPServer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n")
    client = _canned_client(server)
    for _ in range(2):
        response = client.post_chat(_body(stream=False))
        assert b"".join(iter_body(response)) == b"", "Content-Length: 0 means done, not a wait for the read timeout"
        response.close()
    server.close()


def test_everything_buffered_with_the_headers_is_read_even_beyond_one_read(monkeypatch):
    monkeypatch.setattr("deepseek_proxy.upstream.body.READ_SIZE", 64)  # smaller than what came with the headers
    payload = bytes(range(32, 127)) * 20
    server = CannedHTTPServer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
    response = _canned_client(server).post_chat(_body(stream=False))
    assert b"".join(iter_body(response)) == payload
    response.close()
    server.close()
