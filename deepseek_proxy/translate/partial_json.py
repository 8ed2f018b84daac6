"""Decoding one string field out of a JSON object that arrives in fragments.

A freeform tool call (Codex's `apply_patch`) reaches the upstream as a function whose arguments are
`{"input": "<raw text>"}`. To stream the raw text to the client as it is generated, the JSON string value is
decoded incrementally: only whole escape sequences are decoded, a split one waits for the next fragment.
"""

from __future__ import annotations

import json
import re

_MAX_OPENING = 256
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class StringFieldStream:
    def __init__(self, field: str):
        self._opening = re.compile(r'\{\s*"' + re.escape(field) + r'"\s*:\s*"')
        self._buffer = ""  # arguments not decoded yet
        self._state = "seek"  # seek → value → done (or "off" when the arguments do not look like {"field": "...)
        self._high_surrogate = ""

    def feed(self, fragment: str) -> str:
        """Return the newly decoded part of the field's value (possibly "")."""
        if self._state in ("done", "off"):
            return ""
        self._buffer += fragment
        if self._state == "seek":
            match = self._opening.match(self._buffer)
            if match is None:
                # Keep waiting while the opening may still be arriving; give up on anything else.
                start = self._buffer.lstrip()[:1]  # "" (nothing but whitespace yet) may still become "{"
                if start not in ("", "{") or len(self._buffer) > _MAX_OPENING:
                    self._state = "off"
                return ""
            self._buffer = self._buffer[match.end():]
            self._state = "value"
        return self._decode_available()

    def _decode_available(self) -> str:
        out: list[str] = []
        buf = self._buffer
        i = 0
        while i < len(buf):
            ch = buf[i]
            if ch == '"':
                out.append(self._flush_surrogate())  # a high surrogate left alone at the end
                self._state = "done"
                i = len(buf)
                break
            if ch != "\\":
                j = i
                while j < len(buf) and buf[j] not in '"\\':
                    j += 1
                out.append(self._flush_surrogate() + buf[i:j])
                i = j
                continue
            if i + 1 >= len(buf):
                break  # a lone backslash: wait for the rest of the escape
            code = buf[i + 1]
            if code == "u":
                if i + 6 > len(buf):
                    break
                unit = buf[i : i + 6]
                i += 6
                out.append(self._unicode_escape(unit))
                continue
            out.append(self._flush_surrogate() + _ESCAPES.get(code, code))
            i += 2
        self._buffer = buf[i:]
        return "".join(out)

    def _unicode_escape(self, unit: str) -> str:
        try:
            value = int(unit[2:], 16)
        except ValueError:  # not JSON (e.g. "\\uZZZZ"): pass the text on rather than fail the stream
            return self._flush_surrogate() + unit
        if 0xD800 <= value < 0xDC00:
            lone = self._flush_surrogate()
            self._high_surrogate = unit
            return lone
        if 0xDC00 <= value < 0xE000:
            if not self._high_surrogate:
                return "\ufffd"  # a lone low surrogate cannot be encoded as UTF-8 later
            pair, self._high_surrogate = self._high_surrogate + unit, ""
            return json.loads(f'"{pair}"')
        return self._flush_surrogate() + chr(value)

    def _flush_surrogate(self) -> str:
        if not self._high_surrogate:
            return ""
        self._high_surrogate = ""
        return "\ufffd"
