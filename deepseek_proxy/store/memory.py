"""The in-process backend (`[store] url = "memory://"`): for tests and a single-process proxy that needs no
durability. Not shared between gunicorn workers; gone at restart. Same semantics as the others, so the contract
tests run on it too. Records are kept encoded, as the other backends keep them: a caller never shares a dict
with the store."""

from __future__ import annotations

import threading
from typing import Any

from ..jsonfast import dumps, loads
from .base import (
    ItemPage,
    Order,
    Store,
    StoredResponse,
    find_item,
    now_seconds,
    paginate,
)


class MemoryStore(Store):
    def __init__(self, **limits: Any):
        super().__init__(**limits)
        self._responses: dict[str, tuple[bytes, bytes, float]] = {}  # id → (record, input items, expires_at)
        self._reasoning: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def put_response(self, record: StoredResponse) -> None:
        now = now_seconds()
        self._stamp(record, now)
        with self._lock:
            previous = self._live(record.previous_response_id, now) if record.previous_response_id else None
            if record.previous_response_id:
                chain = loads(previous[0])["chain"] if previous else []
                record.chain = [*chain, record.previous_response_id]
            meta = dumps({"id": record.id, "response": record.response, "model": record.model,
                          "created_at": record.created_at, "previous_response_id": record.previous_response_id,
                          "expires_at": record.expires_at, "chain": record.chain})
            inputs = dumps(record.input_items or [])
            self._check_size(len(meta) + len(inputs))
            self._responses[record.id] = (meta, inputs, record.expires_at)

    def _live(self, response_id: str, now: float) -> tuple[bytes, bytes, float] | None:
        entry = self._responses.get(response_id)
        return entry if entry is not None and entry[2] > now else None

    def get_response(self, response_id: str, *, with_input: bool = False) -> StoredResponse | None:
        with self._lock:
            entry = self._live(response_id, now_seconds())
        if entry is None:
            return None
        meta = loads(entry[0])
        return StoredResponse(input_items=loads(entry[1]) if with_input else None, **meta)

    def delete_response(self, response_id: str) -> bool:
        with self._lock:
            entry = self._responses.pop(response_id, None)
        return entry is not None and entry[2] > now_seconds()

    def list_input_items(self, response_id: str, *, after: str | None = None, before: str | None = None,
                         limit: int = 20, order: Order = "desc") -> ItemPage | None:
        record = self.get_response(response_id, with_input=True)
        if record is None:
            return None
        return paginate(record.input_items or [], after=after, before=before, limit=limit, order=order)

    def get_item(self, item_id: str) -> dict[str, Any] | None:
        with self._lock:
            now = now_seconds()
            live = [entry for entry in self._responses.values() if entry[2] > now]
        for entry in live:  # output items first: they are the ones we issued
            found = find_item(loads(entry[0])["response"].get("output") or [], item_id)
            if found is not None:
                return found
        for entry in live:
            found = find_item(loads(entry[1]), item_id)
            if found is not None:
                return found
        return None

    def get_conversation(self, response_id: str) -> list[StoredResponse] | None:
        last = self.get_response(response_id, with_input=True)
        if last is None:
            return None
        records = []
        for earlier_id in last.chain:
            earlier = self.get_response(earlier_id, with_input=True)
            if earlier is None:
                return None
            records.append(earlier)
        return [*records, last]

    def put_reasoning(self, key: str, text: str) -> None:
        with self._lock:
            self._reasoning[key] = (text, now_seconds() + self.reasoning_ttl_seconds)

    def get_reasoning(self, key: str) -> str | None:
        with self._lock:
            entry = self._reasoning.get(key)
        return entry[0] if entry is not None and entry[1] > now_seconds() else None

    def sweep(self, now: float | None = None) -> int:
        now = now_seconds() if now is None else now
        with self._lock:
            gone = [k for k, v in self._responses.items() if v[2] <= now]
            for k in gone:
                del self._responses[k]
            stale = [k for k, v in self._reasoning.items() if v[1] <= now]
            for k in stale:
                del self._reasoning[k]
        return len(gone) + len(stale)
