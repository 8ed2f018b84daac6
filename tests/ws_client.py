"""A small blocking WebSocket client for the tests, on wsproto (the library the server uses) over a plain socket:
the opening handshake with the headers Codex sends, permessage-deflate offered like Codex offers it, text
messages in and out, and what the server did (pings seen, the close code)."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Sequence
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError

CODEX_HEADERS = [(b"openai-beta", b"responses_websockets=2026-02-06"), (b"originator", b"codex_exec")]


class Rejected(Exception):
    def __init__(self, status: int, body: bytes):
        super().__init__(f"upgrade refused: {status} {body[:200]!r}")
        self.status, self.body = status, body


class WsClient:
    def __init__(self, port: int, *, path: str = "/v1/responses", key: str | None = "sk-client",
                 deflate: bool = True, timeout: float = 10.0, extra_headers: Sequence[tuple[bytes, bytes]] = ()):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.ws = WSConnection(ConnectionType.CLIENT)
        headers = [*CODEX_HEADERS, *extra_headers]
        if key:
            headers.append((b"authorization", b"Bearer " + key.encode()))
        self.pings = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.bytes_sent = 0
        self._texts: list[str] = []
        self._partial: list[str] = []
        self.extensions: list = []
        self.sock.sendall(self.ws.send(Request(host=f"127.0.0.1:{port}", target=path, extra_headers=headers,
                                               extensions=[PerMessageDeflate()] if deflate else [])))
        status, body = 0, b""
        while True:
            for event in self._read_events():
                if isinstance(event, AcceptConnection):
                    self.extensions = event.extensions
                    return
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise Rejected(status, b"")
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        raise Rejected(status, body)

    def _read_events(self) -> list:
        data = self.sock.recv(65536)
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    def send(self, message: dict | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        data = self.ws.send(Message(data=text))
        self.bytes_sent += len(data)
        self.sock.sendall(data)

    def recv_text(self, timeout: float = 10.0) -> str | None:
        """The next text message, or None once the server closed the connection."""
        deadline = time.monotonic() + timeout
        while not self._texts:
            if self.close_code is not None:
                return None
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                events = self._read_events()
            except (ConnectionResetError, BrokenPipeError):
                self.close_code = 1006
                return None
            for event in events:
                if isinstance(event, TextMessage):
                    self._partial.append(event.data)
                    if event.message_finished:
                        self._texts.append("".join(self._partial))
                        self._partial.clear()
                elif isinstance(event, Ping):
                    self.pings += 1
                    self.sock.sendall(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.close_code, self.close_reason = event.code, event.reason or ""
                    with contextlib.suppress(OSError, LocalProtocolError):  # the server may be gone already
                        self.sock.sendall(self.ws.send(event.response()))
        return self._texts.pop(0)

    def recv_event(self, timeout: float = 10.0) -> dict[str, Any] | None:
        text = self.recv_text(timeout)
        return None if text is None else json.loads(text)

    def response(self, timeout: float = 20.0) -> list[dict]:
        """Events up to and including the terminal one (or an error event)."""
        events: list[dict] = []
        while True:
            event = self.recv_event(timeout)
            assert event is not None, f"the connection closed ({self.close_code}) after {events}"
            events.append(event)
            if event["type"] in ("response.completed", "response.failed", "response.incomplete", "error"):
                return events

    def close(self, code: int = 1000) -> None:
        with contextlib.suppress(OSError, LocalProtocolError):
            self.sock.sendall(self.ws.send(CloseConnection(code=code)))
        self.sock.close()

    def drop(self) -> None:
        """Hang up without a close frame."""
        self.sock.close()
