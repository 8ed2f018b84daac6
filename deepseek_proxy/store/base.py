"""The store's interface: what every backend (sqlite.py, redis.py, memory.py) guarantees.

One small interface, so the doors never know which backend holds their state. Every backend passes the same
contract tests (tests/unit/test_store.py).

Guarantees common to all methods:
- **Atomic writes.** `put_response` stores the record, its input items and its item index together or not at all;
  a reader (another greenlet, worker or instance) sees the old record or the new one, never half of one.
- **TTL.** Every record has an `expires_at` (unix seconds), set at write time from the TTL of its kind
  (`[store] ttl_days` for responses, `reasoning_ttl_days` for the reasoning cache). From that instant on it is
  invisible to every read, at once; the space is reclaimed lazily (SQLite: `sweep`, run every so often by the
  writes themselves; Redis: its own key expiry). A stored response's TTL counts from its own creation, as
  OpenAI's retention does: when an earlier turn of a conversation has expired, `get_conversation` says so
  (None) rather than return a silently shortened history.
- **Size limit.** A response whose encoded record (Response object + input items) exceeds
  `[store] max_response_mb` is refused with `ResponseTooLarge`, and nothing of it is kept.
- **Failures.** A backend that cannot be reached or stays locked raises `StoreUnavailable` (never a backend's
  own exception type), so a door can answer with a clear error, or go on without state where that is safe
  (the reasoning cache does: see ReasoningCacheAdapter).
- **Processes and greenlets.** A store object may be created before gunicorn forks; each process opens its own
  connection lazily on first use. Calls are short and safe from many greenlets of one process.
- **`store: false`.** The store keeps only what it is given: a door that honours `store: false` simply does not
  call `put_response`.

The team features of issue 12 (deepseek_proxy/ops), each a method group below with a table / key prefix per
backend; no TTL unless said:
- client keys: `put_client_key(ClientKeyRecord)` (name, sha256 of the key — never the key —, models, budget,
  rpm, concurrency, created_at, revoked_at), `find_client_key(key_hash)`, `get_client_key(name)`,
  `list_client_keys()`, `revoke_client_key(name)`, `touch_client_key(name, at)` (last used).
  SQLite table `client_keys`; Redis hash `{prefix}ckey:{name}` + `{prefix}ckeyhash:{hash}` → name.
- usage rows: `add_usage(UsageRow)` (appended; adds its cost to the key's `spent_usd` in the same transaction),
  `usage_rows(since, until)`, `spent_usd(key_name)`. Kept `usage_retention_seconds`; SQLite table `usage`
  indexed by `at`, Redis a stream per UTC day expiring after the retention.
- rate-limit counters: `hit(counter, window_seconds, limit) -> (allowed, retry_after)`, a sliding window (the
  weighted previous + current fixed window, see `sliding_window`), atomic across instances (Redis: one Lua
  script; SQLite: one IMMEDIATE transaction); `acquire_slot(name, limit, ttl)` / `refresh_slot` /
  `release_slot(name, token)` for concurrency limits (slots expire, so a killed worker never leaks one for
  longer than the ttl).
- marks: `put_mark(scope, member, until, reason)` / `get_marks(scope)`: short-lived shared flags (the upstream
  key pool's cool-downs and set-aside keys), invisible once `until` has passed.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..jsonfast import dumps, loads

log = logging.getLogger(__name__)

Order = Literal["asc", "desc"]
MAX_PAGE = 100  # OpenAI's limit for list endpoints


class StoreError(Exception):
    """Base of the store's own errors."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached, or stayed locked past the timeout. The message names no secret."""


class ResponseTooLarge(StoreError):
    """The encoded record is larger than `[store] max_response_mb`; nothing was kept."""

    def __init__(self, size: int, limit: int):
        super().__init__(f"the response is {size / 1048576:.1f} MB encoded, more than the store keeps "
                         f"({limit / 1048576:g} MB, [store] max_response_mb)")
        self.size, self.limit = size, limit


class KeyNameTaken(StoreError, ValueError):
    """A client key that is not revoked already has this name."""

    def __init__(self, name: str):
        super().__init__(f"a client key named {name!r} exists; revoke it first (deepseek-proxy keys revoke {name})")
        self.name = name


class InvalidCursor(StoreError, ValueError):
    """`after` / `before` names no item of this response's input."""

    def __init__(self, param: str, item_id: str):
        super().__init__(f"`{param}` names no input item of this response: {item_id!r}")
        self.param = param


@dataclass
class StoredResponse:
    """One stored response.

    `response` is the Response object as the client last saw it (its `output` holds the output items);
    `input_items` are this request's own input items, as given (item references already resolved by the door),
    not the expansion of `previous_response_id`; None when the read did not ask for them.
    """

    id: str
    response: dict[str, Any]
    input_items: list[dict[str, Any]] | None
    model: str
    created_at: int
    previous_response_id: str | None = None
    # Set by the store from the TTL when 0. Absolute unix time, so every instance agrees.
    expires_at: float = 0.0
    # Ids of the earlier responses of the conversation, oldest first (filled by the store at put time).
    chain: list[str] = field(default_factory=list)

    @property
    def output_items(self) -> list[dict[str, Any]]:
        return self.response.get("output") or []

    # How every backend writes a record: the same bytes everywhere, so stored records keep reading.
    def encode_meta(self, *, with_expiry: bool) -> bytes:
        """The record without its input items: response (with its output), model, created_at, previous_response_id,
        chain, and expires_at at the end where the backend has no column for it (Redis, memory)."""
        meta: dict[str, Any] = {"response": self.response, "model": self.model, "created_at": self.created_at,
                                "previous_response_id": self.previous_response_id, "chain": self.chain}
        if with_expiry:
            meta["expires_at"] = self.expires_at
        return dumps(meta)

    @classmethod
    def decode(cls, response_id: str, meta_blob: bytes | str, *, expires_at: float | None = None,
               input_blob: bytes | str | None = None) -> StoredResponse:
        """A record from encode_meta's bytes (and its input items' JSON, when read). `expires_at` from the
        backend's column where it has one, else from the meta."""
        meta = loads(meta_blob)
        return cls(id=response_id, response=meta["response"], model=meta["model"], created_at=meta["created_at"],
                   previous_response_id=meta["previous_response_id"], chain=meta["chain"],
                   expires_at=meta["expires_at"] if expires_at is None else expires_at,
                   input_items=None if input_blob is None else loads(input_blob))

    def follow(self, previous_meta: bytes | str | None) -> None:
        """Set the chain of a record that continues `previous_response_id`: that one's chain, read from its stored
        meta (None: it is gone, and the chain starts at it), then its id. A record that continues none has none."""
        if self.previous_response_id is None:
            self.chain = []
            return
        earlier = loads(previous_meta)["chain"] if previous_meta else []
        self.chain = [*earlier, self.previous_response_id]


@dataclass
class ItemPage:
    """One page of `GET /v1/responses/{id}/input_items`, in the API's list shape (see as_list_object)."""

    data: list[dict[str, Any]]
    has_more: bool

    def as_list_object(self) -> dict[str, Any]:
        return {"object": "list", "data": self.data, "has_more": self.has_more,
                "first_id": self.data[0].get("id") if self.data else None,
                "last_id": self.data[-1].get("id") if self.data else None}


def paginate(items: list[dict[str, Any]], *, after: str | None = None, before: str | None = None,
             limit: int = 20, order: Order = "desc") -> ItemPage:
    """OpenAI's cursor pagination over a response's input items.

    `order` "desc" lists the newest (last) item first, "asc" in input order. `after` starts just past that item
    in the listing order, `before` stops just before it; both together give the items between them. Cursors are
    item ids (the first item with that id); an id not in the list raises InvalidCursor.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    if order not in ("asc", "desc"):
        raise ValueError(f'order must be "asc" or "desc", got {order!r}')
    listed = items if order == "asc" else items[::-1]
    start, stop = 0, len(listed)
    if after is not None:
        start = _position(listed, after, "after") + 1
    if before is not None:
        stop = _position(listed, before, "before")
    window = listed[start:stop] if start < stop else []
    return ItemPage(data=window[:limit], has_more=len(window) > limit)


def _position(items: list[dict[str, Any]], item_id: str, param: str) -> int:
    for index, item in enumerate(items):
        if item.get("id") == item_id:
            return index
    raise InvalidCursor(param, item_id)


def find_item(items: list[dict[str, Any]], item_id: str) -> dict[str, Any] | None:
    return next((item for item in items if item.get("id") == item_id), None)


class Store(ABC):
    """The response store (issue 11) and the shared caches. See the module docstring for the guarantees."""

    def __init__(self, *, ttl_seconds: float, reasoning_ttl_seconds: float, max_response_bytes: int,
                 usage_retention_seconds: float = 400 * 86400.0):
        self.usage_retention_seconds = usage_retention_seconds
        self.ttl_seconds = ttl_seconds
        self.reasoning_ttl_seconds = reasoning_ttl_seconds
        self.max_response_bytes = max_response_bytes

    # ---- responses --------------------------------------------------------------------------------------------
    @abstractmethod
    def put_response(self, record: StoredResponse) -> None:
        """Store (or replace: an in-progress snapshot, then the completed one) a response with its input items.

        Sets `record.expires_at` (now + ttl when 0) and `record.chain` (the previous response's chain + its id).
        Every item with an `id` becomes findable by `get_item`; an output item wins over an input item echoing
        the same id. Raises ResponseTooLarge over the size limit, StoreUnavailable when the backend fails.
        """

    @abstractmethod
    def get_response(self, response_id: str, *, with_input: bool = False) -> StoredResponse | None:
        """The live record, or None (unknown, deleted or expired). Input items only when `with_input`."""

    @abstractmethod
    def delete_response(self, response_id: str) -> bool:
        """Delete the record and its input items; True when a live one was there. Its items are no longer
        findable through it (an item another live response also holds stays findable there)."""

    def list_input_items(self, response_id: str, *, after: str | None = None, before: str | None = None,
                         limit: int = 20, order: Order = "desc") -> ItemPage | None:
        """A page of the response's input items (see `paginate`), or None when the response is not live."""
        record = self.get_response(response_id, with_input=True)
        if record is None:
            return None
        return paginate(record.input_items or [], after=after, before=before, limit=limit, order=order)

    @abstractmethod
    def get_item(self, item_id: str) -> dict[str, Any] | None:
        """The item with this id from a live stored response (output items first), for `item_reference`."""

    def get_items(self, item_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Several items at once (the ones found); backends may do it in fewer round trips."""
        found = {}
        for item_id in dict.fromkeys(item_ids):
            item = self.get_item(item_id)
            if item is not None:
                found[item_id] = item
        return found

    @abstractmethod
    def get_conversation(self, response_id: str) -> list[StoredResponse] | None:
        """The conversation `previous_response_id` continues, oldest first and ending with `response_id`, each
        with its input items: the history is each record's input items then its output items, in order.
        None when the response or any earlier one is missing or expired (never a shortened history)."""

    # ---- reasoning fallback cache (today per process: translate/reasoning.py ReasoningCache) -------------------
    @abstractmethod
    def put_reasoning(self, key: str, text: str) -> None:
        """Keep `text` under `key` (a call_id) for `reasoning_ttl_seconds`, replacing any earlier value."""

    @abstractmethod
    def get_reasoning(self, key: str) -> str | None:
        """The live text under `key`, or None."""

    # ---- upkeep ------------------------------------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> int:
        """Reclaim the space of expired records; returns how many went. Reads never need it (expired records are
        invisible anyway); backends whose keys expire by themselves do nothing."""
        return 0

    def ping(self) -> None:  # noqa: B027 - a deliberate do-nothing default (memory store)
        """Reach the backend now (for start-up, `doctor`, `/readyz`); raises StoreUnavailable."""

    def close(self) -> None:  # noqa: B027 - a deliberate do-nothing default (memory store)
        """Release this process's connection (the next call opens a new one)."""

    # ---- client keys (issue 12; deepseek_proxy/ops/keys.py) -----------------------------------------------------
    def put_client_key(self, record: ClientKeyRecord) -> None:
        """Add a key. Raises KeyNameTaken when a key that is not revoked has the name (a revoked one is replaced:
        its usage rows keep the name, so the name's spending carries over)."""
        raise NotImplementedError

    def find_client_key(self, key_hash: str) -> ClientKeyRecord | None:
        """The key whose sha256 (hex) is `key_hash`, revoked or not (the caller refuses a revoked one)."""
        raise NotImplementedError

    def get_client_key(self, name: str) -> ClientKeyRecord | None:
        raise NotImplementedError

    def list_client_keys(self) -> list[ClientKeyRecord]:
        """Every key, by name."""
        raise NotImplementedError

    def revoke_client_key(self, name: str) -> bool:
        """Revoke now; True when a key not yet revoked had the name."""
        now = now_seconds()

        def revoke(data: dict[str, Any]) -> bool:
            if data.get("revoked_at") is not None:
                return False
            data["revoked_at"] = now
            return True

        return self._update_key(name, revoke)

    def touch_client_key(self, name: str, at: float) -> None:
        """Record that the key was used at `at` (callers throttle this: once a minute per process is plenty)."""
        def touch(data: dict[str, Any]) -> bool:
            data["last_used_at"] = at
            return True

        self._update_key(name, touch)

    def _update_key(self, name: str, change: Callable[[dict[str, Any]], bool]) -> bool:
        """Apply `change` to the named key's stored JSON (ClientKeyRecord.to_json()) atomically, writing it back
        when `change` returns True. False when no key has the name or `change` changed nothing."""
        raise NotImplementedError

    # ---- usage rows ----------------------------------------------------------------------------------------------
    def add_usage(self, row: UsageRow) -> None:
        """Append a row, and add its cost to its key's spent_usd, atomically."""
        raise NotImplementedError

    def usage_rows(self, since: float | None = None, until: float | None = None) -> list[UsageRow]:
        """The rows with since <= at < until (either open), oldest first, within the retention."""
        raise NotImplementedError

    def spent_usd(self, key_name: str) -> float:
        """What the key's requests have cost in all (every row ever added for it, retention or not)."""
        raise NotImplementedError

    def _usage_window(self, since: float | None, until: float | None, now: float) -> tuple[float, float]:
        """[low, high) of a usage_rows call: `since` no earlier than the retention allows, `until` open → +inf."""
        horizon = now - self.usage_retention_seconds
        return (horizon if since is None else max(since, horizon)), (math.inf if until is None else until)

    # ---- rate-limit counters and concurrency slots -------------------------------------------------------------
    def admit(self, rates: list[tuple[str, float, int]], slots: list[tuple[str, int, float]]) -> Admitted:
        """Several limits at once: `rates` (counter, window_seconds, limit) as `hit`, `slots` (name, limit,
        ttl_seconds) as `acquire_slot`. All granted (every counter counted, every slot taken: `tokens` in the
        order of `slots`) or none: nothing is counted or taken when one refuses, so a request may try again.
        SQLite does it in one transaction, Redis in one script (one round trip), memory under its lock."""
        raise NotImplementedError

    def hit(self, counter: str, window_seconds: float, limit: int) -> tuple[bool, float]:
        """Count one event against `limit` per sliding `window_seconds`: (True, 0) and counted, or (False, seconds
        until one more would be allowed) and not counted. `admit` with one rate."""
        admitted = self.admit([(counter, window_seconds, limit)], [])
        return admitted.granted, admitted.wait

    def acquire_slot(self, name: str, limit: int, ttl_seconds: float) -> str | None:
        """One of `limit` slots (a token to release), or None when all are held. A slot not refreshed or released
        within ttl_seconds is free again. `admit` with one slot."""
        admitted = self.admit([], [(name, limit, ttl_seconds)])
        return admitted.tokens[0] if admitted.granted else None

    def refresh_slot(self, name: str, token: str, ttl_seconds: float) -> None:
        raise NotImplementedError

    def release_slot(self, name: str, token: str) -> None:
        raise NotImplementedError

    def slots_in_use(self, name: str) -> int:
        raise NotImplementedError

    # ---- marks ---------------------------------------------------------------------------------------------------
    def put_mark(self, scope: str, member: str, until: float, reason: str) -> None:
        """Flag `member` of `scope` until the unix time `until` (replacing any earlier mark)."""
        raise NotImplementedError

    def get_marks(self, scope: str) -> dict[str, tuple[float, str]]:
        """member → (until, reason) for the live marks of `scope`."""
        raise NotImplementedError

    def clear_mark(self, scope: str, member: str) -> None:
        raise NotImplementedError

    # ---- helpers for backends ----------------------------------------------------------------------------------
    def _prepare_put(self, record: StoredResponse, now: float) -> tuple[bytes, int]:
        """Before a put writes anything: stamp the expiry (now + ttl when 0), encode the input items, and refuse a
        record over the size limit. Returns (input items' JSON, encoded size); the chain, filled in by the write,
        adds only ids, so it is left out of the size."""
        if not record.expires_at:
            record.expires_at = now + self.ttl_seconds
        input_blob = dumps(record.input_items or [])
        size = len(dumps({"response": record.response, "model": record.model, "created_at": record.created_at}))
        size += len(input_blob)
        if size > self.max_response_bytes:
            raise ResponseTooLarge(size, self.max_response_bytes)
        return input_blob, size


class ReasoningCacheAdapter:
    """The reasoning fallback cache on a Store, with ReasoningCache's get/put, so a door can swap one for the
    other. A store failure never fails a request: the cache is the fallback (the blob in `encrypted_content` is
    the primary carrier), so a failure is logged and read as a miss."""

    def __init__(self, store: Store):
        self.store = store

    def put(self, call_id: str, reasoning: str) -> None:
        try:
            self.store.put_reasoning(call_id, reasoning)
        except StoreError as exc:
            log.warning("reasoning cache: not kept (%s)", exc)

    def get(self, call_id: str) -> str | None:
        try:
            return self.store.get_reasoning(call_id)
        except StoreError as exc:
            log.warning("reasoning cache: not read (%s)", exc)
            return None


def now_seconds() -> float:
    return time.time()


@dataclass
class ClientKeyRecord:
    """A client key as the store keeps it: its sha256, never the key. Limits None: none of its own."""

    name: str
    key_hash: str  # sha256 of the key, hex
    created_at: float
    hint: str = ""  # the key's first characters ("dsp-AbC…"), so a person can tell keys apart
    models: tuple[str, ...] = ()  # empty: every model
    budget_usd: float | None = None
    rpm: int | None = None
    concurrency: int | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None
    spent_usd: float = 0.0  # filled by the store on reads

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "key_hash": self.key_hash, "created_at": self.created_at, "hint": self.hint,
                "models": list(self.models), "budget_usd": self.budget_usd, "rpm": self.rpm,
                "concurrency": self.concurrency, "revoked_at": self.revoked_at, "last_used_at": self.last_used_at}

    @classmethod
    def from_json(cls, data: dict[str, Any], spent_usd: float = 0.0) -> ClientKeyRecord:
        return cls(name=data["name"], key_hash=data["key_hash"], created_at=data["created_at"],
                   hint=data.get("hint", ""), models=tuple(data.get("models") or ()),
                   budget_usd=data.get("budget_usd"), rpm=data.get("rpm"), concurrency=data.get("concurrency"),
                   revoked_at=data.get("revoked_at"), last_used_at=data.get("last_used_at"), spent_usd=spent_usd)

    def encode(self) -> bytes:
        """As the SQLite and Redis stores keep it (JSON)."""
        return dumps(self.to_json())

    @classmethod
    def decode(cls, blob: bytes | str, spent_usd: float = 0.0) -> ClientKeyRecord:
        return cls.from_json(loads(blob), spent_usd)


@dataclass
class UsageRow:
    """One request's usage. `cost_usd` is priced when the row is made (prices change; a bill does not), and so is
    `saved_usd`, what the prefix cache saved: the cost with every input token at the cache-miss price, less
    `cost_usd` (None in rows written before it was recorded). `conversation` is the request's conversation key
    (Codex's prompt_cache_key or session, Claude Code's session, ...; "" when none is known).

    Stored as JSON (`encode`). A row written by an older version lacks the newer fields and reads with their
    defaults; fields a newer version added are ignored, so old and new proxies can share one store."""

    at: float
    key_name: str
    model: str
    upstream: str
    status: int
    input_tokens: int = 0  # all of the prompt, cached ones included (as DeepSeek's prompt_tokens)
    cached_tokens: int = 0
    output_tokens: int = 0  # all of the completion, reasoning included
    reasoning_tokens: int = 0
    duration_ms: float = 0.0
    ttft_ms: float | None = None
    cost_usd: float = 0.0
    door: str = ""
    request_id: str = ""
    conversation: str = ""
    saved_usd: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UsageRow:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})

    def encode(self) -> bytes:
        return dumps(self.to_json())

    @classmethod
    def decode(cls, blob: bytes | str) -> UsageRow:
        return cls.from_json(loads(blob))


@dataclass
class Admitted:
    """What `Store.admit` decided: granted (with the slot tokens), or the index of the rate or slot that refused
    and, for a rate, the seconds until one more would fit."""

    granted: bool
    tokens: list[str] = field(default_factory=list)
    refused_rate: int | None = None
    refused_slot: int | None = None
    wait: float = 0.0


def sliding_window(previous: int, current: int, elapsed: float, window: float, limit: int) -> tuple[bool, float]:
    """The sliding-window estimate (the previous fixed window's count weighted by how much of it still overlaps,
    plus the current one's): may one more event come `elapsed` seconds into the current window? Returns
    (allowed, seconds to wait when not). The backends run the same arithmetic (Redis in Lua)."""
    overlap = 1.0 - elapsed / window
    if previous * overlap + current + 1 <= limit:
        return True, 0.0
    if current + 1 <= limit:  # waiting for the previous window to slide further out is enough
        needed = 1.0 - (limit - current - 1) / previous
        return False, max(0.001, (needed - elapsed / window) * window)
    # The current window is full: wait for it to become the previous one and slide out far enough.
    needed = 1.0 - (limit - 1) / current if current else 0.0
    return False, max(0.001, (window - elapsed) + needed * window)


def window_start(now: float, window: float) -> float:
    return math.floor(now / window) * window
