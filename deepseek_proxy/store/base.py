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

Room for the team features of issue 12, not implemented yet (each a method group of this interface and a
table / key prefix of each backend, under the same TTL and atomicity rules):
- client keys: `put_client_key(KeyRecord)` (name, sha256 of the key — never the key —, models, budget, rpm,
  created_at, revoked_at), `find_client_key(key_hash)`, `list_client_keys()`, `revoke_client_key(name)`.
  No TTL; SQLite table `client_keys`, Redis hash `{prefix}key:{hash}`.
- usage rows: `add_usage(UsageRow)` (key name, model, upstream, input/cached/output/reasoning tokens, status,
  duration, ttft, at), `usage_summary(by, since)`, `spent_usd(key_name, since)`. Appended, kept for a
  configurable retention; SQLite table `usage` indexed by (key_name, at), Redis a stream per day.
- rate-limit counters: `hit(counter, window_seconds, limit) -> (allowed, retry_after)` (fixed or sliding window,
  atomic across instances: Redis INCR + PEXPIRE in one MULTI or a Lua script; SQLite UPSERT in one transaction),
  and `acquire_slot(name, limit, ttl)` / `release_slot(name, token)` for concurrent-stream limits (slots expire
  so a killed worker never leaks one).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

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

    def __init__(self, *, ttl_seconds: float, reasoning_ttl_seconds: float, max_response_bytes: int):
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

    @abstractmethod
    def list_input_items(self, response_id: str, *, after: str | None = None, before: str | None = None,
                         limit: int = 20, order: Order = "desc") -> ItemPage | None:
        """A page of the response's input items (see `paginate`), or None when the response is not live."""

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

    # ---- helpers for backends ----------------------------------------------------------------------------------
    def _stamp(self, record: StoredResponse, now: float) -> None:
        if not record.expires_at:
            record.expires_at = now + self.ttl_seconds

    def _check_size(self, size: int) -> None:
        if size > self.max_response_bytes:
            raise ResponseTooLarge(size, self.max_response_bytes)


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
