"""A scripted stand-in for a Responses API server, on 127.0.0.1, for driving the real Codex CLI.

It records every request (method, path, query, headers, JSON body), answers ``POST .../responses`` by
replaying captured SSE bytes (by default the final-message turn from the captured Codex fixtures), and can
serve a model catalog at a path so ``model_catalog_url`` can be exercised without the proxy core.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "codex"
FINAL_MESSAGE_SSE = FIXTURES / "normal" / "turn3_response.sse"
FINAL_MESSAGE_TEXT = "Done. Created hello.txt and out.txt."


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: object | None


@dataclass
class ScriptedResponses:
    """``with ScriptedResponses() as srv: srv.base_url`` -> ``http://127.0.0.1:PORT/v1``."""

    sse: bytes = field(default_factory=lambda: FINAL_MESSAGE_SSE.read_bytes())
    catalog: dict | None = None
    catalog_path: str = "/v1/codex/models.json"
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def catalog_url(self) -> str:
        return f"{self.root_url}{self.catalog_path}"

    def responses_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith("/responses")]

    def __enter__(self) -> ScriptedResponses:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)

    def _handler_class(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _recorded(self, body: object | None) -> Recorded:
                url = urlsplit(self.path)
                rec = Recorded(
                    method=self.command,
                    path=url.path,
                    query=parse_qs(url.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                outer._record(rec)
                return rec

            def _send(self, status: int, ctype: str, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                rec = self._recorded(None)
                if outer.catalog is not None and rec.path == outer.catalog_path:
                    self._send(200, "application/json", json.dumps(outer.catalog).encode())
                else:
                    self._send(404, "application/json", b'{"error":{"message":"not found"}}')

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                rec = self._recorded(body)
                if rec.path.endswith("/responses"):
                    self._send(200, "text/event-stream", outer.sse)
                else:
                    self._send(404, "application/json", b'{"error":{"message":"not found"}}')

        return Handler
