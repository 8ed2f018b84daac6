"""Responses over WebSocket: GET /v1/responses (and /responses) upgraded, as Codex speaks it with
`supports_websockets = true` (header `openai-beta: responses_websockets=2026-02-06`).

One connection carries many responses, one at a time. The client sends `response.create` text frames: the
Responses request body at the top level of the frame (the `type` beside the body's fields), always streamed.
Each event of the stream goes back as one text frame holding the event's JSON, exactly the events the HTTP door
sends as SSE. Errors before a stream starts are `{"type": "error", "status": N, "error": {...}}` frames: Codex
reads the `status` as the HTTP status it would have had (retrying a 429/5xx, stopping at a 400).

Why clients use it: from the second request on, Codex sends only the new input items with
`previous_response_id` naming the last response of the connection; it does not re-upload a history of megabytes
every turn. The connection remembers the full input and output of the responses it produced (`_History`), so
such a reference is expanded here, locally, into the full conversation (input + output items, reasoning
included) before translation: the upstream, which has no state, gets the whole history as over HTTP. A
reference to a response this connection did not produce (and any `item_reference`) goes to the response store.

`generate: false` is Codex's warm-up: the first frame of a connection carries the prompt and the tools and no
turn yet, and Codex waits for `response.completed` before it sends the turn, with `previous_response_id` naming
the warm-up. It is answered here without calling the upstream: response.created, response.in_progress,
response.completed with no output, remembered like any other response.

How it sits on the server: the view answers 101 through WSGI (gevent's handler sends a 101 without chunked
framing, and writes the body iterable's bytes as they are), and the body iterable is the connection's whole
life (`_Session.run`): it reads the client's frames from the raw socket (`environ["gunicorn.sock"]`) with
wsproto, the sans-I/O WebSocket protocol library, and yields the bytes of the frames to send. Reads bypass the
worker's HTTP read limits (header/body/idle timeouts) by design: an open WebSocket is idle between turns for as
long as the user thinks. Writes keep the worker's send_timeout: a client that takes nothing for that long is gone.

The relay is the HTTP door's, untouched: `_FramedDoor` wraps the door's stream translator and its `encode` turns
a step's events into WebSocket text frames (one per event) instead of SSE bytes; the relay's keep-alive step
becomes a repeated `response.in_progress` frame (Codex's idle timer counts only text frames: its socket layer
answers pings itself) plus a ping frame (for the TCP path and any proxy in between).

The client going away ends the upstream at once: a close frame or EOF seen while the upstream is silent (the
relay's `should_stop`, every 0.5 s), or between two writes while it streams (one poll per write). The server's
graceful stop: an idle connection gets a close frame (1001, "going away") within a second; one with a response
under way gets the grace period, then the relay's retryable `response.failed` and the close frame.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator
from typing import Any, cast

from flask import Blueprint, Response, current_app, request
from werkzeug.datastructures import EnvironHeaders
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.handshake import server_extensions_handshake
from wsproto.utilities import (
    LocalProtocolError,
    RemoteProtocolError,
    generate_accept_token,
)

from ..core.errors import ProxyError
from ..core.prefix import responses_conversation_key
from ..jsonfast import JSONDecodeError, dumps, loads
from ..ops import Ops, ops_for
from ..ops.request import RequestScope
from ..shutdown import ServerShuttingDown
from ..store.base import StoreError
from ..translate.errors import RequestError
from ..translate.responses_request import translate_request
from ..upstream.chat import ChatEvents
from ..upstream.pool import readable_now
from .common import (
    Gateway,
    bearer_token,
    configured_model,
    gateway,
    openai_error,
    openai_type_and_code,
    require_client_key,
)
from .gate import admit, open_chat
from .relay import client_socket, relay
from .responses import ResponsesDoorStream, _Completion, _echo_fields
from .responses_state import expand_stored_context
from .responses_validation import validate_responses_request

log = logging.getLogger("deepseek_proxy.responses_ws")
bp = Blueprint("responses_ws", __name__)
bp.before_request(require_client_key)

# Set by the worker (deepseek_proxy/worker.py, StreamingHandler.get_environ): a callable that says whether the
# server is stopping. Absent elsewhere (then the connection only learns of a stop through ServerShuttingDown).
STOPPING_KEY = "deepseek_proxy.stopping"

IDLE_PING_SECONDS = 20.0  # a ping while no response is under way: keeps NAT and proxies from dropping the socket
STOP_CHECK_SECONDS = 1.0  # how soon an idle connection notices the server's stop
CLOSE_WAIT_SECONDS = 1.0  # after our close frame, how long the client's reply is waited for
KEPT_RESPONSES = 8  # responses one connection remembers (Codex only ever continues the latest)
READ_SIZE = 65536

GOING_AWAY, PROTOCOL_ERROR, UNSUPPORTED_DATA, TOO_BIG = 1001, 1002, 1003, 1009  # close codes (RFC 6455)

_PING = object()  # an event of _FramedDoor.keepalive(): a ping frame rather than a text frame


@bp.get("/v1/responses")
@bp.get("/responses")
def plain_get() -> Response:
    return openai_error(426, "GET /v1/responses is the Responses WebSocket transport: send an `Upgrade: "
                             "websocket` request, or POST /v1/responses.", code="upgrade_required",
                        headers={"Upgrade": "websocket"})


# Werkzeug routes a WebSocket handshake (Upgrade: websocket + Connection: upgrade) only to `websocket=True` rules.
@bp.get("/v1/responses", websocket=True)
@bp.get("/responses", websocket=True)
def responses_websocket() -> Response:
    headers = request.headers
    sock = client_socket(request.environ)
    if sock is None:
        # Not under the proxy's own server (no raw socket to speak WebSocket on): a 426 sends Codex to HTTP at once.
        return openai_error(426, "This server does not offer the WebSocket transport; use POST /v1/responses.",
                            code="websocket_unavailable")
    key = headers.get("Sec-WebSocket-Key", "")
    if headers.get("Sec-WebSocket-Version") != "13" or not key:
        return openai_error(400, "A WebSocket upgrade needs `Sec-WebSocket-Version: 13` and a "
                                 "`Sec-WebSocket-Key`.", code="invalid_websocket_upgrade",
                            headers={"Sec-WebSocket-Version": "13"})
    offers = [offer.strip() for offer in headers.get("Sec-WebSocket-Extensions", "").split(",") if offer.strip()]
    deflate = PerMessageDeflate()
    try:
        accepted = server_extensions_handshake(offers, [deflate]) if offers else None
    except ValueError:  # a malformed offer (e.g. client_max_window_bits=abc): declined, as RFC 7692 allows
        accepted, deflate = None, PerMessageDeflate()
    upgrade = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Accept", generate_accept_token(key.encode("latin-1")).decode("ascii"))]
    if accepted:
        upgrade.append(("Sec-WebSocket-Extensions", accepted.decode("ascii")))
    session = _Session(gateway(), Connection(ConnectionType.SERVER, [deflate] if accepted else []), sock,
                       client_key=bearer_token(), stopping=request.environ.get(STOPPING_KEY))
    # Each response.create is admitted (key, limits) like an HTTP request; the messages run outside this context.
    session.ops, session.environ = ops_for(current_app), request.environ
    log.info("WS %s opened%s", request.path, " (permessage-deflate)" if accepted else "")
    return _Upgrade(session.run(), upgrade)


class _Upgrade(Response):
    """The 101 answer, whose body iterable is the WebSocket connection's life.

    Werkzeug gives an informational (1xx) response an empty body, so the body iterable is handed to the server
    here as it is; and the 101 head is written at once (the WSGI `write` callable with no data), because the
    client sends nothing before it sees the 101 while the iterable's first bytes wait for the client's frames."""

    def __init__(self, frames: Iterator[bytes], headers: list[tuple[str, str]]):
        super().__init__(frames, status=101, headers=headers, direct_passthrough=True)
        del self.headers["Content-Type"]

    def __call__(self, environ, start_response):
        _, status, headers = self.get_wsgi_response(environ)
        start_response(status, headers)(b"")
        return self.response


class _FramedDoor:
    """The seam between the relay and WebSocket: a DoorStream (relay.py's contract) whose `encode` gives
    WebSocket frames, one text frame per event, instead of SSE bytes. The door itself is the HTTP door's."""

    def __init__(self, door: ResponsesDoorStream, session: _Session):
        self.door, self.session = door, session

    def start(self) -> list[Any]:
        return self.door.start()

    def feed(self, chunk: dict) -> list[Any]:
        return self.door.feed(chunk)

    def keepalive(self) -> list[Any]:
        return [*self.door.keepalive(), _PING]

    def finish(self) -> list[Any]:
        return self.door.finish()

    def fail(self, error: ProxyError) -> list[Any]:
        return self.door.fail(error)

    def encode(self, events: list[Any]) -> bytes:
        return self.session.frames(events)


class _History:
    """The responses this connection produced, by id: the full input each was given (previous ones expanded) and
    the output items it sent, so that `previous_response_id` + new items expands without any store."""

    def __init__(self, capacity: int = KEPT_RESPONSES):
        self.capacity = capacity
        self._kept: OrderedDict[str, tuple[list, list]] = OrderedDict()

    def remember(self, response_id: str, input_items: list, output_items: list) -> None:
        self._kept[response_id] = (input_items, output_items)
        self._kept.move_to_end(response_id)
        while len(self._kept) > self.capacity:
            self._kept.popitem(last=False)

    def expand(self, body: dict) -> dict | None:
        """`body` with its input preceded by the named response's input and output, or None when this connection
        does not know that response."""
        kept = self._kept.get(body.get("previous_response_id"))  # type: ignore[arg-type]
        if kept is None:
            return None
        input_items, output_items = kept
        expanded = {key: value for key, value in body.items() if key != "previous_response_id"}
        expanded["input"] = [*input_items, *output_items, *input_items_of(body.get("input"))]
        return expanded


def input_items_of(value: Any) -> list:
    """A request's `input` as a list of items (a string is one user message, as the API defines it)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list):
        return value
    raise RequestError("`input` must be a string or an array of input items", param="input")


def _expand_from_store(body: dict, store: Any) -> dict:
    """What this connection did not produce comes from the response store: a `previous_response_id` stored over
    HTTP, by another connection or by another instance sharing the store, and any `item_reference`. An id the
    store does not hold is the API's 404; a store that cannot be read, a 503 (nothing can be sent without it)."""
    try:
        return expand_stored_context(body, store)
    except StoreError as exc:
        log.warning("WebSocket: the response store could not be read: %s", exc.__class__.__name__)
        raise RequestError("The response store cannot be reached, and this request refers to stored state.",
                           code="store_unavailable", status=503) from None


def error_frame(status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                param: str | None = None, headers: dict[str, str] | None = None) -> dict:
    """The error event of the WebSocket transport: the HTTP error body, with the status it would have had."""
    frame: dict[str, Any] = {"type": "error", "status": status,
                             "error": {"type": type, "code": code, "message": message, "param": param}}
    if headers:
        frame["headers"] = headers
    return frame


def request_error_frame(error: RequestError) -> dict:
    return error_frame(error.status, error.message, code=error.code, param=error.param)


def upstream_error_frame(error: ProxyError) -> dict:
    kind_type, code = openai_type_and_code(error)
    headers = {"retry-after": str(error.retry_after)} if error.retry_after is not None else None
    return error_frame(error.status, error.message, type=kind_type, code=code, param=error.param, headers=headers)


class _ClientGone(Exception):
    """The client closed the connection (a close frame or EOF)."""


class _Session:
    """One WebSocket connection: its frames in and out, and the responses it remembers. Runs in the connection's
    greenlet only, so the wsproto connection is never used from two places at once."""

    def __init__(self, gw: Gateway, ws: Connection, sock: socket.socket, *, client_key: str | None,
                 stopping: Callable[[], bool] | None):
        self.gw, self.ws, self.sock = gw, ws, sock
        self.client_key = client_key
        self.ops: Ops | None = None
        self.environ: dict = {}
        self.stopping = stopping or (lambda: False)
        self.history = _History()
        self.inbox: list[str] = []  # complete text messages not yet handled
        self.outbox = b""  # control frames (pongs) to send with the next write
        self.closed = False  # the client's close frame or EOF has been seen
        self.max_message = gw.config.server.max_body_bytes
        self._partial: list[str] = []
        self._partial_size = 0

    # --- the connection's life ----------------------------------------------------------------------------------

    def run(self) -> Generator[bytes, None, None]:
        try:
            while True:
                text = yield from self._next_message()
                if text is None:
                    if self.outbox:
                        yield self._take_outbox()
                    return
                yield from self._handle(text)
                if self.closed:
                    if self.outbox:
                        yield self._take_outbox()  # the reply to the client's close frame
                    return
        except ServerShuttingDown:
            log.info("WS closed by the server's shutdown")
            yield from self._close(GOING_AWAY, "server restarting")
        except _ClientGone:
            return
        except RemoteProtocolError as exc:
            log.info("WS closed: protocol error from the client: %s", exc)
            yield from self._close(exc.event_hint.code if isinstance(exc.event_hint, CloseConnection)
                                   else PROTOCOL_ERROR, "protocol error")

    def _next_message(self) -> Generator[bytes, None, str | None]:
        """Wait for the client's next complete text message (returned; None when the connection ends). Yields the
        frames to send meanwhile: pongs, an idle ping, and the close frame at the server's stop."""
        last_sent = time.monotonic()
        while not self.inbox:
            if self.closed:
                return None
            if self.stopping():
                yield from self._close(GOING_AWAY, "server restarting")
                return None
            if self.outbox:
                yield self._take_outbox()
                last_sent = time.monotonic()
            now = time.monotonic()
            if now - last_sent >= IDLE_PING_SECONDS:
                yield self.ws.send(Ping(b"idle"))
                last_sent = now
            data = self._recv(min(STOP_CHECK_SECONDS, IDLE_PING_SECONDS - (now - last_sent)))
            if data is not None:
                self._receive(data)
        return self.inbox.pop(0)

    def _close(self, code: int, reason: str) -> Iterator[bytes]:
        """Our close frame, then a short wait for the client's (RFC 6455: the client should close the TCP
        connection first)."""
        if self.ws.state is not ConnectionState.OPEN:
            return
        yield self._take_outbox() + self.ws.send(CloseConnection(code=code, reason=reason))
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        try:
            while not self.closed and (left := deadline - time.monotonic()) > 0:
                data = self._recv(left)
                if data is not None:
                    self._receive(data)
        except (_ClientGone, RemoteProtocolError, OSError):
            pass

    # --- frames in ----------------------------------------------------------------------------------------------

    def _recv(self, wait: float) -> bytes | None:
        """Bytes from the client within `wait` seconds (None if none came); b"" at EOF is handled as gone. The
        socket's own timeout (the worker's send_timeout, for writes) is put back afterwards."""
        sock = self.sock
        resting = sock.gettimeout()
        sock.settimeout(max(wait, 0.001))
        try:
            data = sock.recv(READ_SIZE)
        except TimeoutError:
            return None
        except OSError:
            data = b""
        finally:
            sock.settimeout(resting)
        if not data:
            self.closed = True
            self.ws.receive_data(None)
            raise _ClientGone()
        return data

    def _receive(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self._partial.append(event.data)
                self._partial_size += len(event.data)
                if self._partial_size > self.max_message:
                    self._partial.clear()
                    raise RemoteProtocolError("message too big", event_hint=CloseConnection(code=TOO_BIG))
                if event.message_finished:
                    self.inbox.append("".join(self._partial))
                    self._partial.clear()
                    self._partial_size = 0
            elif isinstance(event, Ping):
                self.outbox += self.ws.send(event.response())
            elif isinstance(event, CloseConnection):
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    self.outbox += self.ws.send(event.response())
                self.closed = True
            elif isinstance(event, BytesMessage):
                raise RemoteProtocolError("binary frames are not part of this protocol",
                                          event_hint=CloseConnection(code=UNSUPPORTED_DATA))
            # Pong: nothing to do

    def client_gone(self) -> bool:
        """The relay's `should_stop` while the upstream is silent, and the check between two writes: what the
        client sent meanwhile, without waiting. A close frame or EOF means stop now."""
        try:
            if not self.closed and readable_now(self.sock):
                self._receive(self._recv(0))  # type: ignore[arg-type]
        except (_ClientGone, RemoteProtocolError, LocalProtocolError, OSError, ValueError):
            self.closed = True
        return self.closed

    # --- frames out ---------------------------------------------------------------------------------------------

    def frames(self, events: list[Any]) -> bytes:
        """Each event as one text frame (a ping frame for _PING), after any pending control frames."""
        ws = self.ws
        out = [self._take_outbox()]
        for event in events:
            if event is _PING:
                out.append(ws.send(Ping(b"keepalive")))
            else:
                out.append(ws.send(TextMessage(dumps(event).decode())))
        return b"".join(out)

    def _take_outbox(self) -> bytes:
        out, self.outbox = self.outbox, b""
        return out

    # --- one response.create ------------------------------------------------------------------------------------

    def _handle(self, text: str) -> Iterator[bytes]:
        try:
            message = loads(text)
        except JSONDecodeError as exc:
            yield self.frames([error_frame(400, f"We could not parse the JSON of your message: {exc}")])
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "response.create":
            yield from self._create(message, len(text))
        elif kind == "response.processed":
            return  # newer Codex acknowledges a response it has taken in; there is nothing to do about it
        else:
            yield self.frames([error_frame(400, f"Unsupported message type {kind!r}: this endpoint takes "
                                                "`response.create`.", code="unsupported_message_type",
                                           param="type")])

    def _create(self, message: dict, frame_size: int) -> Iterator[bytes]:
        gw, started = self.gw, time.monotonic()
        body = {key: value for key, value in message.items() if key not in ("type", "generate", "stream")}
        generate = message.get("generate", True) is not False
        previous_id = body.get("previous_response_id")
        new_items = len(input_items_of(body.get("input"))) if isinstance(body.get("input"), (list, str)) else 0
        try:
            if previous_id is not None:
                if not isinstance(previous_id, str):
                    raise RequestError("`previous_response_id` must be a string", param="previous_response_id")
                body = self.history.expand(body) or body
            body = _expand_from_store(body, gw.store)  # a no-op without previous_response_id or item_reference
            validate_responses_request(body)
            model = configured_model(gw, body)
            client = gw.client_for(model)
            chat = translate_request(body, model, client.profile, gw.codec, upstream_stream=model.stream)
        except RequestError as exc:
            log.info("WS response.create refused: %s %s", exc.status, exc.message)
            yield self.frames([request_error_frame(exc)])
            return
        input_items = input_items_of(body.get("input"))
        log.info("WS response.create frame=%dB input_items=%d new_items=%d previous=%s generate=%s",
                 frame_size, len(input_items), new_items if previous_id else len(input_items), previous_id or "-",
                 generate)
        door = ResponsesDoorStream(model=model.id, tool_map=chat.tool_map, codec=gw.codec,
                                   response_fields={**_echo_fields(body), "previous_response_id": previous_id})
        done = _WsCompletion(gw, door, started, stream=True)
        if not generate:  # the warm-up: a response with no output, to be continued
            yield self.frames(door.start() + door.finish())
            self._remember(door, input_items)
            done()
            return
        try:
            scope = admit("responses_ws", model, True, self.client_key, ops=self.ops, environ=self.environ,
                          conversation=responses_conversation_key(body, EnvironHeaders(self.environ)))
        except ProxyError as exc:  # the key's model, budget or limits: an error frame, as over HTTP
            done.log(exc.status, f"refused: {exc.kind.value}")
            yield self.frames([upstream_error_frame(exc)])
            return
        try:
            events = open_chat(client, chat.body, limits=gw.stream_limits, should_stop=self.client_gone,
                               model=model, thinking=chat.thinking, cache=gw.reasoning_cache,
                               client_key=self.client_key, scope=scope)
        except ProxyError as exc:
            done.log(exc.status, f"upstream refused: {exc.kind.value}")
            if exc.kind.retryable:  # Codex backs off and retries, as after an HTTP 429 / 5xx
                yield self.frames([upstream_error_frame(exc)])
            else:  # retrying cannot fix it: a failed response Codex stops at, as over HTTP (responses.py)
                yield self.frames(door.start() + door.fail(exc))
            return
        yield from self._stream(events, door, done, scope)
        self._remember(door, input_items)

    def _stream(self, events: ChatEvents, door: ResponsesDoorStream, done: _WsCompletion,
                scope: RequestScope | None = None) -> Iterator[bytes]:
        # relay() is a generator: closing it closes the upstream (its finally)
        stream = cast(Generator[bytes, None, None], relay(events, _FramedDoor(door, self), on_end=done,
                                                          scope=scope))
        try:
            for frames in stream:
                yield frames
                if self.client_gone():
                    log.info("WS client left during response %s; upstream closed", door.response_id)
                    return
        finally:
            stream.close()

    def _remember(self, door: ResponsesDoorStream, input_items: list) -> None:
        if door.finished and door.response.get("status") in ("completed", "incomplete"):
            self.history.remember(door.response_id, input_items, door.response.get("output") or [])


class _WsCompletion(_Completion):
    def log(self, status: int, outcome: str) -> None:
        log.info("WS response %s %s %s model=%s %.0fms", self.translator.response_id, status, outcome,
                 self.translator.model, (time.monotonic() - self.started) * 1000)
