"""What the scripted stand-ins for an upstream API (``scripted_responses``, ``scripted_messages``) share: a threaded
HTTP server on 127.0.0.1 that records every request (method, path, query, headers, JSON body) and a request handler
with the small pieces each door's routes are built from (record, read the JSON body, send a sized reply).

A stand-in is a dataclass that subclasses ``ScriptedServer``, sets ``handler`` to its ``RecordingHandler`` subclass
(whose ``outer`` is then the stand-in being served) and calls ``_open()`` from ``__post_init__``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

Server = TypeVar("Server", bound="ScriptedServer")


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: object | None


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a client hanging up is not a test failure
        pass


class RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    outer: Any  # the ScriptedServer subclass being served (set by ScriptedServer._open)

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def record(self, body: object | None) -> Recorded:
        url = urlsplit(self.path)
        rec = Recorded(self.command, url.path, parse_qs(url.query), {k.lower(): v for k, v in self.headers.items()},
                       body)
        self.outer._record(rec)
        return rec

    def read_body(self) -> tuple[bytes, object | None]:
        """The raw body and its JSON (a string when it is not JSON, None when there is no body)."""
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return raw, json.loads(raw) if raw else None
        except ValueError:
            return raw, raw.decode("utf-8", "replace")

    def send(self, status: int, ctype: str, payload: bytes, *, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if not head:
            self.wfile.write(payload)


class ScriptedServer:
    """``with Stand_in() as srv: srv.root_url`` -> ``http://127.0.0.1:PORT``; ``srv.requests``: what came, in order."""

    handler: type[RecordingHandler]
    requests: list[Recorded]

    def _open(self) -> None:
        self._lock = threading.Lock()
        self._server = QuietServer(("127.0.0.1", 0), type("Handler", (self.handler,), {"outer": self}))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self: Server) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)
