"""The server's write path (deepseek_proxy/worker.py): chunk framing, short sends, and a client gone mid-write."""

from __future__ import annotations

import pytest

from deepseek_proxy.worker import StreamingHandler


class _Socket:
    """Accepts at most `take` bytes per send(), like a socket whose buffer is nearly full; sendall() takes the rest."""

    def __init__(self, take: int | None = None, fail: OSError | None = None):
        self.take, self.fail = take, fail
        self.sent = bytearray()
        self.calls: list[str] = []

    def send(self, data) -> int:
        self.calls.append("send")
        if self.fail:
            raise self.fail
        n = len(data) if self.take is None else min(self.take, len(data))
        self.sent += bytes(data[:n])
        return n

    def sendall(self, data) -> None:
        self.calls.append("sendall")
        self.sent += bytes(data)


def _handler(sock: _Socket, chunked: bool = True) -> StreamingHandler:
    handler = StreamingHandler.__new__(StreamingHandler)  # no server or connection needed for the write path
    handler.socket = sock
    handler.response_use_chunked = chunked
    handler.response_length = 0
    handler.status = "200 OK"
    handler.code = 200
    return handler


def test_an_event_is_one_framed_chunk_in_one_send():
    sock = _Socket()
    handler = _handler(sock)
    handler._write(b"event: x\ndata: {}\n\n")
    assert bytes(sock.sent) == b"13\r\nevent: x\ndata: {}\n\n\r\n"
    assert sock.calls == ["send"]
    assert handler.response_length == len(sock.sent)


def test_a_short_send_is_completed_by_sendall_without_loss_or_repeat():
    payload = bytes(range(256)) * 40
    sock = _Socket(take=1000)
    handler = _handler(sock)
    handler._write(payload)
    assert bytes(sock.sent) == b"%x\r\n" % len(payload) + payload + b"\r\n"
    assert sock.calls == ["send", "sendall"]


def test_an_empty_write_sends_nothing():
    # In chunked coding an empty chunk would end the body early.
    sock = _Socket()
    _handler(sock)._write(b"")
    assert sock.calls == [] and sock.sent == b""


def test_unchunked_bodies_go_out_as_they_are():
    sock = _Socket()
    _handler(sock, chunked=False)._write(b'{"ok":true}')
    assert bytes(sock.sent) == b'{"ok":true}'


def test_a_client_gone_mid_write_is_recorded_and_raised():
    sock = _Socket(fail=BrokenPipeError(32, "Broken pipe"))
    handler = _handler(sock)
    with pytest.raises(BrokenPipeError):
        handler._write(b"event: x\n\n")
    assert handler.status.startswith("socket error")
    assert handler.code == -200, "logged as a failed response, as gevent's own write path does"
    assert handler.response_length == 0
