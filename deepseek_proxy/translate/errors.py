"""The one error type the translators raise: a client mistake, reported in the client's own error format."""

from __future__ import annotations

from collections.abc import Iterator


class RequestError(Exception):
    """A request the proxy will not forward. Rendered as an OpenAI-style 4xx by the front door."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status


def each_object(items: list, where: str) -> Iterator[tuple[int, str, dict]]:
    """(index, its place, item) for each item of `items`, refusing the first one that is not an object. `where`
    names an item's place with `{}` for its index, in the client's API's spelling: "tools.{}" (Anthropic),
    "tools[{}]" (Gemini)."""
    for index, item in enumerate(items):
        place = where.format(index)
        if not isinstance(item, dict):
            raise RequestError(f"{place}: an object is required", param=place)
        yield index, place, item
