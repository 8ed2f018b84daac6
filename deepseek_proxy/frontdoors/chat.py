"""The Chat Completions front door: POST /v1/chat/completions (and /chat/completions), streamed or not, for any
OpenAI-compatible client (Cline, Continue, Aider, the openai SDK).

The proof that the seam holds: the hub form is Chat Completions, so this door is the relay plus a near-identity
request translator (translate/chat_request.py), a near-identity stream translator (translate/chat_stream.py) and
the OpenAI error renderer every OpenAI-style door shares (common.py). What it gets from the shared layers, as every
door does: the profile's clean-up (DeepSeek's reasoning replay, every tool call answered, tool names, strict /
parallel_tool_calls per profile, max_tokens clamped), keep-alive ticks, stream limits, the shutdown's end and the
client hang-up check.

Errors: before the first byte, the upstream's status with an OpenAI error body (402 `insufficient_quota`, 429
`rate_limit_exceeded` with retry-after, context overflow `context_length_exceeded`), for streamed requests too:
OpenAI-compatible clients retry on the status. After the first byte: one `data: {"error": {...}}` event, then the
stream ends (the openai SDK raises APIError; a stream cut by the server's shutdown says `server_error`, retryable).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Response, request

from ..core.errors import ProxyError
from ..jsonfast import dumps
from ..translate.chat_request import translate_chat_request
from ..translate.chat_stream import ChatCompletionStream, client_completion
from ..translate.errors import RequestError
from .chat_validation import validate_chat_request
from .common import (
    Gateway,
    bearer_token,
    configured_model,
    gateway,
    json_body,
    openai_type_and_code,
    request_error_response,
    require_client_key,
    upstream_error_response,
)
from .gate import admit, complete_chat, open_chat
from .relay import SSE_HEADERS, client_gone, relay

log = logging.getLogger("deepseek_proxy.chat")
bp = Blueprint("chat", __name__)
bp.before_request(require_client_key)


@bp.post("/v1/chat/completions")
@bp.post("/chat/completions")
def create_chat_completion() -> Response:
    gw = gateway()
    started = time.monotonic()
    try:
        body = json_body()
        validate_chat_request(body)
        model = configured_model(gw, body)
        client = gw.client_for(model)
        stream = bool(body.get("stream"))
        # A client that did not ask for a stream gets a blocking upstream call: one JSON parse, not one per token.
        chat = translate_chat_request(body, model, client.profile, upstream_stream=model.stream and stream)
    except RequestError as exc:
        return request_error_response(exc)
    if chat.dropped:
        log.debug("accepted, not forwarded: %s", ", ".join(chat.dropped))

    door = ChatCompletionStream(model=body["model"], include_usage=chat.include_usage, tool_names=chat.tool_names,
                                error_fields=openai_type_and_code)
    done = _Completion(gw, door, started, stream)
    try:
        # No conversation key: Chat Completions names no conversation (`user` and `prompt_cache_key` group a user's
        # or an app's requests across conversations, whose shared system prompt would read as a break at message 1),
        # so the prefix-break detector keys the request by a hash of its first messages (core/prefix.py).
        scope = admit("chat", model, stream, bearer_token())  # the key's model, budget and limits (gate.py)
    except ProxyError as exc:
        done.log(exc.status, exc.kind.value)
        return upstream_error_response(exc)
    upstream_call: dict[str, Any] = {"model": model, "thinking": chat.thinking, "cache": gw.reasoning_cache,
                                     "client_key": bearer_token(), "scope": scope}
    if not stream:
        try:
            completion = complete_chat(client, chat.body, **upstream_call)
        except ProxyError as exc:
            done.log(exc.status, exc.kind.value)
            return upstream_error_response(exc)
        reply = client_completion(completion, door)
        done()
        return Response(dumps(reply), status=200, mimetype="application/json")
    try:
        events = open_chat(client, chat.body, limits=gw.stream_limits,
                           should_stop=client_gone(request.environ), **upstream_call)
    except ProxyError as exc:
        done.log(exc.status, exc.kind.value)
        return upstream_error_response(exc)
    return Response(relay(events, door, on_end=done, scope=scope), status=200, mimetype="text/event-stream",
                    headers=SSE_HEADERS, direct_passthrough=True)


class _Completion:
    """Once a reply is over, however it ended: the reasoning cache filled from it, and one log line."""

    def __init__(self, gw: Gateway, door: ChatCompletionStream, started: float, stream: bool):
        self.gw, self.door, self.started, self.stream = gw, door, started, stream

    def __call__(self) -> None:
        door = self.door
        for call_id, reasoning in door.calls_with_reasoning():
            self.gw.reasoning_cache.put(call_id, reasoning)
        if door.failed is not None:
            outcome = f"failed {door.failed.kind.value}"
        else:
            outcome = (door.finish_reason or "completed") if door.finished else "disconnected"
        usage = door.usage or {}
        self.log(200, f"{outcome} in={usage.get('prompt_tokens', '-')} "
                      f"cached={(usage.get('prompt_tokens_details') or {}).get('cached_tokens', '-')} "
                      f"out={usage.get('completion_tokens', '-')}")

    def log(self, status: int, outcome: str) -> None:
        log.info("POST /v1/chat/completions %s model=%s stream=%s %s %.0fms", status, self.door.model, self.stream,
                 outcome, (time.monotonic() - self.started) * 1000)
