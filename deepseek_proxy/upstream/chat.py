"""The upstream layer's one entry point: a Chat request in, an iterator of chat events out.

This is the seam between the front doors and the network (as httpx's transport is between its API and its
sockets). Above it nothing knows about sockets, chunked framing, SSE or which upstream quirks apply; below it
nothing knows which client asked.

    events = open_chat(client, chat, model=..., thinking=..., limits=..., should_stop=...)   # may raise ProxyError
    try:
        for event in events:
            batch → the ChatChunks of one network read, in order (an iterator: take them all before the next
                    event; a door writes their events in one write)
            TICK  → the upstream has been silent for `limits.keepalive_interval`: keep the client's idle timer alive
            END   → the reply is complete (the upstream's [DONE], or a finish_reason and a clean end of body)
            Failure(error) → the reply broke; `error` is a neutral ProxyError (nothing follows)
    finally:
        events.close()   # closes the upstream connection at once (a client that left, a shutdown)

`open_chat` applies the profile's clean-up to the request first (`prepare.py`), raises ProxyError when the
upstream refuses it before any reply byte, and serves a non-streaming upstream (`stream = false` in the model's
config) through the same events (`completion_as_chunks`). `complete_chat` is the blocking path: one complete
chat.completion, for clients that did not ask for a stream.

`on_prepared` (both calls) is handed the request exactly as it goes upstream, once, before it is sent: the gate keeps
it on the request's scope, which compares it with the conversation's previous prompt after the reply (prefix-break
detection, core/prefix.py). It must be cheap (it runs before the first byte) and must not modify the body.

`should_stop` is looked at every `limits.poll_interval` seconds while the upstream is silent (a client that
hangs up while tokens flow is noticed by the server's next write): when it says True the events end at once,
without END, and the upstream connection is closed. The relay passes "has the client hung up?" there.

A batch (`type(event) in BATCHES`) is a generator that parses the read's chunks one at a time as they are taken
(measured: holding a read's few hundred parsed chunks at once made parsing 6× slower), or a 1-tuple when the read
held one chunk (a paced stream: no generator per read). A stand-in upstream for
tests plugs into the same place by yielding generators, TICK, END and Failure; `collect()` turns events into
lists for assertions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from types import GeneratorType
from typing import Any

import requests

from ..config import ModelConfig
from ..core.chat import ChatChunk, ChatRequest, completion_as_chunks
from ..core.errors import ErrorKind, ProxyError
from ..jsonfast import JSONDecodeError, loads
from ..ops.keypool import KeyLease, KeyPool, NoKeyAvailable, with_failover
from ..translate.reasoning import ReasoningCache
from .body import iter_body
from .client import UpstreamClient
from .prepare import prepare_request
from .profiles import OpenAICompatibleProfile
from .sse import DONE, KEEPALIVE, SSEDecoder

log = logging.getLogger("deepseek_proxy.upstream")


class _Tick:
    __slots__ = ()

    def __repr__(self) -> str:
        return "TICK"


class _End:
    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


TICK = _Tick()
END = _End()


@dataclass(frozen=True)
class Failure:
    error: ProxyError


BATCHES = frozenset({GeneratorType, tuple})  # the chunks of one network read (a tuple when it held one)
ChatEvent = Any  # batch (an iterator of ChatChunk) | TICK | END | Failure
ChatEvents = Generator[ChatEvent, None, None]


@dataclass(frozen=True)
class StreamLimits:
    keepalive_interval: float = 5.0  # silence before a TICK
    max_bytes: int = 512 * 1024 * 1024  # an upstream reply longer than this fails (TOO_LARGE)
    max_seconds: float = 4 * 3600.0  # ... and one lasting longer than this (TIMEOUT)
    poll_interval: float = 0.5  # how often `should_stop` is asked while the upstream is silent


def open_chat(client: UpstreamClient, chat: ChatRequest, *, model: ModelConfig, thinking: bool,
              cache: ReasoningCache | None = None, client_key: str | None = None,
              limits: StreamLimits = StreamLimits(),
              should_stop: Callable[[], bool] | None = None, keys: KeyPool | None = None,
              on_key: Callable[[str], None] | None = None,
              on_prepared: Callable[[ChatRequest], None] | None = None) -> ChatEvents:
    """Send `chat` (prepared for the upstream's profile) and return its events. Raises ProxyError when the
    upstream refuses the request before any reply byte. `chat["stream"]` chooses a streamed upstream call.

    `keys`: the upstream's key pool: each usable key is tried in turn until one is accepted (failover happens
    here, before the first reply byte, never mid-stream); `on_key` is told the chosen key's source; the key's
    lease is released when the events end. `on_prepared`: see the module docstring."""
    prepared = prepare_request(chat, model=model, profile=client.profile, thinking=thinking, cache=cache)
    if on_prepared is not None:
        on_prepared(prepared)
    response, lease = _send(client, prepared, client_key, keys, on_key)
    if prepared.get("stream"):
        return _streamed(response, client.profile, limits, should_stop, lease)
    return _replayed(response, limits, should_stop, lease)


def complete_chat(client: UpstreamClient, chat: ChatRequest, *, model: ModelConfig, thinking: bool,
                  cache: ReasoningCache | None = None, client_key: str | None = None, keys: KeyPool | None = None,
                  on_key: Callable[[str], None] | None = None,
                  on_prepared: Callable[[ChatRequest], None] | None = None) -> dict:
    """The blocking path: `chat` sent without streaming; the complete chat.completion, or ProxyError."""
    prepared = prepare_request(chat, model=model, profile=client.profile, thinking=thinking, cache=cache)
    if on_prepared is not None:
        on_prepared(prepared)
    response, lease = _send(client, prepared, client_key, keys, on_key)
    try:
        return _completion(response.content)
    except requests.RequestException:
        raise _unreadable() from None
    finally:
        response.close()
        if lease is not None:
            lease.release()


def _send(client: UpstreamClient, prepared: Any, client_key: str | None, keys: KeyPool | None,
          on_key: Callable[[str], None] | None) -> tuple[requests.Response, KeyLease | None]:
    if keys is None:
        return client.post_chat(prepared, client_key=client_key), None
    try:
        response, lease = with_failover(lambda key: client.post_chat(prepared, api_key=key), keys)
    except NoKeyAvailable as exc:
        raise ProxyError(ErrorKind(exc.kind), exc.message, exc.status, retry_after=exc.retry_after) from None
    if on_key is not None:
        on_key(lease.entry.source)
    return response, lease


# ---- below the seam -------------------------------------------------------------------------------------------
_STOPPED = object()  # should_stop said so


def _watched(response: requests.Response, limits: StreamLimits,
             should_stop: Callable[[], bool] | None) -> Iterator[Any]:
    """The body's bytes as they arrive; TICK after each `keepalive_interval` of silence; _STOPPED (and the end)
    once `should_stop` says so, asked every `poll_interval` of silence. Raises ProxyError past the limits."""
    keepalive = limits.keepalive_interval
    wake = min(keepalive, limits.poll_interval) if should_stop is not None else keepalive
    started = quiet_since = time.monotonic()
    received = 0
    for raw in iter_body(response, idle_interval=wake):
        now = time.monotonic()
        if now - started > limits.max_seconds:
            raise _over_time(limits)
        if raw:
            received += len(raw)
            if received > limits.max_bytes:
                raise _over_size(limits)
            quiet_since = now
            yield raw
        elif should_stop is not None and should_stop():
            yield _STOPPED
            return
        elif now - quiet_since >= keepalive:
            quiet_since = now
            yield TICK


def _streamed(response: requests.Response, profile: OpenAICompatibleProfile, limits: StreamLimits,
              should_stop: Callable[[], bool] | None, lease: KeyLease | None = None) -> ChatEvents:
    decoder = SSEDecoder()
    last_tick = time.monotonic()
    # What a batch found while the relay iterated it (see _batch): read once the relay asks for the next event.
    state = _BatchState()
    keepalive = limits.keepalive_interval
    wake = min(keepalive, limits.poll_interval) if should_stop is not None else keepalive
    started = quiet_since = last_tick
    received = 0
    try:
        # What _watched does, inlined: under gevent every generator level between the server and the socket read
        # is one more C frame on each blocked greenlet's saved stack (memory per open stream, and copied at every
        # switch), and this is the path every open stream sits in.
        for raw in iter_body(response, idle_interval=wake):
            now = time.monotonic()
            if now - started > limits.max_seconds:
                raise _over_time(limits)
            if not raw:  # `wake` seconds without a byte
                if should_stop is not None and should_stop():
                    return
                if now - quiet_since >= keepalive:
                    quiet_since = last_tick = now
                    yield TICK
                continue
            received += len(raw)
            if received > limits.max_bytes:
                raise _over_size(limits)
            quiet_since = now
            payloads = decoder.feed(raw)
            if not payloads:
                continue
            if len(payloads) == 1:  # a paced stream: one event per read, no batch generator needed
                chunk = _parse(payloads[0], state, profile)
                if chunk is not None:
                    yield (chunk,)
            else:
                yield _batch(payloads, state, profile)
            if state.failure is not None:
                yield Failure(state.failure)
                return
            if state.keepalive:  # an SSE comment (DeepSeek's ": keep-alive" while a request is queued)
                state.keepalive = False
                if now - last_tick >= keepalive:
                    last_tick = now
                    yield TICK
        # Any OpenAI-compatible server may close the connection right after its last event, without the blank
        # line that ends it: that event still counts.
        payloads = decoder.close()
        if payloads:
            yield _batch(payloads, state, profile)
            if state.failure is not None:
                yield Failure(state.failure)
                return
        if state.saw_done or state.finished:
            yield END
        else:
            yield Failure(ProxyError(ErrorKind.UPSTREAM_UNAVAILABLE,
                                     "The upstream closed the stream before the reply was complete.", 502))
    except ProxyError as error:
        yield Failure(error)
    except requests.RequestException as exc:
        log.warning("upstream stream broke: %s", exc.__class__.__name__)
        yield Failure(ProxyError(ErrorKind.UPSTREAM_UNAVAILABLE, "The upstream connection broke mid-reply.", 502))
    finally:
        response.close()
        if lease is not None:
            lease.release()


class _BatchState:
    __slots__ = ("failure", "finished", "keepalive", "saw_done")

    def __init__(self) -> None:
        self.saw_done = False
        self.finished = False  # a chunk carried a finish_reason (the reply is complete even without [DONE])
        self.keepalive = False
        self.failure: ProxyError | None = None


def _parse(payload: Any, state: _BatchState, profile: OpenAICompatibleProfile) -> ChatChunk | None:
    """One SSE payload: a chunk, or None (a keep-alive, [DONE], or a failure, noted in `state`)."""
    if payload is KEEPALIVE:
        state.keepalive = True
    elif payload == DONE:
        state.saw_done = True
    else:
        try:
            chunk = loads(payload)
        except JSONDecodeError:
            state.failure = ProxyError(ErrorKind.SERVER_ERROR, "The upstream sent a malformed stream chunk.", 502)
            return None
        if chunk.get("error"):
            state.failure = profile.stream_failure(chunk["error"])
            return None
        if not state.finished:
            # Checked as the chunk passes rather than kept for later: keeping the last payloads cost ~2 KiB per
            # open stream (tracemalloc, 200 streams).
            choices = chunk.get("choices")
            if choices and type(choices[0]) is dict and choices[0].get("finish_reason"):
                state.finished = True
        return chunk
    return None


def _batch(payloads: list, state: _BatchState, profile: OpenAICompatibleProfile) -> Iterator[ChatChunk]:
    """The chunks of one network read, parsed one at a time as the relay takes them: each chunk dict is freed
    before the next is parsed (holding a read's few hundred chunks at once made orjson 6× slower, measured)."""
    for payload in payloads:
        chunk = _parse(payload, state, profile)
        if chunk is not None:
            yield chunk
        elif state.failure is not None:
            return


def _replayed(response: requests.Response, limits: StreamLimits,
              should_stop: Callable[[], bool] | None, lease: KeyLease | None = None) -> ChatEvents:
    """A non-streaming upstream: its reply is read whole (ticking through the wait), then replayed as chunks."""
    parts: list[bytes] = []
    try:
        try:
            for raw in _watched(response, limits, should_stop):
                if raw is TICK:
                    yield TICK
                elif raw is _STOPPED:
                    return
                else:
                    parts.append(raw)
            completion = _completion(b"".join(parts))
        except requests.RequestException:
            raise _unreadable() from None
    except ProxyError as error:
        yield Failure(error)
        return
    finally:
        response.close()
        if lease is not None:
            lease.release()
    yield (chunk for chunk in completion_as_chunks(completion))
    yield END


def _completion(data: bytes) -> dict:
    try:
        completion = loads(data)
    except JSONDecodeError:
        raise _unreadable() from None
    if not isinstance(completion, dict) or "choices" not in completion:
        raise ProxyError(ErrorKind.SERVER_ERROR, "The upstream reply is not a chat completion.", 502)
    return completion


def _unreadable() -> ProxyError:
    return ProxyError(ErrorKind.SERVER_ERROR, "The upstream sent an unreadable reply.", 502)


def _over_size(limits: StreamLimits) -> ProxyError:
    return ProxyError(ErrorKind.TOO_LARGE, f"The upstream reply passed this proxy's limit of "
                      f"{limits.max_bytes / 2**20:g} MiB (server.max_upstream_stream_mb) and was cut.", 502)


def _over_time(limits: StreamLimits) -> ProxyError:
    return ProxyError(ErrorKind.TIMEOUT, f"The upstream reply passed this proxy's limit of "
                      f"{limits.max_seconds:g} s (server.max_upstream_stream_seconds) and was cut.", 504)


def chunks_of(events: Iterable[ChatEvent]) -> list[ChatChunk]:
    """Every chunk in a sequence of events, each batch iterated as it comes (for tests and tools)."""
    return [chunk for event in events if type(event) in BATCHES for chunk in event]


def collect(events: ChatEvents) -> list:
    """The events with each batch turned into a list as it comes (for tests)."""
    return [list(event) if type(event) in BATCHES else event for event in events]
