"""The Responses API front door: POST /v1/responses (and /responses), streamed or not.

Data flows one way: body → translate_request (the door's request translator) → the upstream layer
(`upstream.chat`: clean-up, send, chat events) → `relay()` with `ResponsesDoorStream` (the door's stream
translator) → SSE out. Every upstream delta is written to the client as soon as its read returns; events from one
network read leave in one write.

Errors as Codex acts on them (Codex 0.169, measured with the real CLI; see tests/e2e):
- streamed request, an upstream refusal that retrying cannot fix (balance, key rejected or missing, invalid
  request, context too long): a 200 SSE stream, response.created … response.failed with a code Codex stops at at
  once: `context_length_exceeded` (Codex then says its context window is full), otherwise `invalid_prompt`, the
  one final code for which Codex shows the error's own message (for `insufficient_quota` it prints a canned
  "Quota exceeded" text instead of DeepSeek's words, for `server_is_overloaded` "Selected model is at capacity";
  both stop at once too);
- retryable refusals (429 with retry-after, 5xx) stay HTTP statuses: Codex backs off and retries those;
- non-streamed requests always get the HTTP status with an OpenAI error body;
- a stream cut by the server's shutdown ends with `server_error`, which Codex retries.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Response, request

from ..config import ModelConfig
from ..core.errors import ErrorKind, ProxyError
from ..jsonfast import dumps
from ..translate.errors import RequestError
from ..translate.responses_request import translate_request
from ..translate.responses_stream import ResponseStream
from ..upstream.chat import complete_chat, open_chat
from ..upstream.sse import encode_events
from .common import (
    Gateway,
    bearer_token,
    gateway,
    json_body,
    request_error_response,
    require_client_key,
    upstream_error_response,
)
from .relay import client_gone, relay, replay_completion
from .responses_validation import validate_responses_request

log = logging.getLogger("deepseek_proxy.responses")
bp = Blueprint("responses", __name__)
bp.before_request(require_client_key)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

# Codex stops at once on these codes (any other response.failed code is retried with backoff).
FINAL_CODE = "invalid_prompt"  # ... and shows the error's own message
CONTEXT_CODE = "context_length_exceeded"


@bp.post("/v1/responses")
@bp.post("/responses")
def create_response() -> Response:
    gw = gateway()
    started = time.monotonic()
    try:
        body = json_body()
        validate_responses_request(body)
        model = _model_of(gw, body)
        client = gw.client_for(model)
        stream = bool(body.get("stream", False))
        # A non-streaming client gets a blocking upstream call: one JSON parse, not one per token.
        chat = translate_request(body, model, client.profile, gw.codec, upstream_stream=model.stream and stream)
    except RequestError as exc:
        return request_error_response(exc)
    if chat.tool_map.dropped:
        log.info("dropped hosted tools the upstream cannot run: %s", ", ".join(chat.tool_map.dropped))

    door = ResponsesDoorStream(model=model.id, tool_map=chat.tool_map, codec=gw.codec,
                               response_fields=_echo_fields(body))
    done = _Completion(gw, door, started, stream)
    upstream_call: dict[str, Any] = {"model": model, "thinking": chat.thinking, "cache": gw.reasoning_cache,
                                     "client_key": bearer_token()}
    if not stream:
        try:
            completion = complete_chat(client, chat.body, **upstream_call)
        except ProxyError as exc:
            done.log(exc.status, exc.message)
            return upstream_error_response(exc)
        replay_completion(completion, door)
        done()
        return Response(dumps(door.response), status=200, mimetype="application/json")

    try:
        events = open_chat(client, chat.body, limits=gw.stream_limits, should_stop=client_gone(request.environ),
                           **upstream_call)
    except ProxyError as exc:
        done.log(exc.status, f"upstream refused: {exc.kind.value}")
        if exc.kind.retryable:
            return upstream_error_response(exc)  # Codex backs off and retries an HTTP 429 / 5xx
        # Retrying cannot fix it: a failed response Codex stops at, with the upstream's words.
        return Response(encode_events(door.start() + door.fail(exc)), status=200, mimetype="text/event-stream",
                        headers=SSE_HEADERS)
    # direct_passthrough: the generator already yields bytes, so the server iterates it as it is, with no
    # re-encoding layers between an upstream read and the socket write (and closes it when the client goes).
    return Response(relay(events, door, on_end=done), status=200, mimetype="text/event-stream",
                    headers=SSE_HEADERS, direct_passthrough=True)


class ResponsesDoorStream(ResponseStream):
    """The Responses stream translator as the relay drives it: failures arrive as neutral errors."""

    def fail(self, error: ProxyError | str, message: str | None = None) -> list[dict]:  # type: ignore[override]
        if isinstance(error, ProxyError):
            return super().fail(stream_failure_code(error), error.message)
        return super().fail(error, message or "")

    encode = staticmethod(encode_events)


def stream_failure_code(error: ProxyError) -> str:
    """The `response.failed` code for a neutral error: what Codex does with it decides (module docstring)."""
    if error.kind is ErrorKind.CONTEXT_OVERFLOW:
        return CONTEXT_CODE
    if not error.kind.retryable:
        return FINAL_CODE
    if error.kind is ErrorKind.RATE_LIMITED:
        return "rate_limit_exceeded"
    if error.kind in (ErrorKind.OVERLOADED, ErrorKind.SHUTTING_DOWN):
        return "server_error"  # Codex does not retry server_is_overloaded: it tells the user to switch models
    return error.upstream_code or "server_error"  # retried by Codex (the upstream's own code, as it came)


def _model_of(gw: Gateway, body) -> ModelConfig:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    name = body.get("model")
    if not isinstance(name, str):
        raise RequestError("`model` is required and must be a string", param="model")
    model = gw.config.model(name)
    if model is None:
        raise RequestError(f"The model `{name}` does not exist or you do not have access to it. "
                           f"Models served here: {', '.join(gw.config.models)}.",
                           param="model", code="model_not_found", status=404)
    return model


class _Completion:
    """What happens once a reply is over, however it ended: the reasoning fallback cache and one log line."""

    def __init__(self, gw: Gateway, translator: ResponseStream, started: float, stream: bool):
        self.gw, self.translator, self.started, self.stream = gw, translator, started, stream

    def __call__(self) -> None:
        translator = self.translator
        for call_id, reasoning in translator.calls_with_reasoning():
            self.gw.reasoning_cache.put(call_id, reasoning)
        final = translator.response if translator.finished else {"status": "disconnected", "usage": None}
        usage = final.get("usage") or {}
        self.log(200, f"{final['status']} in={usage.get('input_tokens', '-')} "
                      f"cached={(usage.get('input_tokens_details') or {}).get('cached_tokens', '-')} "
                      f"out={usage.get('output_tokens', '-')}")

    def log(self, status: int, outcome: str) -> None:
        log.info("POST /v1/responses %s %s model=%s stream=%s %s %.0fms", status, self.translator.response_id,
                 self.translator.model, self.stream, outcome, (time.monotonic() - self.started) * 1000)


def _echo_fields(body: dict) -> dict:
    """Request settings the Response object repeats back (the openai SDK's Response model requires several)."""
    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "temperature": body.get("temperature"),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": body.get("truncation", "disabled"),
    }
