"""One relay for every front door: upstream chat events in, the door's own stream bytes out.

A front door is three small pieces around this module (the Agents SDK's `Model` interface has the same shape: one
contract, several implementations):

- a request translator: its client's body → `core.chat.ChatRequest` (pure; e.g. translate/responses_request.py);
- a stream translator implementing `DoorStream` below: chunks → its client's events (a small state machine);
- an error renderer: a neutral `ProxyError` → its client's error format (HTTP body, or an in-stream event).

`relay()` drives any `DoorStream` over the upstream layer's events (`upstream.chat.open_chat`): the start events
at once, the events of one upstream read in one write, a keep-alive on every TICK, the door's terminal event on
END or Failure. It closes the upstream when it ends for any reason: the reply is over, the client went away
(the server closes this generator), or the server stops: the worker raises `ServerShuttingDown` into open
streams once its grace period is over, and the stream ends with a retryable failure (`ErrorKind.SHUTTING_DOWN`)
so the client sends the request again elsewhere instead of keeping a cut answer.

`replay_completion()` is the one blocking path: a complete chat.completion (`upstream.chat.complete_chat`) fed
through the same stream translator, for clients that did not ask for a stream.

A door whose client recognises a mid-stream failure only when it arrives in a network read of its own (the google-genai
JS SDK inside Gemini CLI parses each read as a whole JSON object before its SSE parser) sets `failure_settle` on its
DoorStream: the relay then waits that long before writing the failure, when data went out before it, so the client
has read the earlier bytes and the failure is not coalesced with them (by Nagle or a slow reader). Only the failure
path pays it; doors without the attribute are unchanged.

`client_gone(environ)` gives the upstream layer its `should_stop`: a look at the client's socket, so a client
that hangs up is noticed within a second even while the upstream is silent.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ..core.chat import completion_as_chunks
from ..core.errors import ErrorKind, ProxyError
from ..shutdown import ServerShuttingDown
from ..upstream.chat import BATCHES, END, TICK, ChatEvents, Failure
from ..upstream.pool import readable_now

if TYPE_CHECKING:
    from ..ops.request import RequestScope

log = logging.getLogger("deepseek_proxy.relay")

SHUTDOWN_MESSAGE = "The proxy is shutting down; send the request again."
# Every door's event-stream reply: no cache may keep it, and nginx must pass each event on as it comes.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class DoorStream(Protocol):
    """A front door's stream translator: each method returns the door's events for one step, ready to encode."""

    def start(self) -> list[Any]: ...
    def feed(self, chunk: dict) -> list[Any]: ...
    def keepalive(self) -> list[Any]: ...
    def finish(self) -> list[Any]: ...
    def fail(self, error: ProxyError) -> list[Any]: ...
    def encode(self, events: list[Any]) -> bytes: ...
    # Optional: `failure_settle: float`, seconds to wait before a failure that follows data (module docstring).


def relay(events: ChatEvents, door: DoorStream, *, on_end: Callable[[], None] | None = None,
          scope: RequestScope | None = None) -> Iterator[bytes]:
    """The door's stream for `events`. `on_end` runs once, however the stream ended (logging, caches).

    `scope` (gate.admit): told when the first reply bytes have left (after their write), touched on each upstream
    read (its limit slots stay alive through a long stream), and finished once however the stream ended, with the
    upstream's usage chunk (the last chunk that carried `usage`): usage row, metrics, the request's log line, slots
    released."""
    encode = door.encode
    settle: float = getattr(door, "failure_settle", 0.0)
    wrote = False
    usage: Any = None
    first_sent = False  # the reply's first output (beyond the start events) has left
    status, outcome, error_kind = 499, "client_gone", None
    try:
        first = encode(door.start())
        wrote = bool(first)
        yield first
        for event in events:
            if type(event) in BATCHES:  # the chunks of one upstream read: their events leave in one write ...
                chunks = iter(event)
                if not first_sent:
                    # ... except the reply's first output, which leaves as soon as it is translated, ahead of the
                    # rest of its read (a reply whose start arrives in a burst).
                    for chunk in chunks:
                        if chunk.get("usage"):
                            usage = chunk["usage"]
                        out = door.feed(chunk)
                        if out:
                            wrote = first_sent = True
                            yield encode(out)
                            if scope is not None:
                                # After the write: when the first token left, and its metrics (a histogram
                                # observation, ~50 µs on a process idle through the upstream's wait) are not
                                # between the upstream's first token and the client.
                                scope.first_token()
                            break
                out = []
                if scope is None:
                    for chunk in chunks:
                        out += door.feed(chunk)
                else:
                    for chunk in chunks:
                        out += door.feed(chunk)
                        if chunk.get("usage"):
                            usage = chunk["usage"]
                    scope.touch()
                if out:
                    wrote = True
                    yield encode(out)
            elif event is TICK:
                alive = encode(door.keepalive())
                wrote = wrote or bool(alive)
                yield alive
            elif event is END:
                status, outcome = 200, "completed"
                yield encode(door.finish())
                return
            elif isinstance(event, Failure):
                status, outcome, error_kind = event.error.status, "failed", event.error.kind.value
                if settle and wrote:
                    _settle(settle)
                yield encode(door.fail(event.error))
                return
        # The events stopped without an end: should_stop said the client is gone; there is nobody to tell.
    except ServerShuttingDown:
        status, outcome, error_kind = 503, "shutdown", ErrorKind.SHUTTING_DOWN.value
        events.close()
        log.info("stream ended by the server's shutdown")
        if settle and wrote:
            _settle(settle)
        yield encode(door.fail(ProxyError(ErrorKind.SHUTTING_DOWN, SHUTDOWN_MESSAGE, 503)))
    except GeneratorExit:  # the server closed the stream: the client went away (status stays 499)
        raise
    except BaseException:
        status, outcome = 500, "error"
        raise
    finally:
        events.close()
        try:
            if on_end is not None:
                on_end()
        finally:
            if scope is not None:
                scope.finish(usage=usage, status=status, outcome=outcome, error_kind=error_kind)


def _settle(seconds: float) -> None:
    time.sleep(seconds)  # cooperative under gevent (the worker patches time.sleep)


def replay_completion(completion: dict, door: DoorStream) -> None:
    """The blocking path: a complete chat.completion through the door's stream translator (the same state machine
    as a stream, so the same final object); the door then answers with what it accumulated."""
    door.start()
    for chunk in completion_as_chunks(completion):
        door.feed(chunk)  # type: ignore[arg-type]
    door.finish()


def client_socket(environ: dict) -> socket.socket | None:
    """The client's connection under gunicorn's gevent worker (`gunicorn.sock`), else None."""
    sock = environ.get("gunicorn.sock")
    return sock if hasattr(sock, "fileno") else None


def client_gone(environ: dict) -> Callable[[], bool] | None:
    """A check that the client has hung up: its socket reads as closed (EOF or reset). None when the server does
    not expose the socket. A client that sent more bytes (a pipelined request) is still there."""
    sock = client_socket(environ)
    if sock is None:
        return None

    def gone() -> bool:
        try:
            if sock.fileno() < 0:
                return True
            if not readable_now(sock):
                return False
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except (OSError, ValueError):
            return True

    return gone
