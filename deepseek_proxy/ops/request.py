"""One request's way through keys, limits, metrics, usage and the log: the single object the relay calls.

    try:
        scope = begin_request(ops, environ=request.environ, presented_key=bearer_token(), door="responses",
                              model=model, stream=stream)
    except Refused as refusal:        # no key, revoked, model not allowed, budget spent, over a limit
        return the door's error for ErrorKind(refusal.kind), refusal.status, refusal.message, refusal.retry_after
    ... send upstream (with_failover(send, ops.pool(model.upstream))), relay ...
    scope.first_token()               # when the first reply bytes have left (relay: after the first non-empty write)
    scope.finish(usage=final_usage, status=200, outcome="completed", upstream_key=lease.entry.source)
                                      # once, however the reply ended (the relay's on_end); idempotent

`finish` records the usage row (priced), counts the metrics, writes the request's log line and releases the
limit slots; for a completed reply (200) it hands the upstream prompt to the prefix-break detector (ops/prefix.py).
`scope.conversation` is the conversation key the door computed from the client's request (core/prefix.py
`*_conversation_key`, passed to `begin_request`), else, at finish, a hash of the upstream request's first messages;
`scope.prompt` is the Chat request as it went upstream (set by the gate's `on_prepared` hook). `kind` values are
core.errors.ErrorKind values, so the door renders a refusal like any other error of that kind (a 429 with
`retry-after` for rate_limited).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..faults import request_id as request_id_of
from .keys import AuthFailure, ClientIdentity, check_model
from .limits import Admission, RateLimited
from .logs import request_log
from .metrics import RequestMetrics, rate_limited
from .prefix import built_prompt, fallback_conversation

if TYPE_CHECKING:
    from ..config import ModelConfig
    from . import Ops


class Refused(Exception):
    """The proxy itself refuses the request. `headers` holds `retry-after` when there is one."""

    def __init__(self, status: int, code: str, message: str, kind: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.kind, self.retry_after = status, code, message, kind, retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after)} if self.retry_after is not None else {}

    @classmethod
    def of(cls, failure: AuthFailure) -> Refused:
        return cls(failure.status, failure.code, failure.message, failure.kind)


class RequestScope:
    def __init__(self, ops: Ops, *, identity: ClientIdentity, admission: Admission, request_id: str, door: str,
                 model: ModelConfig, stream: bool, method: str, path: str, conversation: str | None = None):
        self.ops, self.identity, self.admission = ops, identity, admission
        self.request_id, self.door, self.model, self.stream = request_id, door, model, stream
        self.method, self.path = method, path
        self.metrics = RequestMetrics(door=door, model=model.id, stream=stream)
        self._started_wall = time.time()
        self._finished = False
        # The source (`env:NAME`, never the key) of the upstream key the reply came from, once one was picked.
        self.upstream_key: str | None = None
        self.conversation = conversation  # the door's key; else the fallback, at finish (module docstring)
        # The upstream request (gate: upstream.chat's on_prepared), or a function that builds its Chat form after the
        # reply (the Messages pass-through mode).
        self.prompt: dict | Callable[[], dict] | None = None

    def first_token(self) -> None:
        self.metrics.first_token()

    def touch(self) -> None:
        """Keep the limit slots alive during a long stream (cheap: one comparison most calls)."""
        self.admission.touch()

    def finish(self, *, usage: Mapping[str, Any] | None, status: int, outcome: str = "",
               error_kind: str | None = None, upstream_key: str | None = None) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            if self.conversation is None and self.prompt is not None:
                self.prompt = built_prompt(self.prompt)  # once: for the key now and the detector after the reply
                self.conversation = fallback_conversation(self.prompt)
            if status == 200:
                self.ops.prefix.after_reply(self)  # never raises; runs soon after the reply, off its path
            self.metrics.finish(usage=usage, status=status)
            duration_ms = (time.monotonic() - self.metrics.started) * 1000
            ttft_ms = None if self.metrics.ttft is None else self.metrics.ttft * 1000
            self.ops.usage.record_usage(key_name=self.identity.name, model=self.model.id,
                                        upstream_model=self.model.upstream_model, upstream=self.model.upstream,
                                        status=status, usage=usage, duration_ms=duration_ms, ttft_ms=ttft_ms,
                                        door=self.door, request_id=self.request_id, at=self._started_wall,
                                        conversation=self.conversation)
            request_log(request_id=self.request_id, method=self.method, path=self.path, door=self.door,
                        status=status, key=self.identity.name, model=self.model.id, upstream=self.model.upstream,
                        upstream_key=upstream_key or self.upstream_key, stream=self.stream, duration_ms=duration_ms,
                        ttft_ms=ttft_ms, outcome=outcome or None, error_kind=error_kind,
                        conversation=self.conversation, usage=usage)
        finally:
            self.admission.release()


def begin_request(ops: Ops, *, environ: dict, presented_key: bytes | str | None, door: str, model: ModelConfig,
                  stream: bool, conversation: str | None = None) -> RequestScope:
    """Authenticate, check the model and the budget, take the limit slots. Raises Refused. `conversation`: the
    door's conversation key, when the client names one."""
    result = ops.authenticator.authenticate(presented_key)
    if isinstance(result, AuthFailure):
        raise Refused.of(result)
    refusal = check_model(result, model.id)
    if refusal is not None:
        raise Refused.of(refusal)
    try:
        admission = ops.limiter.admit(result)
    except RateLimited as exc:
        rate_limited(scope=exc.scope, limit=exc.limit)
        raise Refused(429, "rate_limit_exceeded", exc.message, "rate_limited", exc.retry_after) from None
    return RequestScope(ops, identity=result, admission=admission, request_id=request_id_of(environ), door=door,
                        model=model, stream=stream, method=environ.get("REQUEST_METHOD", ""),
                        path=environ.get("PATH_INFO", ""), conversation=conversation)
