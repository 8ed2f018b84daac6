"""Server-sent events, both directions.

SSEDecoder turns the upstream's raw byte chunks into event payloads as they complete. It works on bytes and
splits on b"\\n", so a UTF-8 character cut between two network reads is rejoined before anything is decoded.
Comment lines (": keep-alive", which DeepSeek sends while a request is queued) are reported as KEEPALIVE so the
proxy can keep its own client's idle timer alive.
"""

from __future__ import annotations

from typing import Iterable

from ..jsonfast import dumps

KEEPALIVE = object()
DONE = b"[DONE]"


class SSEDecoder:
    def __init__(self) -> None:
        self._tail = b""  # an incomplete line carried over to the next chunk
        self._data: list[bytes] = []  # data lines of the event being read

    def feed(self, chunk: bytes) -> list:
        """Return the completed events in `chunk`: each is the data payload (bytes) or KEEPALIVE."""
        if self._tail:
            chunk = self._tail + chunk
        lines = chunk.split(b"\n")
        self._tail = lines.pop()
        events: list = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    events.append(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
            elif line.startswith(b":"):
                events.append(KEEPALIVE)
            # `event:`, `id:`, `retry:` carry nothing a Chat Completions stream uses.
        return events

    def close(self) -> list:
        """End of stream: a last event not followed by a blank line still counts."""
        events = self.feed(b"\n\n") if (self._tail or self._data) else []
        return events


def encode_events(events: Iterable[dict]) -> bytes:
    """Responses events as SSE frames, `event:` line included (Codex's idle timer counts event lines)."""
    return b"".join(
        b"event: " + event["type"].encode() + b"\ndata: " + dumps(event) + b"\n\n" for event in events
    )
