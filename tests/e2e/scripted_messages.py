"""A scripted stand-in for an Anthropic Messages server, on 127.0.0.1, for driving the real Claude Code.

It records every request (method, path, query, headers, JSON body; ``scripted_server``) and answers what Claude Code 2.1.197 calls
(see CLIENTS.md and ``tests/fixtures/claude-code/``):

* ``HEAD /`` and ``GET /`` -- the start-up preconnect probe: 200, empty.
* ``POST …/v1/messages/count_tokens`` -- ``{"input_tokens": N}``, a rough estimate from the body's size.
* ``POST …/v1/messages`` with tools (the agent loop, sub-agents) -- the next scripted reply: SSE bytes when the
  request asks for a stream, else the same reply folded into one JSON message (Claude Code resends a body without
  ``stream`` after a broken stream). The default script is the captured tool loop: a turn that runs
  ``echo hi > out.txt`` with Bash, then a final text. When the script runs out, the last reply repeats.
* ``POST …/v1/messages`` without tools -- Claude Code's side requests (``-p`` asks for a session title first):
  ``side_reply``, so they do not use up the script.

Paths are matched by their ending, so the server works as any base URL (``http://127.0.0.1:P`` or
``…/anthropic``).

``RefusingProxy`` is a loopback HTTP(S) proxy that refuses everything and records what was asked of it: point
``HTTPS_PROXY``/``HTTP_PROXY`` at it to see whether a client tries to reach anything outside loopback.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tests.e2e.scripted_server import Recorded, RecordingHandler, ScriptedServer

if TYPE_CHECKING:
    from typing import Self

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "claude-code"
TOOL_TURN_SSE = FIXTURES / "response_accepted_turn1_thinking_text_tool_use.sse"  # thinking, text, Bash tool_use
PARALLEL_TOOLS_SSE = FIXTURES / "response_accepted_turn2_parallel_tool_use.sse"
FINAL_TEXT_SSE = FIXTURES / "response_accepted_turn3_final_text.sse"
FINAL_TEXT = "Done: out.txt contains hi."  # what FINAL_TEXT_SSE says
TOOL_TURN_COMMAND = "echo hi > out.txt"  # what TOOL_TURN_SSE runs with Bash
SIDE_TEXT = '{"title": "Scripted session"}'  # answers a session-title request (a JSON object, as asked)

# A reply is SSE bytes, or a callable that picks one from the request being answered.
Reply = bytes | Callable[[Recorded], bytes]


def is_agent_request(rec: Recorded) -> bool:
    return isinstance(rec.body, dict) and bool(rec.body.get("tools"))


def default_script() -> list[Reply]:
    return [TOOL_TURN_SSE.read_bytes(), FINAL_TEXT_SSE.read_bytes()]


# ------------------------------------------------------------------------------------ building replies

def sse_event(event: dict) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


def sse_message(blocks: list[dict], *, stop_reason: str = "end_turn", model: str = "claude-scripted",
                message_id: str = "msg_scripted") -> bytes:
    """A complete stream for ``blocks`` (``{"type": "text", "text": …}``, ``{"type": "tool_use", "id", "name",
    "input"}``, ``{"type": "thinking", "thinking", "signature"}``), each block in one delta."""
    usage = {"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}
    out = [sse_event({"type": "message_start", "message": {
        "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": usage}})]
    for index, block in enumerate(blocks):
        kind = block["type"]
        if kind == "text":
            start, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": block["text"]}
            deltas = [delta]
        elif kind == "tool_use":
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": json.dumps(block["input"])}]
        elif kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": block["thinking"]},
                      {"type": "signature_delta", "signature": block.get("signature", "")}]
        else:
            raise ValueError(f"unsupported block type {kind!r}")
        out.append(sse_event({"type": "content_block_start", "index": index, "content_block": start}))
        out += [sse_event({"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        out.append(sse_event({"type": "content_block_stop", "index": index}))
    out.append(sse_event({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                          "usage": {**usage, "output_tokens": 5}}))
    out.append(sse_event({"type": "message_stop"}))
    return b"".join(out)


def sse_text(text: str) -> bytes:
    return sse_message([{"type": "text", "text": text}])


def parse_sse(raw: bytes) -> list[dict]:
    """The JSON payloads of an SSE body's ``data:`` lines, in order."""
    events = []
    for chunk in raw.decode("utf-8").split("\n\n"):
        data = "\n".join(line[5:].lstrip() for line in chunk.splitlines() if line.startswith("data:"))
        if data:
            events.append(json.loads(data))
    return events


def message_from_sse(raw: bytes) -> dict:
    """Fold a Messages stream into the non-streaming JSON message it stands for."""
    message: dict = {}
    blocks: dict[int, dict] = {}
    partial_json: dict[int, str] = {}
    for event in parse_sse(raw):
        kind = event["type"]
        if kind == "message_start":
            message = dict(event["message"])
        elif kind == "content_block_start":
            blocks[event["index"]] = dict(event["content_block"])
        elif kind == "content_block_delta":
            block, delta = blocks[event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] = block.get("text", "") + delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            elif delta["type"] == "input_json_delta":
                partial_json[event["index"]] = partial_json.get(event["index"], "") + delta["partial_json"]
        elif kind == "message_delta":
            message.update(event["delta"])
            message["usage"] = {**message.get("usage", {}), **event.get("usage", {})}
    for index, text in partial_json.items():
        blocks[index]["input"] = json.loads(text) if text else {}
    message["content"] = [blocks[i] for i in sorted(blocks)]
    return message


# ------------------------------------------------------------------------------------------- the server

class _Handler(RecordingHandler):
    outer: ScriptedMessages

    def _not_found(self, rec: Recorded) -> None:
        error = {"type": "error", "error": {"type": "not_found_error",
                                            "message": f"scripted server: no route {rec.method} {rec.path}"}}
        self.send(404, "application/json", json.dumps(error).encode())

    def do_HEAD(self) -> None:
        self.record(None)
        self.send(200, "text/plain", b"", head=True)

    def do_GET(self) -> None:
        rec = self.record(None)
        if rec.path.rstrip("/") in ("", "/anthropic"):
            self.send(200, "text/plain", b"ok")
        else:
            self._not_found(rec)

    def do_POST(self) -> None:
        raw, body = self.read_body()
        rec = self.record(body)
        if rec.path.endswith("/v1/messages/count_tokens"):
            # ~4 bytes a token: enough for a client that only displays it.
            self.send(200, "application/json", json.dumps({"input_tokens": max(1, len(raw) // 4)}).encode())
        elif rec.path.endswith("/v1/messages"):
            sse = self.outer._next_reply(rec)
            if isinstance(body, dict) and body.get("stream"):
                self.send(200, "text/event-stream", sse)
            else:
                self.send(200, "application/json", json.dumps(message_from_sse(sse)).encode())
        else:
            self._not_found(rec)


@dataclass
class ScriptedMessages(ScriptedServer):
    """``with ScriptedMessages() as srv: srv.base_url`` -> ``http://127.0.0.1:PORT`` (ANTHROPIC_BASE_URL).

    ``script``: the replies to successive ``POST /v1/messages`` that carry tools; the last one repeats once the
    script runs out. ``side_reply``: the answer to every request without tools.
    """

    script: list[Reply] = field(default_factory=default_script)
    side_reply: Reply = field(default_factory=lambda: sse_text(SIDE_TEXT))
    requests: list[Recorded] = field(default_factory=list)
    handler = _Handler

    def __post_init__(self) -> None:
        self._answered = 0
        self._open()

    @property
    def base_url(self) -> str:
        return self.root_url

    def messages_requests(self) -> list[Recorded]:
        """Every ``POST …/v1/messages`` (not count_tokens), in arrival order."""
        return [r for r in self.requests if r.method == "POST" and r.path.endswith("/v1/messages")]

    def agent_requests(self) -> list[Recorded]:
        """The ``POST …/v1/messages`` that carry tools: the ones the script answers."""
        return [r for r in self.messages_requests() if is_agent_request(r)]

    def _next_reply(self, rec: Recorded) -> bytes:
        if not is_agent_request(rec):
            reply = self.side_reply
            return reply(rec) if callable(reply) else reply
        with self._lock:
            reply = self.script[min(self._answered, len(self.script) - 1)]
            self._answered += 1
        return reply(rec) if callable(reply) else reply


# ------------------------------------------------------------------------------------- the refusing proxy

@dataclass
class RefusingProxy:
    """A loopback HTTP proxy that answers every request (``CONNECT host:443`` or ``GET http://…``) with 403 and
    records its target. ``HTTPS_PROXY=http://127.0.0.1:PORT`` makes any attempt to reach the outside visible."""

    targets: list[str] = field(default_factory=list)  # "CONNECT statsig.anthropic.com:443", "GET http://…"

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:  # timeout: look at the stop flag again
                continue
            threading.Thread(target=self._refuse, args=(conn,), daemon=True).start()

    def _refuse(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            line = data.split(b"\r\n", 1)[0].decode("latin-1")
            method, _, rest = line.partition(" ")
            target = rest.rsplit(" ", 1)[0] if " " in rest else rest
            self.targets.append(f"{method} {target}".strip() or "(no request line)")
            try:
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            except OSError:
                pass
