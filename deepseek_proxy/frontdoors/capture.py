"""The opt-in body capture (`[logs] capture_bodies = true`): every door's request and response bodies, redacted
and cut at `capture_max_kb`, in `<capture_dir>/<request id>.<kind>.json` (ops/logs.py BodyCapture writes them).

Registered once on the app, so no door has to remember it; when the capture is off it costs one attribute read per
request. A streamed reply is captured as it leaves (the bytes the client got, up to the size cap) once the stream
ends, however it ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from flask import Flask, Response, current_app, request

from .. import faults
from ..ops import ops_for
from ..ops.logs import BodyCapture


def install(app: Flask) -> None:
    if not app.extensions["deepseek_proxy"].config.ops.capture_bodies:
        return  # nothing registered: no cost at all when the capture is off (the default)
    app.before_request(_capture_request)
    app.after_request(_capture_response)


def _capture() -> BodyCapture:
    return ops_for(current_app).capture


def _capture_request() -> None:
    if request.method in ("POST", "PUT", "PATCH"):
        # cache=True: the door reads the same bytes again (werkzeug keeps them for it).
        _capture().capture(faults.request_id(request.environ), "request", request.get_data(cache=True))


def _capture_response(response: Response) -> Response:
    if response.status_code == 101:  # a WebSocket upgrade: its body is the connection itself, not a reply
        return response
    capture, request_id = _capture(), faults.request_id(request.environ)
    if not response.is_streamed:
        capture.capture(request_id, "response", response.get_data())
        return response
    response.response = _Tee(response.response, capture, request_id)
    return response


class _Tee:
    """The streamed body as it is sent, kept up to the capture's size cap and written once the stream ends. close()
    is passed on, so the door's own clean-up (closing the upstream) still runs when the client leaves."""

    def __init__(self, body: Iterable[bytes] | Iterable[str], capture: BodyCapture, request_id: str):
        self.body, self.capture, self.request_id = body, capture, request_id
        self.kept = bytearray()
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for piece in self.body:
            data = piece.encode() if isinstance(piece, str) else piece  # a WSGI body is bytes in the end
            if len(self.kept) <= self.capture.max_bytes:
                self.kept += data
            yield data

    def close(self) -> None:
        if self.closed:  # the server and the response may both close it
            return
        self.closed = True
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.capture.capture(self.request_id, "response", bytes(self.kept))
