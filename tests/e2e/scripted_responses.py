"""A scripted stand-in for a Responses API server, on 127.0.0.1, for driving the real Codex CLI.

It records every request (method, path, query, headers, JSON body), answers ``POST .../responses`` by
replaying captured SSE bytes (by default the final-message turn from the captured Codex fixtures), and can
serve a model catalog at a path so ``model_catalog_url`` can be exercised without the proxy core.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.scripted_server import Recorded, RecordingHandler, ScriptedServer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "codex"
FINAL_MESSAGE_SSE = FIXTURES / "normal" / "turn3_response.sse"
FINAL_MESSAGE_TEXT = "Done. Created hello.txt and out.txt."
NOT_FOUND = b'{"error":{"message":"not found"}}'


class _Handler(RecordingHandler):
    outer: ScriptedResponses

    def do_GET(self) -> None:
        rec = self.record(None)
        if self.outer.catalog is not None and rec.path == self.outer.catalog_path:
            self.send(200, "application/json", json.dumps(self.outer.catalog).encode())
        else:
            self.send(404, "application/json", NOT_FOUND)

    def do_POST(self) -> None:
        _, body = self.read_body()
        rec = self.record(body)
        if rec.path.endswith("/responses"):
            self.send(200, "text/event-stream", self.outer.sse)
        else:
            self.send(404, "application/json", NOT_FOUND)


@dataclass
class ScriptedResponses(ScriptedServer):
    """``with ScriptedResponses() as srv: srv.base_url`` -> ``http://127.0.0.1:PORT/v1``."""

    sse: bytes = field(default_factory=lambda: FINAL_MESSAGE_SSE.read_bytes())
    catalog: dict | None = None
    catalog_path: str = "/v1/codex/models.json"
    requests: list[Recorded] = field(default_factory=list)
    handler = _Handler

    def __post_init__(self) -> None:
        self._open()

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def catalog_url(self) -> str:
        return f"{self.root_url}{self.catalog_path}"

    def responses_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith("/responses")]
