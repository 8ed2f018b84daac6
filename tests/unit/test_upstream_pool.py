"""The pooled adapter's liveness check: an idle connection the upstream closed is never reused."""

from __future__ import annotations

import http.client
import socket

import requests

from deepseek_proxy.upstream.pool import COALESCE_LIMIT, PooledAdapter, readable_now
from tests.fakes.canned_http import CannedHTTPServer


def test_readable_now_tells_idle_from_closed_or_sent():
    a, b = socket.socketpair()
    try:
        assert not readable_now(a), "an idle open connection is not readable"
        b.sendall(b"x")
        assert readable_now(a), "unread bytes make it readable"
        a.recv(1)
        b.close()
        assert readable_now(a), "the peer's close makes it readable (EOF)"
    finally:
        a.close()


def test_a_connection_the_upstream_closed_is_replaced_not_reused(monkeypatch):
    checks = []

    def counting_check(sock):
        checks.append(readable_now(sock))
        return checks[-1]

    monkeypatch.setattr("deepseek_proxy.upstream.pool.readable_now", counting_check)
    # One reply per connection, then a close *without* `Connection: close`: the client pools the connection.
    server = CannedHTTPServer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                              replies_per_connection=1)
    session = requests.Session()
    adapter = PooledAdapter(max_retries=0)  # no retry would hide a reused dead connection
    session.mount("http://", adapter)
    try:
        url = f"http://127.0.0.1:{server.port}/"
        assert session.get(url, timeout=5).json() == {}
        assert server.closed_one.wait(5)
        assert session.get(url, timeout=5).json() == {}, "the dead pooled connection was detected and replaced"
        assert checks == [True], "the pooled connection was checked by our poll, which saw the close"
        assert len(server.client_ports) == 2 and server.client_ports[0] != server.client_ports[1]
    finally:
        session.close()
        server.close()


def test_the_pool_of_a_url_is_looked_up_once_and_again_after_a_close(monkeypatch):
    lookups = []
    requests_lookup = requests.adapters.HTTPAdapter.get_connection_with_tls_context

    def counting_lookup(self, request, verify, proxies=None, cert=None):
        lookups.append(request.url)
        return requests_lookup(self, request, verify, proxies=proxies, cert=cert)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "get_connection_with_tls_context", counting_lookup)
    server = CannedHTTPServer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    session = requests.Session()
    adapter = PooledAdapter(max_retries=0)
    session.mount("http://", adapter)
    try:
        url = f"http://127.0.0.1:{server.port}/chat/completions"
        for _ in range(3):
            assert session.post(url, data=b"{}", timeout=5).json() == {}
        assert lookups == [url], "requests worked out the pool once; later requests used the same pool"
        assert len(server.client_ports) == 1, "... and its pooled connection"

        pool = adapter.get_connection_with_tls_context(requests.Request("POST", url).prepare(), True)
        pool.close()  # what a pool manager that disposes of pools does
        assert session.post(url, data=b"{}", timeout=5).json() == {}
        assert len(lookups) == 2, "a closed pool is not kept: requests is asked again (as it would be anyway)"

        adapter.close()  # the session's close: requests would start from an empty pool manager
        assert session.post(url, data=b"{}", timeout=5).json() == {}
        assert len(lookups) == 3

        proxied = requests.Request("POST", url).prepare()
        for _ in range(2):
            adapter.get_connection_with_tls_context(proxied, True, proxies={"http": "http://127.0.0.1:9"})
        assert len(lookups) == 5, "through a proxy, requests decides every time"
    finally:
        session.close()
        server.close()


def test_a_request_head_leaves_with_its_body_in_one_send(monkeypatch):
    sent: list[bytes] = []
    http_client_send = http.client.HTTPConnection.send

    def recording_send(self, data):
        sent.append(bytes(data))
        return http_client_send(self, data)

    monkeypatch.setattr(http.client.HTTPConnection, "send", recording_send)
    server = CannedHTTPServer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    session = requests.Session()
    session.mount("http://", PooledAdapter(max_retries=0))
    url = f"http://127.0.0.1:{server.port}/chat/completions"
    try:
        body = b'{"model": "deepseek-v4-pro", "stream": true}'
        assert session.post(url, data=body, timeout=5).json() == {}
        assert len(sent) == 1 and sent[0].startswith(b"POST /chat/completions HTTP/1.1\r\n")
        assert sent[0].endswith(b"\r\n\r\n" + body), "one send: the head, then the whole body"

        sent.clear()
        big = b"[" + b"1," * COALESCE_LIMIT + b"1]"  # past the limit: not copied, sent after the head
        assert session.post(url, data=big, timeout=5).json() == {}
        assert len(sent) == 2 and sent[0].endswith(b"\r\n\r\n") and sent[1] == big

        sent.clear()
        assert session.get(url, timeout=5).json() == {}, "a request without a body still leaves (its head alone)"
        assert len(sent) == 1 and sent[0].startswith(b"GET ") and sent[0].endswith(b"\r\n\r\n")
        assert server.requests == 3 and len(server.client_ports) == 1
    finally:
        session.close()
        server.close()
