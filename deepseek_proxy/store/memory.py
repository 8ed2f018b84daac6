"""The in-process backend (`[store] url = "memory://"`): for tests and a single-process proxy that needs no
durability. Not shared between gunicorn workers; gone at restart. Same semantics as the others, so the contract
tests run on it too. Records are kept encoded, as the other backends keep them: a caller never shares a dict
with the store."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..jsonfast import loads
from .base import (
    Admitted,
    ClientKeyRecord,
    KeyNameTaken,
    Store,
    StoredResponse,
    UsageRow,
    find_item,
    now_seconds,
    sliding_window,
    window_start,
)


class MemoryStore(Store):
    def __init__(self, **limits: Any):
        super().__init__(**limits)
        self._responses: dict[str, tuple[bytes, bytes, float]] = {}  # id → (record, input items, expires_at)
        self._reasoning: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._keys: dict[str, dict[str, Any]] = {}  # name → ClientKeyRecord.to_json(), changed under the lock
        self._spent: dict[str, float] = {}
        self._usage: list[tuple[float, bytes]] = []  # (at, UsageRow.encode()), oldest first
        self._counters: dict[tuple[str, float], int] = {}  # (counter, window start) → count
        self._slots: dict[str, dict[str, float]] = {}  # name → token → expires_at
        self._marks: dict[str, dict[str, tuple[float, str]]] = {}

    def put_response(self, record: StoredResponse) -> None:
        now = now_seconds()
        inputs, _ = self._prepare_put(record, now)
        with self._lock:
            if record.previous_response_id:
                previous = self._live(record.previous_response_id, now)
                record.follow(previous[0] if previous else None)
            self._responses[record.id] = (record.encode_meta(with_expiry=True), inputs, record.expires_at)

    def _live(self, response_id: str, now: float) -> tuple[bytes, bytes, float] | None:
        entry = self._responses.get(response_id)
        return entry if entry is not None and entry[2] > now else None

    def get_response(self, response_id: str, *, with_input: bool = False) -> StoredResponse | None:
        with self._lock:
            entry = self._live(response_id, now_seconds())
        if entry is None:
            return None
        return StoredResponse.decode(response_id, entry[0], input_blob=entry[1] if with_input else None)

    def delete_response(self, response_id: str) -> bool:
        with self._lock:
            entry = self._responses.pop(response_id, None)
        return entry is not None and entry[2] > now_seconds()

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


    # ---- client keys -------------------------------------------------------------------------------------------
    def _key_record(self, data: dict[str, Any]) -> ClientKeyRecord:
        return ClientKeyRecord.from_json(data, self._spent.get(data["name"], 0.0))

    def put_client_key(self, record: ClientKeyRecord) -> None:
        with self._lock:
            existing = self._keys.get(record.name)
            if existing is not None and existing["revoked_at"] is None:
                raise KeyNameTaken(record.name)
            self._keys[record.name] = record.to_json()

    def find_client_key(self, key_hash: str) -> ClientKeyRecord | None:
        with self._lock:
            for data in self._keys.values():
                if data["key_hash"] == key_hash:
                    return self._key_record(dict(data))
        return None

    def get_client_key(self, name: str) -> ClientKeyRecord | None:
        with self._lock:
            data = self._keys.get(name)
            return self._key_record(dict(data)) if data is not None else None

    def list_client_keys(self) -> list[ClientKeyRecord]:
        with self._lock:
            return [self._key_record(dict(self._keys[name])) for name in sorted(self._keys)]

    def _update_key(self, name: str, change: Callable[[dict[str, Any]], bool]) -> bool:
        with self._lock:
            data = self._keys.get(name)
            return data is not None and change(data)

    # ---- usage -------------------------------------------------------------------------------------------------
    def add_usage(self, row: UsageRow) -> None:
        with self._lock:
            self._usage.append((row.at, row.encode()))
            self._spent[row.key_name] = self._spent.get(row.key_name, 0.0) + row.cost_usd
            horizon = now_seconds() - self.usage_retention_seconds
            while self._usage and self._usage[0][0] < horizon:
                self._usage.pop(0)

    def usage_rows(self, since: float | None = None, until: float | None = None) -> list[UsageRow]:
        low, high = self._usage_window(since, until, now_seconds())
        with self._lock:
            rows = [UsageRow.decode(blob) for at, blob in self._usage if low <= at < high]
        return sorted(rows, key=lambda row: row.at)

    def spent_usd(self, key_name: str) -> float:
        with self._lock:
            return self._spent.get(key_name, 0.0)

    # ---- limits ------------------------------------------------------------------------------------------------
    def admit(self, rates: list[tuple[str, float, int]], slots: list[tuple[str, int, float]]) -> Admitted:
        import uuid

        now = now_seconds()
        with self._lock:
            for index, (name, limit, _) in enumerate(slots):
                held = {t: e for t, e in self._slots.get(name, {}).items() if e > now}
                self._slots[name] = held
                if len(held) >= limit:
                    return Admitted(False, refused_slot=index)
            counted = []
            for index, (counter, window, limit) in enumerate(rates):
                start = window_start(now, window)
                current = self._counters.get((counter, start), 0)
                allowed, wait = sliding_window(self._counters.get((counter, start - window), 0), current, now - start,
                                               window, limit)
                if not allowed:
                    return Admitted(False, refused_rate=index, wait=wait)
                counted.append((counter, start, current + 1, window))
            for counter, start, count, window in counted:
                self._counters[(counter, start)] = count
                if count == 1:  # a new window: the one before the previous is of no more use
                    for stale in [k for k in self._counters if k[0] == counter and k[1] < start - window]:
                        del self._counters[stale]
            tokens = [uuid.uuid4().hex for _ in slots]
            for (name, _, ttl), token in zip(slots, tokens, strict=True):
                self._slots[name][token] = now + ttl
            return Admitted(True, tokens=tokens)

    def refresh_slot(self, name: str, token: str, ttl_seconds: float) -> None:
        with self._lock:
            held = self._slots.get(name, {})
            if token in held:
                held[token] = now_seconds() + ttl_seconds

    def release_slot(self, name: str, token: str) -> None:
        with self._lock:
            self._slots.get(name, {}).pop(token, None)

    def slots_in_use(self, name: str) -> int:
        now = now_seconds()
        with self._lock:
            return sum(1 for e in self._slots.get(name, {}).values() if e > now)

    # ---- marks -------------------------------------------------------------------------------------------------
    def put_mark(self, scope: str, member: str, until: float, reason: str) -> None:
        with self._lock:
            self._marks.setdefault(scope, {})[member] = (until, reason)

    def get_marks(self, scope: str) -> dict[str, tuple[float, str]]:
        now = now_seconds()
        with self._lock:
            return {m: v for m, v in self._marks.get(scope, {}).items() if v[0] > now}

    def clear_mark(self, scope: str, member: str) -> None:
        with self._lock:
            self._marks.get(scope, {}).pop(member, None)
