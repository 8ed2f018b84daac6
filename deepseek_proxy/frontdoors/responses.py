"""The Responses API front door: POST /v1/responses (and /responses), streamed or not.

Data flows one way: body → translate_request → upstream client → ResponseStream → SSE out. Every upstream delta
is written to the client as soon as its read returns; events from one network read leave in one write.
"""

from __future__ import annotations

import logging
import time
from typing import Iterator

import requests
from flask import Blueprint, Response

from ..jsonfast import JSONDecodeError, dumps, loads
from ..translate.errors import RequestError
from ..config import ModelConfig
from ..translate.responses_request import translate_request
from ..translate.responses_stream import ResponseStream
from ..upstream.body import iter_body
from ..upstream.client import UpstreamError
from ..upstream.profiles import OpenAICompatibleProfile
from ..upstream.sse import DONE, KEEPALIVE, SSEDecoder, encode_events
from .common import (Gateway, bearer_token, check_client_key, gateway, json_body, request_error_response,
                     upstream_error_response)
from .responses_validation import validate_responses_request

log = logging.getLogger("deepseek_proxy.responses")
bp = Blueprint("responses", __name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@bp.post("/v1/responses")
@bp.post("/responses")
def create_response() -> Response:
    gw = gateway()
    denied = check_client_key(gw.config)
    if denied is not None:
        return denied
    started = time.monotonic()
    try:
        body = json_body()
        validate_responses_request(body)
        model = _model_of(gw, body)
        client = gw.client_for(model)
        stream = bool(body.get("stream", False))
        # A non-streaming client gets a blocking upstream call: one JSON parse, not one per token.
        chat = translate_request(body, model, client.profile, gw.codec, gw.reasoning_cache,
                                 upstream_stream=model.stream and stream)
    except RequestError as exc:
        return request_error_response(exc)
    if chat.tool_map.dropped:
        log.info("dropped hosted tools the upstream cannot run: %s", ", ".join(chat.tool_map.dropped))

    translator = ResponseStream(model=model.id, tool_map=chat.tool_map, codec=gw.codec,
                                response_fields=_echo_fields(body))
    done = _Completion(gw, translator, started, stream)
    try:
        upstream = client.post_chat(chat.body, client_key=bearer_token())
    except UpstreamError as exc:
        done.log(exc.status, f"upstream refused: {exc.code}")
        return upstream_error_response(exc)

    if not stream:
        return _blocking(upstream, translator, done)
    events = (_relay_stream(upstream, translator, done, client.profile) if chat.body["stream"]
              else _replay_completion(upstream, translator, done))
    # direct_passthrough: the generator already yields bytes, so the server iterates it as it is, with no
    # re-encoding layers between an upstream read and the socket write (and closes it when the client goes).
    return Response(events, status=200, mimetype="text/event-stream", headers=SSE_HEADERS, direct_passthrough=True)


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


def _relay_stream(upstream: requests.Response, translator: ResponseStream, done: _Completion,
                  profile: OpenAICompatibleProfile) -> Iterator[bytes]:
    """Relay the upstream stream. Closing this generator (the client went away) closes the upstream at once."""
    decoder = SSEDecoder()
    keepalive_interval = done.gw.config.server.keepalive_interval
    saw_done = False
    last_keepalive = 0.0
    try:
        yield encode_events(translator.start())
        for raw in iter_body(upstream, idle_interval=keepalive_interval):
            events: list = []
            if not raw:  # the upstream has been silent for keepalive_interval
                events += translator.keepalive()
                last_keepalive = time.monotonic()
            for payload in decoder.feed(raw):
                if payload is KEEPALIVE:
                    now = time.monotonic()
                    if now - last_keepalive >= keepalive_interval:
                        last_keepalive = now
                        events += translator.keepalive()
                elif payload == DONE:
                    saw_done = True
                else:
                    chunk = loads(payload)
                    if chunk.get("error"):
                        yield encode_events(events + translator.fail(*profile.stream_failure(chunk["error"])))
                        return
                    events += translator.feed(chunk)
            if events:
                yield encode_events(events)
        if saw_done or translator.finish_reason:
            yield encode_events(translator.finish())
        else:
            yield encode_events(translator.fail(
                "server_error", "The upstream closed the stream before the reply was complete."))
    except JSONDecodeError:
        yield encode_events(translator.fail("server_error", "The upstream sent a malformed stream chunk."))
    except requests.RequestException as exc:
        log.warning("response %s: upstream stream broke: %s", translator.response_id, exc.__class__.__name__)
        yield encode_events(translator.fail("server_error", "The upstream connection broke mid-reply."))
    finally:
        upstream.close()
        done()


def _replay_completion(upstream: requests.Response, translator: ResponseStream, done: _Completion) -> Iterator[bytes]:
    """An upstream configured as non-streaming: its complete reply, replayed as the same event sequence."""
    try:
        events = translator.start()
        try:
            completion = _read_completion(upstream)
        except UpstreamError as exc:
            yield encode_events(events + translator.fail(exc.code or "server_error", exc.message))
            return
        yield encode_events(events + translator.replay(completion))
    finally:
        done()


def _blocking(upstream: requests.Response, translator: ResponseStream, done: _Completion) -> Response:
    try:
        completion = _read_completion(upstream)
    except UpstreamError as exc:
        done.log(exc.status, exc.message)
        return upstream_error_response(exc)
    translator.start()
    translator.replay(completion)
    done()
    return Response(dumps(translator.response), status=200, mimetype="application/json")


def _read_completion(upstream: requests.Response) -> dict:
    try:
        completion = loads(upstream.content)
    except (JSONDecodeError, requests.RequestException):
        raise UpstreamError(502, "The upstream sent an unreadable reply.", "server_error", "server_error") from None
    finally:
        upstream.close()
    if not isinstance(completion, dict) or "choices" not in completion:
        raise UpstreamError(502, "The upstream reply is not a chat completion.", "server_error", "server_error")
    return completion
