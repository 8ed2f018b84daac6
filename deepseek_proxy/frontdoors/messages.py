"""The Anthropic Messages front door (Claude Code): POST /v1/messages, /v1/messages/count_tokens, HEAD / and GET /.

Also under /anthropic/… (the path DeepSeek's own endpoint uses, so a base URL written for it works here too);
`?beta=true`, which Claude Code adds to every call, changes nothing.

Data flows one way, as in the Responses door: body → validate_messages_request → translate_messages_request (the
door's request translator) → the upstream layer (`upstream.chat`) → `relay()` with `MessagesDoorStream` (the door's
stream translator) → SSE out, with a `ping` through every upstream silence. A client that did not ask for a stream
(Claude Code resends the same body without streaming when a stream broke) gets one blocking upstream call folded
into one Message.

A model whose config says `messages_upstream = "anthropic"` is not translated: the body goes on to the upstream's
own Anthropic endpoint (DeepSeek's `/anthropic/v1/messages`) with only the thinking repair, the billing-header
drop and a message's text in one form however old it is (translate/messages_passthrough.py: what keeps the prefix
cache hitting), and the reply comes back byte for byte.

Errors are Anthropic's, with the status and headers Claude Code acts on (translate/messages_errors.py): 429 with
`retry-after`; a rejected key (the upstream's or this proxy's) and an empty balance with `x-should-retry: false`;
a context overflow as the 400 "input length and `max_tokens` exceed context limit: A + B > C" that makes Claude
Code retry with a smaller max_tokens; the upstream's 503 as 529 overloaded_error; a failure after the stream
started as an `error` event. After every reply the reasoning of its tool calls goes into the reasoning cache,
keyed by the calls' fingerprint: a later request whose history lost the thinking blocks (a resumed session, a
model switch) gets it back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import requests
from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from .. import faults
from ..config import ModelConfig
from ..core.chat import ChatRequest
from ..core.errors import ErrorKind, ProxyError
from ..core.prefix import anthropic_prompt, messages_conversation_key
from ..jsonfast import JSONDecodeError, dumps, loads
from ..ops.request import RequestScope
from ..shutdown import ServerShuttingDown
from ..translate.errors import RequestError
from ..translate.messages_errors import (
    AnthropicError,
    anthropic_error,
    context_overflow_error,
)
from ..translate.messages_models import DEFAULT_MODEL_PATTERNS, resolve_model
from ..translate.messages_passthrough import (
    reasoning_entries_of_message,
    repair_passthrough_body,
)
from ..translate.messages_request import tool_input_object, translate_messages_request
from ..translate.messages_stream import MessagesStream, encode_sse
from ..translate.messages_tokens import count_message_tokens, rough_tokens
from ..upstream.body import iter_body
from ..upstream.client import (
    UpstreamClient,
    parse_retry_after,
    read_error_body,
    readable_error_text,
)
from ..upstream.sse import SSEDecoder
from .common import Gateway, bearer_token, gateway, json_body
from .gate import admit, client_refusal, complete_chat, open_chat, wrong_key
from .messages_validation import validate_messages_request
from .relay import SSE_HEADERS, client_gone, relay, replay_completion

log = logging.getLogger("deepseek_proxy.messages")
bp = Blueprint("messages", __name__)
root_bp = Blueprint("root", __name__)  # HEAD / and GET /: Claude Code's start-up probe, answered without a key

# Request headers of Anthropic's API that the pass-through mode forwards (the upstream may act on them).
_FORWARDED = ("anthropic-version", "anthropic-beta")

# Neutral error kind → the kind messages_errors renders (its KINDS).
_KINDS: dict[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "invalid_request",
    ErrorKind.AUTHENTICATION: "authentication",
    ErrorKind.PROXY_KEY_MISSING: "authentication",  # no retry can help until the operator gives the proxy a key
    ErrorKind.PERMISSION: "permission",
    ErrorKind.NOT_FOUND: "not_found",
    ErrorKind.TOO_LARGE: "request_too_large",
    ErrorKind.CONTEXT_OVERFLOW: "context_overflow",
    ErrorKind.INSUFFICIENT_BALANCE: "billing",
    ErrorKind.RATE_LIMITED: "rate_limit",
    ErrorKind.OVERLOADED: "overloaded",  # DeepSeek's 503 → 529, which Claude Code retries
    ErrorKind.UPSTREAM_UNAVAILABLE: "api_error",
    ErrorKind.TIMEOUT: "timeout",
    ErrorKind.SERVER_ERROR: "api_error",
    ErrorKind.SHUTTING_DOWN: "overloaded",
}


def _require_client_key() -> Response | None:
    """The proxy's own client-key check, answered in Anthropic's format (Claude Code reads no OpenAI body)."""
    refusal = client_refusal(bearer_token())
    if refusal is None:
        return None
    if wrong_key(refusal):
        return _render(anthropic_error("authentication", "Incorrect API key provided for this proxy "
                                       "(send one of its client keys as x-api-key or Authorization: Bearer).",
                                       request_id=_rid()))
    return _render(_upstream_error(refusal, None))  # revoked, or the key store is down


bp.before_request(_require_client_key)


@root_bp.route("/", methods=["GET", "HEAD"])
def root() -> Response:
    return Response(dumps({"service": "deepseek-proxy"}), status=200, mimetype="application/json")


# ---- POST /v1/messages -----------------------------------------------------------------------------------------


@bp.post("/v1/messages")
@bp.post("/anthropic/v1/messages")
def create_message() -> Response:
    gw = gateway()
    started = time.monotonic()
    try:
        body = json_body()
        validate_messages_request(body)
        model = _model_of(gw, body)
    except RequestError as exc:
        return _request_error(exc)
    client = gw.client_for(model)
    stream = bool(body.get("stream", False))
    if model.messages_upstream == "anthropic":
        return _passthrough(gw, client, model, body, stream, started)
    try:
        chat = translate_messages_request(body, model, client.profile, gw.codec, gw.reasoning_cache,
                                          repair=gw.config.claude.thinking_repair,
                                          upstream_stream=model.stream and stream)
    except RequestError as exc:
        return _request_error(exc)
    if chat.dropped_tools:
        log.info("dropped server tools the upstream cannot run: %s", ", ".join(chat.dropped_tools))
    if chat.repaired_turns:
        log.info("repaired %d assistant turn(s) without thinking (messages %s)", len(chat.repaired_turns),
                 ",".join(map(str, chat.repaired_turns)))

    chat_body = cast(ChatRequest, chat.body)  # built in the hub form's key order (core/chat.py)
    upstream_bytes = len(dumps(chat_body))
    door = MessagesDoorStream(model=body["model"], tool_map=chat.tool_map, codec=gw.codec,
                              input_tokens=rough_tokens(upstream_bytes), thinking=chat.thinking,
                              stop_sequences=chat.stop_sequences)
    done = _Completion(gw, door, model, started, stream)
    overflow = _OverflowNumbers(input_tokens=door.input_estimate, max_tokens=chat.body.get("max_tokens", 0),
                                context_window=model.context_window)
    try:
        scope = admit("messages", model, stream, bearer_token(),  # the key's model, budget and limits (gate.py)
                      conversation=messages_conversation_key(body, request.headers))
    except ProxyError as exc:
        done.log(exc.status, f"refused: {exc.kind.value}")
        return _render(_upstream_error(exc, None))
    upstream_call: dict[str, Any] = {"model": model, "thinking": chat.thinking, "cache": gw.reasoning_cache,
                                     "client_key": bearer_token(), "scope": scope}
    if not stream:
        try:
            completion = complete_chat(client, chat_body, **upstream_call)
        except ProxyError as exc:
            done.log(exc.status, f"upstream refused: {exc.kind.value}")
            return _render(_upstream_error(exc, overflow))
        replay_completion(completion, door)
        done()
        if door.message is None:  # the upstream ran out of capacity while it answered
            return _render(anthropic_error("overloaded", door.failure or "The upstream failed mid-reply.",
                                           request_id=_rid()))
        return Response(dumps(door.message), status=200, mimetype="application/json")

    try:
        events = open_chat(client, chat_body, limits=gw.stream_limits, should_stop=client_gone(request.environ),
                           **upstream_call)
    except ProxyError as exc:
        done.log(exc.status, f"upstream refused: {exc.kind.value}")
        # Before the first byte, Anthropic answers with an HTTP error too: Claude Code retries or stops by status.
        return _render(_upstream_error(exc, overflow))
    return Response(relay(events, door, on_end=done, scope=scope), status=200, mimetype="text/event-stream",
                    headers=SSE_HEADERS, direct_passthrough=True)


@bp.post("/v1/messages/count_tokens")
@bp.post("/anthropic/v1/messages/count_tokens")
def count_tokens() -> Response:
    """An honest estimate of the input tokens (translate/messages_tokens.py): the request as the upstream would
    read it once translated. The same estimate serves the pass-through mode."""
    gw = gateway()
    try:
        body = json_body()
        validate_messages_request(body, count_tokens=True)
        model = _model_of(gw, body)
        tokens = count_message_tokens(body, model, gw.client_for(model).profile, gw.codec)
    except RequestError as exc:
        return _request_error(exc)
    return Response(dumps({"input_tokens": tokens}), status=200, mimetype="application/json")


class MessagesDoorStream(MessagesStream):
    """The Messages stream translator as the relay drives it: failures arrive as neutral errors."""

    failure: str | None = None

    def fail(self, error: ProxyError | str, message: str | None = None) -> list[dict]:
        if isinstance(error, ProxyError):
            kind, message = _KINDS.get(error.kind, "api_error"), error.message
        else:
            kind = error
        self.failure = message
        return super().fail(kind, message or "")

    encode = staticmethod(encode_sse)


# ---- errors ------------------------------------------------------------------------------------------------------


class _OverflowNumbers:
    """What the context-overflow message needs from the request when the upstream's text does not state it."""

    def __init__(self, *, input_tokens: int, max_tokens: int, context_window: int):
        self.input_tokens, self.max_tokens, self.context_window = input_tokens, max_tokens, context_window


def _upstream_error(error: ProxyError, overflow: _OverflowNumbers | None) -> AnthropicError:
    if error.kind is ErrorKind.CONTEXT_OVERFLOW and overflow is not None:
        return context_overflow_error(error.message, input_tokens=overflow.input_tokens,
                                      max_tokens=overflow.max_tokens, context_window=overflow.context_window,
                                      request_id=_rid())
    return anthropic_error(_KINDS.get(error.kind, "api_error"), error.message, retry_after=error.retry_after,
                           request_id=_rid())


def _render(error: AnthropicError) -> Response:
    return Response(dumps(error.body), status=error.status, mimetype="application/json", headers=error.headers)


def _request_error(error: RequestError) -> Response:
    kind = {404: "not_found", 413: "request_too_large"}.get(error.status, "invalid_request")
    return _render(anthropic_error(kind, error.message, request_id=_rid()))


def _rid() -> str:
    return faults.request_id(request.environ)


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Response:
    """Size and method errors raised inside this door's views, in Anthropic's format."""
    if error.code == 413:
        return _render(anthropic_error("request_too_large", "The request body is larger than this proxy accepts "
                                       "(server.max_body_mb in the config raises the limit).", request_id=_rid()))
    kind = {401: "authentication", 403: "permission", 404: "not_found", 429: "rate_limit"}.get(error.code or 0)
    if kind is None:
        kind = "api_error" if (error.code or 500) >= 500 else "invalid_request"
    return _render(anthropic_error(kind, error.description or error.name, request_id=_rid()))


@bp.errorhandler(ProxyError)
def _proxy_error(error: ProxyError) -> Response:
    return _render(_upstream_error(error, None))


@bp.errorhandler(Exception)
def _unexpected_error(error: Exception) -> Response:
    """Whatever else escaped a view: what only the client's input can cause is a 400, the server's stop a
    retryable 529, anything else the proxy's own fault, an api_error that carries the request id."""
    rid = _rid()
    fault = faults.input_fault(error)
    if fault is not None:
        log.info("request %s: %s %s refused: %s", rid, request.method, request.path, fault[1])
        return _render(anthropic_error("invalid_request", fault[1], request_id=rid))
    if isinstance(error, ServerShuttingDown):
        return _render(anthropic_error("overloaded", "The proxy is restarting; try again.", retry_after=1,
                                       request_id=rid))
    log.exception("request %s: unhandled error in %s %s", rid, request.method, request.path)
    return _render(anthropic_error("api_error", faults.unexpected_message(rid), request_id=rid))


# ---- models ------------------------------------------------------------------------------------------------------


def _model_of(gw: Gateway, body: dict) -> ModelConfig:
    name = body.get("model")
    patterns = (*gw.config.claude.model_map, *DEFAULT_MODEL_PATTERNS)
    model = resolve_model(name, gw.config.models, patterns) if isinstance(name, str) else None
    if model is None:
        raise RequestError(f"model: {name!r} is not served here. Models served: {', '.join(gw.config.models)}; "
                           f"Claude model names are mapped by [claude] model_map in the proxy's config.",
                           param="model", status=404)
    return model


class _Completion:
    """What happens once a reply is over, however it ended: the reasoning cache and one log line."""

    def __init__(self, gw: Gateway, door: MessagesStream, model: ModelConfig, started: float, stream: bool):
        self.gw, self.door, self.model, self.started, self.stream = gw, door, model, started, stream

    def __call__(self) -> None:
        for key, reasoning in self.door.reasoning_entries():
            self.gw.reasoning_cache.put(key, reasoning)
        message = self.door.message
        if message is None:
            self.log(200, "failed" if self.door.finished else "disconnected")
            return
        usage = message["usage"]
        self.log(200, f"{message['stop_reason']} in={usage['input_tokens']} "
                      f"cached={usage['cache_read_input_tokens']} out={usage['output_tokens']}")

    def log(self, status: int, outcome: str) -> None:
        log.info("POST /v1/messages %s %s model=%s→%s stream=%s %s %.0fms", status, self.door.message_id,
                 self.door.model, self.model.id, self.stream, outcome, (time.monotonic() - self.started) * 1000)


# ---- the pass-through mode ---------------------------------------------------------------------------------------


def anthropic_url(client: UpstreamClient) -> str:
    """The upstream's Anthropic Messages URL: DeepSeek serves it under /anthropic next to its OpenAI base URL."""
    base = client.config.base_url.rstrip("/")
    base = base.removesuffix("/v1")
    return base + "/anthropic/v1/messages"


def _passthrough(gw: Gateway, client: UpstreamClient, model: ModelConfig, body: dict, stream: bool,
                 started: float) -> Response:
    sent, repaired = repair_passthrough_body(body, gw.reasoning_cache, repair=gw.config.claude.thinking_repair)
    if repaired:
        log.info("pass-through: repaired %d assistant turn(s) without thinking (messages %s)", len(repaired),
                 ",".join(map(str, repaired)))
    sent = {**sent, "model": model.upstream_model or model.id}
    try:  # the same gate as the translating mode: the key's model, budget and limits (gate.py)
        scope = admit("messages", model, stream, bearer_token(),
                      conversation=messages_conversation_key(body, request.headers))
    except ProxyError as exc:
        return _render(_upstream_error(exc, None))
    scope.prompt = lambda: anthropic_prompt(sent)  # for the prefix-break detector, built after the reply
    try:
        headers = client._headers(bearer_token())  # the same key rules as every other upstream call
    except ProxyError as exc:
        scope.finish(usage=None, status=exc.status, outcome="refused", error_kind=exc.kind.value)
        return _render(_upstream_error(exc, None))
    if "Authorization" in headers:
        headers = {"x-api-key": headers["Authorization"][len("Bearer "):]}
    headers.update({name: request.headers[name] for name in _FORWARDED if name in request.headers})
    headers.setdefault("anthropic-version", "2023-06-01")
    try:
        response = client.session.post(anthropic_url(client), data=dumps(sent), headers=headers, stream=stream,
                                       verify=client.verify,
                                       timeout=(client.config.connect_timeout, client.config.read_timeout))
    except (requests.Timeout, requests.ConnectionError) as exc:
        error = client.transport_error(exc)  # the same words, and TLS diagnosis, as the translating mode
        scope.finish(usage=None, status=error.status, outcome="refused", error_kind=error.kind.value)
        return _render(_upstream_error(error, None))
    label = f"POST /v1/messages (pass-through) model={body.get('model')}→{model.id} stream={stream}"
    if response.status_code >= 400:
        try:
            error = _passthrough_error(client, response)
        finally:
            response.close()
        log.info("%s %s upstream refused: %s %.0fms", label, error.status, error.kind.value,
                 (time.monotonic() - started) * 1000)
        scope.finish(usage=None, status=error.status, outcome="refused", error_kind=error.kind.value)
        overflow = _OverflowNumbers(input_tokens=rough_tokens(len(dumps(sent))),
                                    max_tokens=int(body.get("max_tokens") or 0), context_window=model.context_window)
        return _render(_upstream_error(error, overflow))
    if not stream:
        try:
            data = response.content
        except requests.RequestException:
            scope.finish(usage=None, status=502, outcome="failed", error_kind=ErrorKind.UPSTREAM_UNAVAILABLE.value)
            return _render(anthropic_error("api_error", "The upstream connection broke mid-reply.",
                                           request_id=_rid()))
        finally:
            response.close()
        try:
            message = loads(data)
        except JSONDecodeError:
            message = None
        if isinstance(message, dict):
            for key, reasoning in reasoning_entries_of_message(message):
                gw.reasoning_cache.put(key, reasoning)
        log.info("%s 200 %.0fms", label, (time.monotonic() - started) * 1000)
        scope.first_token()
        scope.finish(usage=anthropic_usage(message.get("usage") if isinstance(message, dict) else None), status=200,
                     outcome="completed")
        return Response(data, status=200, mimetype="application/json")
    return Response(_relay_bytes(gw, response, label, started, client_gone(request.environ), scope), status=200,
                    mimetype="text/event-stream", headers=SSE_HEADERS, direct_passthrough=True)


def anthropic_usage(usage: Any) -> dict | None:
    """An Anthropic `usage` as the usage record reads it: input counts every prompt token (Anthropic's
    input_tokens leaves out the cached and cache-written ones), cached the cache reads."""
    if not isinstance(usage, dict):
        return None
    cached = int(usage.get("cache_read_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cached + int(usage.get("cache_creation_input_tokens") or 0)
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": int(usage.get("output_tokens") or 0)}


def _passthrough_error(client: UpstreamClient, response: requests.Response) -> ProxyError:
    """The upstream's refusal as a neutral error: its Anthropic error body (or OpenAI's, or text) read for the
    message, the status classified by the profile, as every other upstream error is."""
    raw = read_error_body(response)
    message = readable_error_text(raw, response.status_code, response.reason)
    try:
        parsed = loads(raw)
        inner = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(inner, dict) and inner.get("message"):
            message = str(inner["message"])
    except JSONDecodeError:
        pass
    error = client.profile.classify_error(response.status_code, message, None)
    if response.status_code in (429, 503, 529):
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        error.retry_after = retry_after if retry_after is not None else client.retry_after
    return error


def _relay_bytes(gw: Gateway, response: requests.Response, label: str, started: float,
                 should_stop: Callable[[], bool] | None, scope: RequestScope | None = None) -> Iterator[bytes]:
    """The upstream's SSE as it comes, byte for byte; its thinking and tool calls are read on the side for the
    reasoning cache. Through an upstream silence a `ping` event is slipped in between two events (never inside
    one, never before message_start), as the translating mode sends; a client that hangs up meanwhile is noticed.
    A break mid-reply ends the stream with an `error` event."""
    reader = _PassthroughReader()
    limits = gw.stream_limits
    keepalive = limits.keepalive_interval
    wake = min(keepalive, limits.poll_interval) if should_stop is not None else keepalive
    quiet_since = time.monotonic()
    outcome = "disconnected"
    first = True
    try:
        for raw in iter_body(response, idle_interval=wake):
            now = time.monotonic()
            if raw:
                reader.feed(raw)
                quiet_since = now
                if scope is not None:
                    if first:
                        first = False
                        scope.first_token()
                    scope.touch()
                yield raw
            elif should_stop is not None and should_stop():
                return
            elif now - quiet_since >= keepalive and reader.between_events and reader.started:
                quiet_since = now
                yield PING
        reader.close()
        outcome = "complete" if reader.stopped else "cut short"
    except requests.RequestException:
        outcome = "broken"
        yield encode_sse([{"type": "error", "error": {"type": "api_error",
                                                      "message": "The upstream connection broke mid-reply."}}])
    finally:
        response.close()
        for key, reasoning in reader.reasoning_entries():
            gw.reasoning_cache.put(key, reasoning)
        log.info("%s 200 %s %.0fms", label, outcome, (time.monotonic() - started) * 1000)
        if scope is not None:
            finished = outcome == "complete"
            scope.finish(usage=anthropic_usage(reader.usage), status=200 if finished else 499 if
                         outcome == "disconnected" else 502, outcome="completed" if finished else outcome)


PING = encode_sse([{"type": "ping"}])


class _PassthroughReader:
    """Reads an Anthropic SSE stream on the side: the thinking text and the tool calls of the reply."""

    def __init__(self) -> None:
        self.decoder = SSEDecoder()
        self.blocks: dict[int, dict[str, Any]] = {}
        self.started = False  # message_start went by
        self.stopped = False
        self.between_events = True  # the bytes so far end with a whole event (a blank line)
        self.usage: dict[str, Any] = {}  # message_start's usage, updated by message_delta's (output tokens)

    def feed(self, raw: bytes) -> None:
        self.between_events = raw.endswith((b"\n\n", b"\r\n\r\n", b"\r\r"))
        for payload in self.decoder.feed(raw):
            self._event(payload)

    def close(self) -> None:
        for payload in self.decoder.close():
            self._event(payload)

    def _event(self, payload: Any) -> None:
        if not isinstance(payload, bytes):
            return
        try:
            event = loads(payload)
        except JSONDecodeError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "message_start":
            self.started = True
            message = event.get("message")
            if isinstance(message, dict) and isinstance(message.get("usage"), dict):
                self.usage.update(message["usage"])
        elif kind == "message_delta" and isinstance(event.get("usage"), dict):
            self.usage.update({k: v for k, v in event["usage"].items() if v is not None})
        elif kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            block = event["content_block"]
            index = event.get("index")
            self.blocks[index if isinstance(index, int) else len(self.blocks)] = {
                "type": block.get("type"), "id": block.get("id"), "name": block.get("name"), "parts": []}
        elif kind == "content_block_delta" and isinstance(event.get("delta"), dict):
            index = event.get("index")
            block = self.blocks.get(index) if isinstance(index, int) else None
            delta = event["delta"]
            if block is not None:
                piece = delta.get("thinking") if delta.get("type") == "thinking_delta" else delta.get("partial_json")
                if isinstance(piece, str):
                    block["parts"].append(piece)
        elif kind == "message_stop":
            self.stopped = True

    def reasoning_entries(self) -> list[tuple[str, str]]:
        blocks = [self.blocks[i] for i in sorted(self.blocks)]
        content: list[dict[str, Any]] = []
        for block in blocks:
            text = "".join(block["parts"])
            if block["type"] == "thinking":
                content.append({"type": "thinking", "thinking": text})
            elif block["type"] == "tool_use":
                content.append({"type": "tool_use", "id": block["id"], "name": block["name"],
                                "input": tool_input_object(text)})
        return reasoning_entries_of_message({"content": content})
