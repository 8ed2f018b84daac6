"""The request body's size limit, the same for chunked bodies as for sized ones."""

from __future__ import annotations

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.utils import cached_property
from werkzeug.wsgi import get_input_stream


class ProxyRequest(Request):
    @cached_property
    def stream(self):
        """A chunked body (no Content-Length) over the limit is a 413 like a sized one. Werkzeug stops reading such
        a body at the limit and hands over what it read, which then fails as truncated JSON: read one byte more and
        refuse if it came."""
        limit = self.max_content_length
        if limit is None or self.content_length is not None:
            return get_input_stream(self.environ, max_content_length=limit)
        return _AtMost(get_input_stream(self.environ, max_content_length=limit + 1), limit)


class _AtMost:
    def __init__(self, stream, limit: int):
        self._stream, self._limit, self._seen = stream, limit, 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._seen += len(data)
        if self._seen > self._limit:
            raise RequestEntityTooLarge()
        return data

    def readinto(self, buffer) -> int:  # the IO protocol, for readers that prefer it
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)
