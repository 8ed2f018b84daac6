"""The Gemini API front door: what Gemini CLI and the google-genai SDKs call, on DeepSeek's Chat Completions.

    POST /v1beta/models/{model}:streamGenerateContent   ?alt=sse: data-only SSE of GenerateContentResponse;
                                                        without alt=sse: Google's JSON-array stream ("[{…}\r\n,{…}]")
    POST /v1beta/models/{model}:generateContent         one GenerateContentResponse
    POST /v1beta/models/{model}:countTokens             {"totalTokens": N}, the Messages door's honest estimate
    GET  /v1beta/models, /v1beta/models/{model}         the configured models as Google's Model objects
    (POST /v1/models/{model}:… too; GET /v1/models stays the OpenAI list, which the openai SDK and Codex read.)

Werkzeug has no rule for "a segment that ends in `:method`", so one `<path:target>` rule per prefix takes the rest of
the path and the view splits it on its last colon (model names have none; `models/` inside the name is tolerated).

Data flows as in the Responses door: body → validation (gemini_validation) → model mapping (gemini_models: Gemini
CLI's router / next-speaker / main-loop names by pattern) → translate_gemini_request → upstream.chat → relay() with
`GeminiDoorStream` → bytes out. Auth: `x-goog-api-key`, `?key=` or `Authorization: Bearer` (when the proxy has
client keys), refused in Google's format.

Errors as Gemini CLI acts on them (gemini_errors): an upstream refusal before the first byte is an HTTP status with
Google's error body (429 with a RetryInfo retryDelay, which the CLI waits; 402 and 400 end the run at once); a
failure after the first byte is the bare `{"error": …}` object written as its own write (relay() writes a failure
in a write of its own, after the data before it), which both google-genai SDKs raise, so a cut answer is never
taken for a whole one.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from .. import faults
from ..config import ModelConfig
from ..core.errors import ErrorKind, ProxyError
from ..core.prefix import gemini_conversation_key
from ..jsonfast import dumps
from ..translate.chat_deltas import OVERLOADED_REASON
from ..translate.errors import RequestError
from ..translate.gemini_errors import (
    GeminiError,
    context_overflow_error,
    gemini_error,
    not_found_model_error,
)
from ..translate.gemini_models import (
    GeminiModelChoice,
    gemini_model_list,
    resolve_gemini_model,
    strip_model_prefix,
)
from ..translate.gemini_request import translate_gemini_request
from ..translate.gemini_stream import GeminiStream, encode_sse
from ..translate.gemini_tokens import count_gemini_tokens
from ..translate.messages_tokens import count_chat_tokens
from .common import Gateway, bearer_token, gateway, json_body
from .gate import admit, client_refusal, complete_chat, open_chat, wrong_key
from .gemini_validation import validate_gemini_request
from .relay import SSE_HEADERS, client_gone, client_socket, relay, replay_completion

log = logging.getLogger("deepseek_proxy.gemini")
bp = Blueprint("gemini", __name__)

# How long the relay waits before a mid-stream failure that follows data, so the JS SDK reads the error object in a
# network read of its own (relay.py; the SDK misses it when it shares a read with earlier data). Failure path only.
FAILURE_SETTLE_SECONDS = 0.2
METHODS = ("generateContent", "streamGenerateContent", "countTokens")

# ErrorKind → gemini_errors' neutral kind names.
_KIND: dict[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "invalid_request",
    ErrorKind.AUTHENTICATION: "authentication",
    ErrorKind.PROXY_KEY_MISSING: "authentication",
    ErrorKind.PERMISSION: "permission",
    ErrorKind.NOT_FOUND: "not_found",
    ErrorKind.TOO_LARGE: "request_too_large",
    ErrorKind.CONTEXT_OVERFLOW: "context_overflow",
    ErrorKind.INSUFFICIENT_BALANCE: "billing",
    ErrorKind.RATE_LIMITED: "rate_limit",
    ErrorKind.OVERLOADED: "overloaded",
    ErrorKind.UPSTREAM_UNAVAILABLE: "api_error",
    ErrorKind.TIMEOUT: "timeout",
    ErrorKind.SERVER_ERROR: "api_error",
    ErrorKind.SHUTTING_DOWN: "overloaded",
}


def gemini_kind(error: ProxyError) -> str:
    return _KIND.get(error.kind, "api_error")


def google_response(error: GeminiError) -> Response:
    return Response(dumps(error.body), status=error.status, mimetype="application/json", headers=error.headers)


def google_error(kind: str, message: str, *, retry_after: float | None = None) -> Response:
    return google_response(gemini_error(kind, message, retry_after=retry_after))


def request_error(exc: RequestError) -> Response:
    """A request the translator or the validator refused: 400 INVALID_ARGUMENT (404 for a model), naming the field."""
    kind = "not_found" if exc.status == 404 else "invalid_request"
    return google_error(kind, exc.message)


def upstream_error(error: ProxyError, model: ModelConfig | None = None, input_tokens: Callable[[], int] = lambda: 0,
                   max_tokens: int = 0) -> Response:
    """An upstream refusal before the first byte, as Google's error with the status Gemini CLI acts on.
    `input_tokens` counts the prompt, for a context overflow's numbers only."""
    if error.kind is ErrorKind.CONTEXT_OVERFLOW and model is not None:
        return google_response(context_overflow_error(error.message, input_tokens=input_tokens(),
                                                      max_tokens=max_tokens or 0,
                                                      context_window=model.context_window))
    retry_after = error.retry_after
    if retry_after is None and error.kind is ErrorKind.SHUTTING_DOWN:
        retry_after = 1
    return google_error(gemini_kind(error), error.message, retry_after=retry_after)


# ---- auth --------------------------------------------------------------------------------------------------------

def client_key() -> str | None:
    """The key the client presented: `x-goog-api-key` (google-genai, Gemini CLI), `?key=` (Google's REST form) or
    `Authorization: Bearer`."""
    return request.headers.get("x-goog-api-key") or request.args.get("key") or bearer_token()


@bp.before_request
def _require_key() -> Response | None:
    refusal = client_refusal(client_key())
    if refusal is None:
        return None
    if wrong_key(refusal):
        # Google's own answer to a wrong key; Gemini CLI stops and shows the message.
        return google_error("authentication", "API key not valid. Please pass a valid API key (this proxy's client "
                                              "key, as GEMINI_API_KEY).")
    return upstream_error(refusal)  # revoked, or the key store is down


@bp.errorhandler(Exception)
def _unexpected(error: Exception) -> Response:
    """Anything that escaped a view, in Google's format: a client's input fault is a 400; the proxy's own bug a 500
    whose message carries the request id (the log has the traceback)."""
    rid = faults.request_id(request.environ)
    if isinstance(error, HTTPException):
        if error.code == 413:
            return google_error("request_too_large", "The request body is larger than this proxy accepts "
                                                     "(server.max_body_mb in the config raises the limit).")
        kind = {404: "not_found", 405: "invalid_request"}.get(error.code or 0, "invalid_request")
        return google_error(kind, error.description or error.name)
    if isinstance(error, ProxyError):
        return upstream_error(error)
    fault = faults.input_fault(error)
    if fault is not None:
        log.info("request %s: %s %s refused: %s", rid, request.method, request.path, fault[1])
        return google_error("invalid_request", fault[1])
    log.exception("request %s: unhandled error in %s %s", rid, request.method, request.path)
    return google_error("api_error", faults.unexpected_message(rid))


# ---- routes ------------------------------------------------------------------------------------------------------

@bp.get("/v1beta/models")
def list_models() -> Response:
    return Response(dumps(gemini_model_list(gateway().config.models)), mimetype="application/json")


@bp.get("/v1beta/models/<path:target>")
def get_model(target: str) -> Response:
    gw = gateway()
    name = strip_model_prefix(target)
    choice = _choice(gw, name)
    if choice is None:
        return google_response(not_found_model_error(name))
    entry = gemini_model_list({choice.model.id: choice.model})["models"][0]
    if name != choice.model.id:  # a Gemini name served by a configured model: the name asked for, what serves it
        entry = {**entry, "name": f"models/{name}", "displayName": f"{name} (served by {choice.model.id})"}
    return Response(dumps(entry), mimetype="application/json")


@bp.post("/v1beta/models/<path:target>")
@bp.post("/v1/models/<path:target>")
def model_method(target: str) -> Response:
    name, sep, method = target.rpartition(":")
    if not sep or method not in METHODS:
        return google_error("not_found", f"Unknown method in {request.path!r}: expected models/{{model}}:"
                                         f"{{{'|'.join(METHODS)}}}.")
    name = strip_model_prefix(name)
    if method == "countTokens":
        return _count_tokens(name)
    stream = method == "streamGenerateContent"
    if stream and request.args.get("alt", "json") not in ("sse", "json"):
        return google_error("invalid_request", f"alt={request.args.get('alt')!r}: use alt=sse or alt=json.")
    return _generate(name, stream=stream, sse=request.args.get("alt") == "sse")


def _choice(gw: Gateway, name: str) -> GeminiModelChoice[ModelConfig] | None:
    return resolve_gemini_model(name, gw.config.models, gw.config.gemini.model_patterns)


def _count_tokens(name: str) -> Response:
    gw = gateway()
    choice = _choice(gw, name)
    if choice is None:
        return google_response(not_found_model_error(name))
    try:
        body = json_body()
        model = choice.model
        counted = count_gemini_tokens(body, model, gw.client_for(model).profile, gw.codec)
    except RequestError as exc:
        return request_error(exc)
    return Response(dumps(counted), mimetype="application/json")


def _generate(name: str, *, stream: bool, sse: bool) -> Response:
    gw = gateway()
    started = time.monotonic()
    choice = _choice(gw, name)
    if choice is None:
        return google_response(not_found_model_error(name))
    model = choice.model
    client = gw.client_for(model)
    settings = gw.config.gemini
    try:
        body = json_body()
        validate_gemini_request(body)
        chat = translate_gemini_request(body, model, client.profile, gw.codec, gw.reasoning_cache,
                                        repair=settings.thinking_repair, allow_thinking=choice.thinking_allowed,
                                        upstream_stream=model.stream and stream)
    except RequestError as exc:
        return request_error(exc)
    if "max_tokens" not in chat.body and settings.max_output_tokens:
        # DeepSeek's own default is far below what a coding agent writes in one reply (a whole file in write_file);
        # Gemini's models default to their output limit. A config setting; 0 leaves it to the upstream.
        chat.body["max_tokens"] = min(settings.max_output_tokens, model.max_output_tokens)
    if chat.unknown_fields:
        log.info("ignored request fields: %s", ", ".join(chat.unknown_fields))
    def input_tokens() -> int:
        """The prompt's size as DeepSeek would count it: only for a reply without usage or a context overflow
        (tens of ms for a long history, which the request need not wait for before the upstream sees it)."""
        return count_chat_tokens(chat.body)

    door = GeminiDoorStream(model=name, tool_map=chat.tool_map, codec=gw.codec, input_tokens=input_tokens,
                            thinking=chat.thinking, include_thoughts=chat.include_thoughts, sse=sse)
    done = _Completion(gw, door, started, name, model.id, stream)
    try:
        scope = admit("gemini", model, stream, client_key(),  # the key's model, budget and limits (gate.py)
                      conversation=gemini_conversation_key(body, request.headers))
    except ProxyError as exc:
        done.log(exc.status, f"refused: {exc.kind.value}")
        return upstream_error(exc)
    call: dict[str, Any] = {"model": model, "thinking": chat.thinking, "cache": gw.reasoning_cache,
                            "client_key": client_key(), "scope": scope}
    max_tokens = chat.body.get("max_tokens") or 0
    if not stream:
        door.failure_settle = 0.0  # one JSON answer: no earlier bytes to keep apart from
        try:
            completion = complete_chat(client, chat.body, **call)  # type: ignore[arg-type]
        except ProxyError as exc:
            done.log(exc.status, f"upstream refused: {exc.kind.value}")
            return upstream_error(exc, model, input_tokens, max_tokens)
        replay_completion(completion, door)
        done()
        if door.response is None:  # the upstream ran out of capacity (finish_reason insufficient_system_resource)
            return google_error("overloaded", "The upstream ran out of capacity; try again.", retry_after=1)
        return Response(dumps(door.response), status=200, mimetype="application/json")
    try:
        events = open_chat(client, chat.body, limits=gw.stream_limits,  # type: ignore[arg-type]
                           should_stop=client_gone(request.environ), **call)
    except ProxyError as exc:
        done.log(exc.status, f"upstream refused: {exc.kind.value}")
        return upstream_error(exc, model, input_tokens, max_tokens)
    _no_delay(request.environ)
    mimetype = "text/event-stream" if sse else "application/json"
    return Response(relay(events, door, on_end=done, scope=scope), status=200, mimetype=mimetype, headers=SSE_HEADERS,
                    direct_passthrough=True)


def _no_delay(environ: dict) -> None:
    """Every write of a Gemini stream is a whole event: send each at once (TCP_NODELAY), so the kernel never holds
    a small write back to merge it with the next one (the error object must travel alone, see FAILURE_SETTLE)."""
    sock = client_socket(environ)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass  # not TCP (a unix socket behind nginx): nothing to do


class GeminiDoorStream(GeminiStream):
    """The Gemini stream translator as the relay drives it: failures arrive as neutral errors; `sse` False writes
    Google's JSON-array stream (what streamGenerateContent answers without alt=sse) instead of SSE."""

    failure_settle = FAILURE_SETTLE_SECONDS

    def __init__(self, *, sse: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.sse = sse
        self._opened = False  # JSON-array form: the "[" went out
        self._closed = False

    def fail(self, error: ProxyError | str, message: str | None = None) -> list[dict]:
        if isinstance(error, ProxyError):
            return super().fail(gemini_kind(error), error.message)
        return super().fail(error, message or "")

    def finish(self) -> list[dict]:
        if self.finish_reason == OVERLOADED_REASON and not self.finished:
            time.sleep(self.failure_settle)  # this finish is a failure: the same settle as relay() gives one
        return super().finish()

    def encode(self, objects: list[dict]) -> bytes:
        if self.sse:
            return encode_sse(objects)
        return self._encode_array(objects)

    def _encode_array(self, objects: list[dict]) -> bytes:
        """Google's form: `[{…}` then `\r\n,{…}` per object, `]` after the last (the error object too)."""
        if self._closed:
            return b""
        out = []
        for obj in objects:
            out.append((b"[" if not self._opened else b"\r\n,") + dumps(obj))
            self._opened = True
        if self.finished:
            out.append(b"]" if self._opened else b"[]")
            self._closed = True
        return b"".join(out)


class _Completion:
    """Once a reply is over, however it ended: the reasoning fallback cache and one log line."""

    def __init__(self, gw: Gateway, door: GeminiStream, started: float, requested: str, served: str, stream: bool):
        self.gw, self.door, self.started = gw, door, started
        self.requested, self.served, self.stream = requested, served, stream

    def __call__(self) -> None:
        for key, reasoning in self.door.reasoning_entries():
            self.gw.reasoning_cache.put(key, reasoning)
        final = self.door.response
        if final is None:
            self.log(200, "failed" if self.door.finished else "disconnected")
            return
        usage = final.get("usageMetadata") or {}
        self.log(200, f"{final['candidates'][0].get('finishReason')} in={usage.get('promptTokenCount', '-')} "
                      f"cached={usage.get('cachedContentTokenCount', 0)} out={usage.get('candidatesTokenCount', '-')}"
                      f" thoughts={usage.get('thoughtsTokenCount', 0)}")

    def log(self, status: int, outcome: str) -> None:
        log.info("POST gemini %s %s %s model=%s served=%s stream=%s %.0fms", status, self.door.response_id, outcome,
                 self.requested, self.served, self.stream, (time.monotonic() - self.started) * 1000)
