"""A raw HTTP/1.1 server on loopback that answers every request with the same parts, each after its own pause.

For the body framings the fake DeepSeek does not produce on purpose (sized, gzip-compressed, close-delimited),
with silences in between; and for noticing when the client closes the connection while the server is silent.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time

from tests.fakes.loopback_http import LoopbackHTTPServer


class PacedHTTPServer(LoopbackHTTPServer):
    def __init__(self, parts: list[tuple[float, bytes]]):
        """`parts`: (seconds to wait first, bytes to send); the connection is closed after the last part."""
        self.parts = parts
        self.client_closed = threading.Event()  # the client hung up before the reply was over
        self.client_closed_at: float | None = None
        super().__init__()

    def _reply(self, connection: socket.socket) -> None:
        for pause, part in self.parts:
            if self._wait_or_client_gone(connection, pause):
                return
            try:
                connection.sendall(part)
            except OSError:
                self._gone()
                return

    def _wait_or_client_gone(self, connection: socket.socket, pause: float) -> bool:
        deadline = time.monotonic() + pause
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            connection.settimeout(min(left, 0.05))
            try:
                if connection.recv(1) == b"":
                    self._gone()
                    return True
            except TimeoutError:
                continue
            except OSError:
                self._gone()
                return True

    def _gone(self) -> None:
        self.client_closed_at = time.monotonic()
        self.client_closed.set()


def sse_events(*chunks: dict, done: bool = True) -> bytes:
    import json
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


def text_chunks(words: list[str]) -> list[dict]:
    base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "deepseek-v4-pro"}
    out = [{**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words]
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return out


def head(framing: str, length: int | None = None) -> bytes:
    lines = [b"HTTP/1.1 200 OK", b"Content-Type: text/event-stream"]
    if framing == "sized":
        lines.append(b"Content-Length: %d" % length)
    elif framing == "gzip":
        lines += [b"Content-Encoding: gzip", b"Content-Length: %d" % length]
    elif framing == "close":
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def paced_reply(framing: str, first: bytes, second: bytes, silence: float) -> list[tuple[float, bytes]]:
    """The reply `first + second` in `framing` (sized, gzip or close), with `silence` seconds between the two."""
    if framing == "gzip":
        compressor_out = gzip.compress(first + second)
        cut = len(compressor_out) // 2
        return [(0, head("gzip", len(compressor_out)) + compressor_out[:cut]), (silence, compressor_out[cut:])]
    return [(0, head(framing, len(first) + len(second)) + first), (silence, second)]
