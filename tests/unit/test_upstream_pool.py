"""The pooled adapter's liveness check: an idle connection the upstream closed is never reused."""

from __future__ import annotations

import socket
import threading

import requests

from deepseek_proxy.upstream.pool import PooledAdapter, readable_now


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


class _OneReplyPerConnection:
    """An HTTP server that answers one request per connection, then closes it *without* saying so (no
    `Connection: close`): the client pools the connection, and must notice the close before reusing it."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.client_ports: list[int] = []
        self.closed_one = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                conn, addr = self.listener.accept()
            except OSError:
                return
            with conn:
                self.client_ports.append(addr[1])
                data = b""
                while b"\r\n\r\n" not in data:
                    received = conn.recv(4096)
                    if not received:
                        break
                    data += received
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            self.closed_one.set()

    def close(self):
        self.listener.close()


def test_a_connection_the_upstream_closed_is_replaced_not_reused(monkeypatch):
    checks = []

    def counting_check(sock):
        checks.append(readable_now(sock))
        return checks[-1]

    monkeypatch.setattr("deepseek_proxy.upstream.pool.readable_now", counting_check)
    server = _OneReplyPerConnection()
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
