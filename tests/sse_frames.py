"""Read a streamed HTTP reply's server-sent events, independently of the proxy's own SSE code."""

from __future__ import annotations

import json

import requests


def sse(response: requests.Response) -> list[tuple[str | None, dict]]:
    """(event line, parsed data) pairs, in order."""
    events: list[tuple[str | None, dict]] = []
    name: str | None = None
    data: list[str] = []
    for line in response.iter_lines(decode_unicode=True):
        assert isinstance(line, str)
        if line == "":
            if data:
                events.append((name, json.loads("\n".join(data))))
            name, data = None, []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    return events
