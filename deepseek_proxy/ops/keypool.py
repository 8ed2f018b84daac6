"""Several API keys for one upstream, with failover before the first byte.

    pool = KeyPool.from_config(upstream_config, store=store)        # once per worker
    response, lease = with_failover(lambda key: client.post_chat(body, api_key=key), pool)
    ... relay the stream ...
    lease.release()                                                  # when the reply is over, however it ended

`send(key)` makes the upstream request with that key and returns the open reply, or raises an error that
carries the upstream's `status` (and `retry_after`), as UpstreamError and core.errors.ProxyError do. Only errors
that say something about the *key* move on to the next one: 401 (key refused) and 402 (its account is out of
balance) set the key aside for `key_set_aside_seconds` with the upstream's reason; 429 cools it down for the
reply's retry-after. Anything else (400, 5xx, unreachable) is about the request or the upstream and is raised
as it is. `with_failover` returns once the upstream has accepted the request (its status line and headers, no
reply byte relayed yet), so a failover never happens mid-stream: once the first byte is on its way to the
client the key is the one the reply comes from.

Strategies: "round_robin" (each pick starts after the previous one) or "least_busy" (the key with the fewest
requests in flight in this process; ties in round-robin order). In-flight counts are per process: balancing
within each worker balances the whole, and sharing them would cost a store write per request.

Cool-downs and set-asides are shared through the store (`marks`, scope `keypool:{upstream}`, member: the first
16 hex of the key's sha256, never the key), so a key one worker or instance found rate-limited or refused is
skipped by all of them within `SHARED_REFRESH` seconds. A store that fails is logged and the pool goes on with
what this process knows.

`describe()` is what `/readyz` and `doctor` show: each key's source, a masked form (`sk-…abcd`), its state
(ok, cooling, set_aside, missing), until when and why.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ..config import KeyUnavailable, UpstreamConfig, resolve_key
from ..store import Store, StoreError

log = logging.getLogger("deepseek_proxy.keypool")
T = TypeVar("T")

SHARED_REFRESH = 1.0  # seconds between reads of the shared marks
SET_ASIDE_STATUSES = {401: "the upstream refused the key (401)", 402: "the key's account is out of balance (402)"}
DEFAULT_COOL_DOWN = 2  # seconds, for a 429 without retry-after


def mask(key: str) -> str:
    """`sk-…abcd`: the prefix and last four characters, enough to find the key in a dashboard."""
    prefix = key[:3] if key.startswith(("sk-", "dsp")) else ""
    return f"{prefix}…{key[-4:]}" if len(key) >= 12 else "…"


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


@dataclass
class PoolKey:
    source: str  # "env:A", "pass:x", "file:/path"
    key: str | None  # None: the source gave none (error says why)
    error: str | None = None
    in_flight: int = 0
    requests: int = 0
    until: float = 0.0  # wall time the key is out until (cooling or set aside)
    state: str = "ok"  # ok | cooling | set_aside | missing
    reason: str = ""
    status: int = 0  # the upstream status that set the key aside

    @property
    def id(self) -> str:
        return key_id(self.key) if self.key else ""


class NoKeyAvailable(Exception):
    """Every key is cooling down, set aside or missing. Carries what a door needs: status 429 with retry_after
    when some key comes back soon (cooling), else the status of the reason keys were set aside (401/402)."""

    def __init__(self, upstream: str, status: int, message: str, retry_after: int | None):
        super().__init__(message)
        self.upstream, self.status, self.message, self.retry_after = upstream, status, message, retry_after
        self.kind = {429: "rate_limited", 402: "insufficient_balance"}.get(status, "authentication")


class KeyLease:
    """One request's use of one key. `report` what the upstream said; `release` when the reply is over."""

    def __init__(self, pool: KeyPool, entry: PoolKey):
        self.pool, self.entry = pool, entry
        self.key: str = entry.key or ""
        self._released = False

    def report(self, status: int, retry_after: float | None = None, message: str = "") -> None:
        self.pool._report(self.entry, status, retry_after, message)

    def release(self) -> None:
        if not self._released:
            self._released = True
            with self.pool._lock:
                self.entry.in_flight -= 1

    def __enter__(self) -> KeyLease:  # noqa: PYI034 - Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class KeyPool:
    def __init__(self, upstream: str, keys: list[PoolKey], *, strategy: str = "round_robin",
                 set_aside_seconds: float = 600.0, store: Store | None = None,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self.upstream, self.keys, self.strategy = upstream, keys, strategy
        self.set_aside_seconds = set_aside_seconds
        self.store = store
        self._clock, self._monotonic = clock, monotonic
        self._next = 0
        self._lock = threading.Lock()
        self._shared_read = -math.inf
        self.scope = f"keypool:{upstream}"

    @classmethod
    def from_config(cls, config: UpstreamConfig, *, store: Store | None = None,
                    env: Mapping[str, str] | None = None) -> KeyPool:
        import os

        keys = []
        for source in config.key_sources:
            try:
                keys.append(PoolKey(source, resolve_key(source, env if env is not None else os.environ)))
            except KeyUnavailable as exc:
                keys.append(PoolKey(source, None, str(exc), state="missing", reason=str(exc)))
        return cls(config.name, keys, strategy=config.key_strategy, set_aside_seconds=config.key_set_aside_seconds,
                   store=store)

    # ---- picking -----------------------------------------------------------------------------------------------
    def pick(self, exclude: set[int] | frozenset[int] = frozenset()) -> KeyLease:
        """A lease on the best usable key not in `exclude` (indexes already tried), or NoKeyAvailable."""
        self._refresh_shared()
        now = self._clock()
        with self._lock:
            order = [(self._next + i) % len(self.keys) for i in range(len(self.keys))]
            usable = [i for i in order if i not in exclude and self._usable(self.keys[i], now)]
            if not usable:
                raise self._exhausted(now)
            if self.strategy == "least_busy":
                chosen = min(usable, key=lambda i: self.keys[i].in_flight)  # min keeps the first of ties
            else:
                chosen = usable[0]
            self._next = (chosen + 1) % len(self.keys)
            entry = self.keys[chosen]
            entry.in_flight += 1
            entry.requests += 1
        return KeyLease(self, entry)

    def index_of(self, lease: KeyLease) -> int:
        return self.keys.index(lease.entry)

    @staticmethod
    def _usable(entry: PoolKey, now: float) -> bool:
        if entry.key is None:
            return False
        if entry.state in ("cooling", "set_aside") and entry.until <= now:
            entry.state, entry.reason, entry.until = "ok", "", 0.0
        return entry.state == "ok"

    def _exhausted(self, now: float) -> NoKeyAvailable:
        cooling = [k.until for k in self.keys if k.state == "cooling"]
        if cooling:
            wait = max(1, math.ceil(min(cooling) - now))
            return NoKeyAvailable(self.upstream, 429, f"every API key of the upstream `{self.upstream}` is rate-"
                                  f"limited; the first is usable again in {wait} s", wait)
        reasons = sorted({k.reason for k in self.keys if k.reason})
        status = 402 if any(k.state == "set_aside" and k.status == 402 for k in self.keys) else 401
        return NoKeyAvailable(self.upstream, status, f"no API key of the upstream `{self.upstream}` is usable: "
                              f"{'; '.join(reasons) or 'none configured'}", None)

    # ---- outcomes ----------------------------------------------------------------------------------------------
    def _report(self, entry: PoolKey, status: int, retry_after: float | None, message: str) -> None:
        if status == 429:
            seconds = float(retry_after) if retry_after is not None else DEFAULT_COOL_DOWN
            self._mark(entry, "cooling", self._clock() + max(seconds, 0.001), f"rate limited (429) for {seconds:g} s")
        elif status in SET_ASIDE_STATUSES:
            reason = SET_ASIDE_STATUSES[status] + (f": {message}" if message else "")
            entry.status = status
            self._mark(entry, "set_aside", self._clock() + self.set_aside_seconds, reason[:300])

    def _mark(self, entry: PoolKey, state: str, until: float, reason: str) -> None:
        with self._lock:
            entry.state, entry.until, entry.reason = state, until, reason
        status = entry.status if state == "set_aside" else 429
        log.warning("upstream %s: key %s %s until %s: %s", self.upstream, mask(entry.key or ""),
                    state.replace("_", " "), time.strftime("%H:%M:%S", time.gmtime(until)), reason)
        if self.store is not None:
            try:
                self.store.put_mark(self.scope, entry.id, until, f"{state}|{status}|{reason}")
            except StoreError as exc:
                log.warning("key pool: state of a key not shared (%s)", exc)

    def _refresh_shared(self) -> None:
        if self.store is None:
            return
        now = self._monotonic()
        if now - self._shared_read < SHARED_REFRESH:
            return
        self._shared_read = now
        try:
            marks = self.store.get_marks(self.scope)
        except StoreError as exc:
            log.warning("key pool: shared state not read (%s)", exc)
            return
        with self._lock:
            for entry in self.keys:
                mark = marks.get(entry.id) if entry.key else None
                if mark is not None and mark[0] > entry.until:
                    state, _, rest = mark[1].partition("|")
                    status, _, reason = rest.partition("|")
                    entry.state, entry.until, entry.reason = state, mark[0], reason
                    entry.status = int(status) if status.isdigit() else 0

    # ---- reporting ---------------------------------------------------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        """Each key's state, masked (for /readyz, doctor and the key-pool metric)."""
        self._refresh_shared()
        now = self._clock()
        described = []
        with self._lock:
            for entry in self.keys:
                self._usable(entry, now)
                item: dict[str, Any] = {"source": entry.source, "key": mask(entry.key) if entry.key else None,
                                        "state": entry.state, "in_flight": entry.in_flight,
                                        "requests": entry.requests}
                if entry.state in ("cooling", "set_aside"):
                    item["seconds_left"] = max(0, math.ceil(entry.until - now))
                if entry.reason:
                    item["reason"] = entry.reason
                described.append(item)
        return described


def with_failover(send: Callable[[str], T], pool: KeyPool) -> tuple[T, KeyLease]:
    """`send(key)` with each usable key in turn until one is accepted: (its reply, its lease; release the lease
    when the reply is over). A key-specific refusal (401, 402, 429) is reported and the next key tried; any other
    error is reported as nothing and raised. When no key is left: the last refusal, or NoKeyAvailable."""
    tried: set[int] = set()
    last_error: BaseException | None = None
    while True:
        try:
            lease = pool.pick(exclude=tried)
        except NoKeyAvailable:
            if last_error is not None:
                raise last_error from None
            raise
        tried.add(pool.index_of(lease))
        try:
            reply = send(lease.key)
        except Exception as exc:
            status = getattr(exc, "status", None)
            lease.release()
            if status in (401, 402, 429):
                lease.report(status, getattr(exc, "retry_after", None), str(getattr(exc, "message", "")))
                last_error = exc
                continue
            raise
        return reply, lease
