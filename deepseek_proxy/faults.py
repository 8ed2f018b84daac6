"""Request ids and the last line of defence against errors: shared by the app's error handlers and the worker.

Every request gets an id (`x-request-id` on every response, in every error line of the log, and in the message of
an unexpected error) so a user's report can be matched to the log. An exception that nothing else handled becomes
an error in the client's own format, never gevent's text/plain "Internal Server Error"; one kind of failure that
only a client's input can cause (nesting deeper than the JSON encoder's limit) is the client's error, a 400.

No Flask or requests imports here: the worker imports this module before gevent patches the standard library.
"""

from __future__ import annotations

import os

import orjson

ENVIRON_KEY = "deepseek_proxy.request_id"  # set by the worker for each request; the app reads it
HEADER = "x-request-id"


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


def request_id(environ: dict) -> str:
    """The id of the request `environ` belongs to (`faults.request_id(flask.request.environ)` in a view): the
    worker's, which its own log lines use too, or a new one when the app runs under another server."""
    rid = environ.get(ENVIRON_KEY)
    if rid is None:
        rid = environ[ENVIRON_KEY] = new_request_id()
    return rid


def input_fault(error: BaseException) -> tuple[int, str] | None:
    """(status, message) when `error` can only come from what the client sent, else None (a server fault)."""
    # orjson refuses to encode beyond 254 levels ("Recursion limit reached", a TypeError); Python's own recursion
    # limit is the same story for anything else that walks a nested value. Nothing in the proxy recurses on its
    # own data, so both mean a request nested absurdly deep.
    if isinstance(error, RecursionError) or (isinstance(error, TypeError) and str(error) == "Recursion limit reached"):
        return 400, "The request is nested too deeply to be processed."
    return None


def error_body(path: str, status: int, message: str, *, code: str | None, request_id: str) -> bytes:
    """An error body in the format of the front door that `path` belongs to (OpenAI's unless Anthropic's)."""
    if path.startswith(("/v1/messages", "/anthropic/")):
        kind = "api_error" if status >= 500 else "invalid_request_error"
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id})
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


def unexpected_message(request_id: str) -> str:
    return f"The proxy failed on this request (request id {request_id}); its log has the details."
