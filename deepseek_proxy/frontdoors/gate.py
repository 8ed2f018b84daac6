"""The one place every front door passes through for keys, limits, the upstream key pool, usage, metrics and the
request log (issue 12; the parts live in deepseek_proxy/ops/). A door does three things:

    refusal = client_refusal(presented_key)        # its before_request hook: a wrong / revoked key → its 401
    ...
    scope = admit("messages", model, stream, presented_key)      # raises ProxyError (429 with retry_after, ...)
    events = open_chat(client, body, scope=scope, ...)           # or complete_chat(...): the key pool's failover
    relay(events, door, on_end=done, scope=scope)                # first token, touch, usage, finish

`admit(..., conversation=key)` carries the door's conversation key (core/prefix.py) on the scope; open_chat /
complete_chat keep the request as it went upstream on it (`scope.prompt`), for the prefix-break detector that
RequestScope.finish runs after a completed reply (ops/prefix.py).

Refusals are neutral `ProxyError`s (the kind an `ops.request.Refused` carries), so each door renders them with its
own error renderer, in its client's format: OpenAI, Anthropic or Google error bodies, `retry-after` included.
`open_chat` / `complete_chat` finish the scope when the upstream refuses before the first byte; the relay
finishes it however a stream ends; `complete_chat` finishes it with the completion's usage.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import current_app, request

from ..config import ModelConfig
from ..core.chat import ChatRequest
from ..core.errors import ErrorKind, ProxyError
from ..ops import Ops, ops_for
from ..ops.keypool import KeyPool
from ..ops.keys import INVALID, MISSING, AuthFailure
from ..ops.request import Refused, RequestScope, begin_request
from ..upstream import chat as upstream_chat
from ..upstream.client import UpstreamClient


def client_refusal(presented_key: str | None) -> ProxyError | None:
    """The before-request check of the client's key: a missing, wrong or revoked key (or a key store that cannot
    be read) as a neutral error. A key that spent its budget passes here (it may still read stored responses and
    count tokens); `admit` stops its next reply."""
    result = ops_for(current_app).authenticator.authenticate(presented_key)
    if isinstance(result, AuthFailure) and result.kind != "insufficient_balance":
        return refusal_error(Refused.of(result))
    return None


def wrong_key(error: ProxyError) -> bool:
    """A missing or unknown client key (a door answers it in its client's own words for a wrong key), as opposed
    to a revoked key or a key store that is down, whose own messages the door passes on. MISSING, INVALID and
    REVOKED share a status and a code, so their messages tell them apart."""
    return error.kind is ErrorKind.AUTHENTICATION and error.message in (MISSING.message, INVALID.message)


def refusal_error(refusal: Refused) -> ProxyError:
    return ProxyError(ErrorKind(refusal.kind), refusal.message, refusal.status, upstream_code=refusal.code,
                      retry_after=refusal.retry_after)


def admit(door: str, model: ModelConfig, stream: bool, presented_key: str | None, *, ops: Ops | None = None,
          environ: dict | None = None, conversation: str | None = None) -> RequestScope:
    """Key, model allow-list, budget and limits for one reply: its scope, or ProxyError (the door renders it).
    `ops` / `environ` for a caller outside the request's context (a WebSocket message); else the request's.
    `conversation`: the conversation key the door read from its client's request (core/prefix.py
    `*_conversation_key`); None falls back to a hash of the upstream request's first messages."""
    try:
        return begin_request(ops if ops is not None else ops_for(current_app),
                             environ=request.environ if environ is None else environ,
                             presented_key=presented_key, door=door, model=model, stream=stream,
                             conversation=conversation)
    except Refused as refusal:
        raise refusal_error(refusal) from None


def key_pool(ops: Ops, client: UpstreamClient) -> KeyPool | None:
    """The upstream's key pool when it configures several keys (`api_keys`) and at least one resolved. A single
    `api_key` stays on the plain path: with no other key to fail over to, setting it aside after a 402 or
    cooling it after a 429 would only refuse requests the upstream itself might accept (and its message for a
    missing key stays the one `serve` and `doctor` explain)."""
    if not client.config.api_keys:
        return None
    pool = ops.pool(client.config.name)
    return pool if any(entry.key for entry in pool.keys) else None


def open_chat(client: UpstreamClient, chat: ChatRequest, *, scope: RequestScope,
              **call: Any) -> upstream_chat.ChatEvents:
    """upstream.chat.open_chat through the upstream's key pool; a refusal before the first byte ends the scope."""
    with _refusal_ends(scope):
        return upstream_chat.open_chat(client, chat, **_scope_hooks(scope, client), **call)


def complete_chat(client: UpstreamClient, chat: ChatRequest, *, scope: RequestScope, **call: Any) -> dict:
    """upstream.chat.complete_chat through the key pool; the scope ends with the completion's usage."""
    with _refusal_ends(scope):
        completion = upstream_chat.complete_chat(client, chat, **_scope_hooks(scope, client), **call)
    scope.first_token()
    scope.finish(usage=completion.get("usage"), status=200, outcome="completed")
    return completion


@contextmanager
def _refusal_ends(scope: RequestScope) -> Iterator[None]:
    """An upstream call that fails before its reply ends the request's scope: refused (its kind) or an error."""
    try:
        yield
    except ProxyError as exc:
        scope.finish(usage=None, status=exc.status, outcome="refused", error_kind=exc.kind.value)
        raise
    except BaseException:
        scope.finish(usage=None, status=500, outcome="error")
        raise


def _scope_hooks(scope: RequestScope, client: UpstreamClient) -> dict[str, Any]:
    """What an upstream call takes from the request's scope: the key pool and the hooks that report back to it."""
    return {"keys": key_pool(scope.ops, client), "on_key": _on_key(scope), "on_prepared": _on_prepared(scope)}


def _on_key(scope: RequestScope) -> Any:
    def chosen(source: str) -> None:
        scope.upstream_key = source

    return chosen


def _on_prepared(scope: RequestScope) -> Any:
    """Keep the request as it goes upstream on the scope: after the reply, RequestScope.finish hands it to the
    prefix-break detector (ops/prefix.py). Only a reference here: nothing is computed before the first byte."""
    def sent(prepared: ChatRequest) -> None:
        scope.prompt = prepared  # type: ignore[assignment]

    return sent
