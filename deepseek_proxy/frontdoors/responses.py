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

Stored responses (issue 11; the store is `[store]`, SQLite by default, Redis for several instances):
- `store` defaults to true, as OpenAI's does; `store: false` (what Codex sends) keeps nothing durable.
- `previous_response_id` and `item_reference` are expanded before translation (responses_state.py): the only
  store reads before the upstream call. A stored response is written once the reply is over, after its last event
  was sent (a non-streamed one after its body was sent), so `store: true` adds nothing to the time to first token.
  Only finished replies are stored (completed, incomplete or failed); a reply the client walked away from is not.
- `GET /v1/responses/{id}` (`?stream=true` replays it as the same SSE events, `starting_after` skips events),
  `DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items` (after / before / limit / order).
- `background: true` (not streamed): the response is stored as in_progress and returned at once; a greenlet of
  the worker runs it and stores the final object; `GET` polls it; `POST /v1/responses/{id}/cancel` stores it as
  cancelled and the running worker (any instance sharing the store) stops within a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from typing import Any, cast

from flask import Blueprint, Response, request

from ..core.errors import ErrorKind, ProxyError
from ..core.prefix import responses_conversation_key
from ..jsonfast import dumps
from ..store import InvalidCursor, StoredResponse, StoreError
from ..translate.errors import RequestError
from ..translate.responses_request import translate_request
from ..translate.responses_stream import ResponseStream, replay_events
from ..upstream.sse import encode_events
from .common import (
    Gateway,
    bearer_token,
    configured_model,
    gateway,
    json_body,
    openai_error,
    request_error_response,
    require_client_key,
    upstream_error_response,
)
from .gate import admit, complete_chat, open_chat
from .relay import SSE_HEADERS, client_gone, relay, replay_completion
from .responses_state import (
    StoredContext,
    needs_store,
    resolve_context,
    store_finished_response,
)
from .responses_validation import validate_responses_request

log = logging.getLogger("deepseek_proxy.responses")
bp = Blueprint("responses", __name__)
bp.before_request(require_client_key)


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
        model = configured_model(gw, body)
        client = gw.client_for(model)
        stream = bool(body.get("stream", False))
        keep = body.get("store") is not False  # OpenAI's default is to store
        background = bool(body.get("background"))
        if background and stream:
            raise RequestError("`background: true` with `stream: true` is not supported by this proxy: create the "
                               "background response without `stream` and poll GET /v1/responses/{id}.",
                               param="stream", code="unsupported_value")
        if background and not keep:
            raise RequestError("A background response must be stored: `background: true` needs `store` not "
                               "false.", param="store", code="invalid_value")
        context = None
        refers = needs_store(body)  # the body refers to stored state: the store must be read
        if keep or refers:
            context = resolve_context(body, gw.store if refers else None)
            body_in = context.body_for(body)
        else:
            body_in = body  # Codex's store:false turn: nothing to resolve, nothing to keep
        # A non-streaming client gets a blocking upstream call: one JSON parse, not one per token.
        chat = translate_request(body_in, model, client.profile, gw.codec,
                                 upstream_stream=model.stream and (stream or background))
    except RequestError as exc:
        return request_error_response(exc)
    except StoreError as exc:  # StoreUnavailable: the history cannot be read, so nothing can be sent
        return store_unavailable_response(exc)
    if chat.tool_map.dropped:
        log.info("dropped hosted tools the upstream cannot run: %s", ", ".join(chat.tool_map.dropped))

    door = ResponsesDoorStream(model=model.id, tool_map=chat.tool_map, codec=gw.codec,
                               response_fields=_echo_fields(body, keep), summaries=wants_summaries(body))
    done = _Completion(gw, door, started, stream, context if keep else None)
    try:  # the client key's model, budget and limits (gate.py): a refusal is an HTTP error Codex backs off from
        scope = admit("responses", model, stream or background, bearer_token(),
                      conversation=responses_conversation_key(body, request.headers))
    except ProxyError as exc:
        done.log(exc.status, f"refused: {exc.kind.value}")
        return upstream_error_response(exc)
    upstream_call: dict[str, Any] = {"model": model, "thinking": chat.thinking, "cache": gw.reasoning_cache,
                                     "client_key": bearer_token(), "scope": scope}
    if background:
        assert context is not None
        return start_background(gw, client, chat.body, door, done, context, upstream_call)
    if not stream:
        try:
            completion = complete_chat(client, chat.body, **upstream_call)
        except ProxyError as exc:
            done.log(exc.status, exc.message)
            return upstream_error_response(exc)
        replay_completion(completion, door)
        reply = Response(dumps(door.response), status=200, mimetype="application/json")
        reply.call_on_close(done)  # stored once the body is sent
        return reply

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
    return Response(relay(events, door, on_end=done, scope=scope), status=200, mimetype="text/event-stream",
                    headers=SSE_HEADERS, direct_passthrough=True)


@bp.get("/v1/responses/<response_id>")
@bp.get("/responses/<response_id>")
def get_stored_response(response_id: str) -> Response:
    """A stored response; `?stream=true` replays it as the SSE events it was streamed as."""
    try:
        record = gateway().store.get_response(response_id)
    except StoreError as exc:
        return store_unavailable_response(exc)
    if record is None:
        return not_found_response(response_id)
    if request.args.get("stream", "").lower() not in ("true", "1"):
        return Response(dumps(record.response), status=200, mimetype="application/json")
    skip = request.args.get("starting_after")
    try:
        after = int(skip) if skip not in (None, "") else -1
    except ValueError:
        return openai_error(400, "starting_after must be an integer (an event's sequence_number)",
                            param="starting_after", code="invalid_value")
    events = [event for event in replay_events(record.response) if event["sequence_number"] > after]
    return Response(encode_events(events), status=200, mimetype="text/event-stream", headers=SSE_HEADERS)


@bp.delete("/v1/responses/<response_id>")
@bp.delete("/responses/<response_id>")
def delete_stored_response(response_id: str) -> Response:
    try:
        deleted = gateway().store.delete_response(response_id)
    except StoreError as exc:
        return store_unavailable_response(exc)
    if not deleted:
        return not_found_response(response_id)
    return Response(dumps({"id": response_id, "object": "response", "deleted": True}), status=200,
                    mimetype="application/json")


@bp.get("/v1/responses/<response_id>/input_items")
@bp.get("/responses/<response_id>/input_items")
def list_input_items(response_id: str) -> Response:
    args = request.args
    limit_text = args.get("limit", "20")
    try:
        limit = int(limit_text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        return openai_error(400, f"Invalid 'limit': integer between 1 and 100 expected, got {limit_text!r}.",
                            param="limit", code="invalid_value")
    order = args.get("order", "desc")
    if order not in ("asc", "desc"):
        return openai_error(400, f"Invalid 'order': 'asc' or 'desc' expected, got {order!r}.", param="order",
                            code="invalid_value")
    try:
        page = gateway().store.list_input_items(response_id, after=args.get("after") or None,
                                                before=args.get("before") or None, limit=limit,
                                                order=order)  # type: ignore[arg-type]
    except InvalidCursor as exc:
        return openai_error(400, str(exc), param=exc.param, code="invalid_value")
    except StoreError as exc:
        return store_unavailable_response(exc)
    if page is None:
        return not_found_response(response_id)
    return Response(dumps(page.as_list_object()), status=200, mimetype="application/json")


@bp.post("/v1/responses/<response_id>/cancel")
@bp.post("/responses/<response_id>/cancel")
def cancel_response(response_id: str) -> Response:
    """Cancel a background response that is still running: it is stored as `cancelled` at once, and the worker
    running it (this one or another, on any instance sharing the store) stops its upstream call within a
    second. Cancelling a cancelled response returns it again; a finished one cannot be cancelled."""
    store = gateway().store
    try:
        record = store.get_response(response_id, with_input=True)
        if record is None:
            return not_found_response(response_id)
        status = record.response.get("status")
        if not record.response.get("background"):
            return openai_error(400, "Only responses created with `background: true` can be cancelled.",
                                param="response_id", code="invalid_value")
        if status in ("queued", "in_progress"):
            record.response = {**record.response, "status": "cancelled"}
            store.put_response(record)
            _CANCELLED.add(response_id)
        elif status != "cancelled":
            return openai_error(400, f"Cannot cancel a response whose status is {status}.", param="response_id",
                                code="invalid_value")
    except StoreError as exc:
        return store_unavailable_response(exc)
    return Response(dumps(record.response), status=200, mimetype="application/json")


# ---- background responses ------------------------------------------------------------------------------------------
# Cancelled in this worker (the cancel came here): looked at between events. A cancel that reached another worker
# or instance is seen through the store, read at most once per CANCEL_POLL_SECONDS.
_CANCELLED: set[str] = set()
CANCEL_POLL_SECONDS = 1.0


def start_background(gw: Gateway, client: Any, chat_body: Any, door: ResponsesDoorStream, done: _Completion,
                     context: StoredContext, upstream_call: dict[str, Any]) -> Response:
    """`background: true`: store the response as in_progress, answer with it at once, and run the reply in a
    greenlet of this worker that stores the final object when it ends (unless it was cancelled meanwhile).
    GET /v1/responses/{id} polls it. A worker that stops (restart, crash) leaves it in_progress until it expires."""
    snapshot = door.start()[0]["response"]
    try:
        gw.store.put_response(StoredResponse(id=snapshot["id"], response=snapshot,
                                             input_items=context.own_items, model=snapshot["model"],
                                             created_at=snapshot["created_at"],
                                             previous_response_id=context.previous_response_id))
    except StoreError as exc:
        upstream_call["scope"].finish(usage=None, status=503, outcome="store_unavailable")
        return store_unavailable_response(exc)
    cancelled = _cancel_check(gw, snapshot["id"])
    import gevent  # the server's worker class; only background responses use it

    gevent.spawn(_run_background, gw, client, chat_body, door, done, upstream_call, cancelled)
    return Response(dumps(snapshot), status=200, mimetype="application/json")


def _cancel_check(gw: Gateway, response_id: str) -> Callable[[], bool]:
    last_look = [time.monotonic()]

    def cancelled() -> bool:
        if response_id in _CANCELLED:
            return True
        now = time.monotonic()
        if now - last_look[0] < CANCEL_POLL_SECONDS:
            return False
        last_look[0] = now
        try:
            record = gw.store.get_response(response_id)
        except StoreError:
            return False
        return record is None or record.response.get("status") == "cancelled"

    return cancelled


def _run_background(gw: Gateway, client: Any, chat_body: Any, door: ResponsesDoorStream, done: _Completion,
                    upstream_call: dict[str, Any], cancelled: Callable[[], bool]) -> None:
    response_id = door.response_id
    try:
        try:
            events = open_chat(client, chat_body, limits=gw.stream_limits, should_stop=cancelled, **upstream_call)
        except ProxyError as exc:
            door.fail(exc)
            done()
            return
        stream = cast(Generator[bytes, None, None], relay(events, door, on_end=done, scope=upstream_call["scope"]))
        for _ in stream:  # the events are for nobody: the final object is stored by `done`
            if cancelled():
                door.finished = False  # a cancelled reply is never stored over its `cancelled` record
                stream.close()
                log.info("background response %s cancelled", response_id)
                return
    except Exception:  # a greenlet's error has no request to answer: log it, store the failure
        log.exception("background response %s failed", response_id)
        if not door.finished:
            door.fail(ProxyError(ErrorKind.SERVER_ERROR, "The proxy failed while running this response.", 500))
            done()
    finally:
        _CANCELLED.discard(response_id)


def not_found_response(response_id: str) -> Response:
    return openai_error(404, f"Response with id '{response_id}' not found.", param="response_id", code="not_found")


def store_unavailable_response(error: StoreError) -> Response:
    log.warning("response store unavailable: %s", error)
    return openai_error(503, "The proxy's response store is unavailable; try again.", type="server_error",
                        code="store_unavailable", headers={"retry-after": "1"})


def wants_summaries(body: dict) -> bool:
    """Whether the request asked for reasoning summaries (`reasoning.summary`, or the older generate_summary)."""
    reasoning = body.get("reasoning") or {}
    return (reasoning.get("summary") or reasoning.get("generate_summary")) in ("auto", "concise", "detailed")


class ResponsesDoorStream(ResponseStream):
    """The Responses stream translator as the relay drives it: failures arrive as neutral errors."""

    def fail(self, error: ProxyError | str, message: str | None = None) -> list[dict]:
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


class _Completion:
    """What happens once a reply is over, however it ended: the reasoning fallback cache, the store (store: true),
    and one log line."""

    def __init__(self, gw: Gateway, translator: ResponseStream, started: float, stream: bool,
                 context: StoredContext | None = None):
        self.gw, self.translator, self.started, self.stream = gw, translator, started, stream
        self.context = context

    def __call__(self) -> None:
        translator = self.translator
        for call_id, reasoning in translator.calls_with_reasoning():
            self.gw.reasoning_cache.put(call_id, reasoning)
        if self.context is not None and translator.finished:
            store_finished_response(self.gw.store, translator.response, self.context)
        final: dict[str, Any] = (translator.response if translator.finished
                                 else {"status": "disconnected", "usage": None})
        usage = final.get("usage") or {}
        self.log(200, f"{final['status']} in={usage.get('input_tokens', '-')} "
                      f"cached={(usage.get('input_tokens_details') or {}).get('cached_tokens', '-')} "
                      f"out={usage.get('output_tokens', '-')}")

    def log(self, status: int, outcome: str) -> None:
        log.info("POST /v1/responses %s %s model=%s stream=%s %s %.0fms", status, self.translator.response_id,
                 self.translator.model, self.stream, outcome, (time.monotonic() - self.started) * 1000)


# What the Response object says for settings the request left out: the values the upstream then used (OpenAI's
# and DeepSeek's defaults), as numbers, since the schemas require numbers.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0


def _echo_fields(body: dict, store: bool = True) -> dict:
    """Request settings the Response object repeats back: every field the OpenAI / Open Responses `Response`
    schema requires, typed as it requires (tests validate each snapshot against the openai SDK's model)."""
    reasoning = body.get("reasoning") or {}
    temperature, top_p = body.get("temperature"), body.get("top_p")
    return {
        "background": bool(body.get("background")),
        "frequency_penalty": 0.0,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "presence_penalty": 0.0,
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {**reasoning, "effort": reasoning.get("effort"),
                      "summary": reasoning.get("summary") or reasoning.get("generate_summary")},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default",
        "store": store,
        "temperature": float(temperature) if temperature is not None else DEFAULT_TEMPERATURE,
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": [_echo_tool(tool) for tool in body.get("tools") or []],
        "top_logprobs": body.get("top_logprobs") or 0,
        "top_p": float(top_p) if top_p is not None else DEFAULT_TOP_P,
        "truncation": body.get("truncation") or "disabled",
        "user": body.get("user"),
    }


def _echo_tool(tool: Any) -> Any:
    """A function tool as the Response repeats it: `strict` always present (false unless the client asked; the
    upstream does not enforce the schema strictly)."""
    if not isinstance(tool, dict):
        return tool
    if tool.get("type") == "function":
        return {**tool, "strict": bool(tool.get("strict")), "parameters": tool.get("parameters"),
                "description": tool.get("description")}
    if tool.get("type") == "namespace" and isinstance(tool.get("tools"), list):
        return {**tool, "tools": [_echo_tool(inner) for inner in tool["tools"]]}
    return tool
