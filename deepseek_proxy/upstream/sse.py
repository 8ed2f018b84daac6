"""Server-sent events, both directions.

SSEDecoder turns the upstream's raw byte chunks into event payloads as they complete. It works on bytes and
splits on b"\\n", so a UTF-8 character cut between two network reads is rejoined before anything is decoded.
Comment lines (": keep-alive", which DeepSeek sends while a request is queued) are reported as KEEPALIVE so the
proxy can keep its own client's idle timer alive.

Lines may end in CRLF, LF or a lone CR, as the SSE specification allows (some OpenAI-compatible servers send
CR-only lines); a CRLF cut between two reads is still one line end.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..jsonfast import dumps

KEEPALIVE = object()
DONE = b"[DONE]"
# Fed after the upstream's last read, it completes an event the upstream left without its blank line (the same
# as close()): a relay can pass it through its one decode loop.
END_OF_STREAM = b"\n\n"


class SSEDecoder:
    def __init__(self) -> None:
        self._tail = b""  # an incomplete line carried over to the next chunk
        self._data: list[bytes] = []  # data lines of the event being read
        self._after_cr = False  # the last chunk ended in CR: an LF starting the next one ends no further line

    def feed(self, chunk: bytes) -> list:
        """Return the completed events in `chunk`: each is the data payload (bytes) or KEEPALIVE."""
        if not chunk:  # an idle tick: nothing to decode (and a CR just read may still be half of a CRLF)
            return []
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the second half of a CRLF
        if b"\r" in chunk:  # rare (most servers end lines in LF): one line end per CRLF or lone CR
            self._after_cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        else:
            self._after_cr = False
        if self._tail:
            chunk = self._tail + chunk
        lines = chunk.split(b"\n")
        self._tail = lines.pop()
        events: list = []
        for line in lines:
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
        return self.feed(END_OF_STREAM) if (self._tail or self._data) else []


def encode_events(events: Iterable[dict]) -> bytes:
    """Responses events as SSE frames, `event:` line included (Codex's idle timer counts event lines)."""
    return b"".join(
        b"event: " + event["type"].encode() + b"\ndata: " + dumps(event) + b"\n\n" for event in events
    )
