"""Request limits: requests per minute and requests in flight (open streams included), for all clients together
and per client key, counted in the store so that every worker and instance sharing it agrees.

    limiter = Limiter(config.limits, store)          # once per worker
    admission = limiter.admit(identity)              # raises RateLimited(retry_after)
    ... the request, its stream ...
    admission.touch()                                # now and then while a long stream runs (cheap; see below)
    admission.release()                              # when the reply is over, however it ended

Requests per minute: a sliding window (store.hit: the previous minute's count weighted by its overlap plus this
minute's), refused at once with the seconds until one more fits. In flight: slots (store.acquire_slot); a request
that finds none free waits up to `queue_ms`, trying again with a short back-off (a cooperative sleep under
gevent), then is refused with retry-after 1. A slot expires `slot_ttl_seconds` after it was taken or last
refreshed, so a worker killed mid-stream leaks its slots for that long at most; `touch()` refreshes them at most
once per third of that time, so a stream calling it on every event batch costs one comparison per call.

All of a request's limits (its key's and the global ones) are decided in one store call (`Store.admit`: one
SQLite transaction, one Redis script, so one round trip) and granted together or not at all: a key over its limit
never uses up the global budget, and a request refused or waiting in the queue is counted nowhere. When the
store fails, the request is let through and the failure logged: the limits protect the upstream from a runaway
client, and refusing everybody because Redis blinked would be the worse outage.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..config import LimitsConfig
from ..store import Store, StoreError
from .keys import ClientIdentity

log = logging.getLogger("deepseek_proxy.limits")

MINUTE = 60.0
FIRST_BACKOFF = 0.01
MAX_BACKOFF = 0.1


class RateLimited(Exception):
    """Over a limit. `retry_after` in whole seconds (at least 1) for the door's `retry-after` header; `scope` is
    "key" or "global", `limit` "rpm" or "concurrency". The door renders it as a 429 in its own format."""

    kind = "rate_limited"
    status = 429

    def __init__(self, retry_after: float, scope: str, limit: str, message: str):
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))
        self.scope, self.limit, self.message = scope, limit, message


@dataclass
class _Limit:
    scope: str  # "key" or "global"
    counter: str  # store name
    rpm: int
    concurrency: int
    label: str  # how the message names it


class Admission:
    """The slots one request holds. Idempotent release; a context manager."""

    def __init__(self, limiter: Limiter, slots: list[tuple[str, str]]):
        self.limiter, self.slots = limiter, slots
        self._refreshed = limiter._clock()

    def touch(self) -> None:
        if not self.slots:
            return
        now = self.limiter._clock()
        ttl = self.limiter.config.slot_ttl_seconds
        if now - self._refreshed < ttl / 3:
            return
        self._refreshed = now
        for name, token in self.slots:
            try:
                self.limiter.store.refresh_slot(name, token, ttl)
            except StoreError as exc:
                log.warning("limits: slot %s not refreshed (%s)", name, exc)

    def release(self) -> None:
        slots, self.slots = self.slots, []
        for name, token in slots:
            try:
                self.limiter.store.release_slot(name, token)
            except StoreError as exc:  # it expires by itself
                log.warning("limits: slot %s not released (%s); it frees within %g s", name, exc,
                            self.limiter.config.slot_ttl_seconds)

    def __enter__(self) -> Admission:  # noqa: PYI034 - Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Limiter:
    def __init__(self, config: LimitsConfig, store: Store, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.config, self.store = config, store
        self._sleep, self._clock = sleep, clock

    def _limits_for(self, identity: ClientIdentity) -> list[_Limit]:
        c = self.config
        key_rpm = identity.rpm if identity.rpm is not None else c.key_rpm
        key_concurrency = identity.concurrency if identity.concurrency is not None else c.key_concurrency
        return [_Limit("key", f"key:{identity.name}", key_rpm, key_concurrency, f"the API key `{identity.name}`"),
                _Limit("global", "global", c.rpm, c.concurrency, "this proxy")]

    def admit(self, identity: ClientIdentity) -> Admission:
        """All of the identity's limits in one store call (`Store.admit`: one SQLite transaction, one Redis
        script), granted together or not at all; while only a slot is missing, tried again until `queue_ms`."""
        limits = self._limits_for(identity)
        rate_limits = [limit for limit in limits if limit.rpm]
        slot_limits = [limit for limit in limits if limit.concurrency]
        if not rate_limits and not slot_limits:
            return Admission(self, [])
        rates = [(f"{limit.counter}:rpm", MINUTE, limit.rpm) for limit in rate_limits]
        slots = [(f"{limit.counter}:inflight", limit.concurrency, self.config.slot_ttl_seconds)
                 for limit in slot_limits]
        deadline = self._clock() + self.config.queue_ms / 1000
        backoff = FIRST_BACKOFF
        while True:
            try:
                decision = self.store.admit(rates, slots)
            except StoreError as exc:
                log.warning("limits: not counted (%s); letting the request through", exc)
                return Admission(self, [])
            if decision.granted:
                granted = zip(slots, decision.tokens, strict=True)
                return Admission(self, [(name, token) for (name, _, _), token in granted])
            if decision.refused_rate is not None:
                limit = rate_limits[decision.refused_rate]
                raise RateLimited(decision.wait, limit.scope, "rpm", f"Rate limit reached for {limit.label}: "
                                  f"{limit.rpm} requests per minute. Try again in "
                                  f"{max(1, math.ceil(decision.wait))} s.")
            limit = slot_limits[decision.refused_slot or 0]
            left = deadline - self._clock()
            if left <= 0:
                raise RateLimited(1, limit.scope, "concurrency", f"Too many requests in flight for {limit.label} "
                                  f"(at most {limit.concurrency} at once). Try again in a moment.")
            self._sleep(min(backoff, left))
            backoff = min(backoff * 2, MAX_BACKOFF)
