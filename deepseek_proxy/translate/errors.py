"""The one error type the translators raise: a client mistake, reported in the client's own error format."""

from __future__ import annotations


class RequestError(Exception):
    """A request the proxy will not forward. Rendered as an OpenAI-style 4xx by the front door."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status
