"""The shared backend: Redis (`[store] url = "redis://HOST:PORT/DB"`, rediss:// for TLS, unix:// for a socket),
what N proxy instances behind nginx use to see each other's responses and caches.

redis-py is an optional dependency (`pip install 'deepseek-proxy[redis]'`); open_store says so when it is missing.
Under gunicorn's gevent workers redis-py's sockets are gevent's, so a call yields to other greenlets while it
waits; its connection pool notices a fork and opens new connections in the child.

Keys (all under one prefix, default "deepseek-proxy:"), each with Redis's own expiry at the record's expires_at,
so expired records vanish without a sweep:
- `resp:{id}` hash: `meta` (JSON: response, model, created_at, previous_response_id, chain, expires_at) and
  `input` (JSON array of input items). Written in one MULTI/EXEC with the item index: atomic.
- `item:{item_id}` hash: response id → "0" (output, issued here) or "1" (input, echoed); expires with the
  longest-lived of its responses. A field whose response is gone is skipped on lookup.
- `reasoning:{call_id}` string "EXPIRES_MS:TEXT", expiring with the reasoning TTL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis as redis_py

from ..jsonfast import dumps, loads
from .base import (
    ItemPage,
    Order,
    Store,
    StoredResponse,
    StoreUnavailable,
    find_item,
    now_seconds,
    paginate,
)

T = TypeVar("T")
DEFAULT_PREFIX = "deepseek-proxy:"


class RedisStore(Store):
    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, **limits: Any):
        super().__init__(**limits)
        self.prefix = prefix
        # Connects on first use (after gunicorn's fork). Timeouts so a dead Redis fails a call, not hangs it.
        self._redis = redis_py.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10,
                                              health_check_interval=30)

    def _call(self, work: Callable[[redis_py.Redis], T]) -> T:
        try:
            return work(self._redis)
        except redis_py.RedisError as exc:
            # redis-py's messages name the host and port, never the password of the URL.
            raise StoreUnavailable(f"the Redis store: {exc}") from None

    def ping(self) -> None:
        self._call(lambda r: r.ping())

    def close(self) -> None:
        self._redis.close()

    def _resp(self, response_id: str) -> str:
        return f"{self.prefix}resp:{response_id}"

    def _item(self, item_id: str) -> str:
        return f"{self.prefix}item:{item_id}"

    # ---- responses --------------------------------------------------------------------------------------------
    def put_response(self, record: StoredResponse) -> None:
        now = now_seconds()
        self._stamp(record, now)
        inputs = record.input_items or []
        input_blob = dumps(inputs)
        meta_fields = {"response": record.response, "model": record.model, "created_at": record.created_at}
        self._check_size(len(dumps(meta_fields)) + len(input_blob))
        chain: list[str] = []
        if record.previous_response_id:
            previous = self._call(lambda r: r.hget(self._resp(record.previous_response_id or ""), "meta"))
            chain = [*(loads(previous)["chain"] if previous else []), record.previous_response_id]
        record.chain = chain
        meta = dumps({**meta_fields, "previous_response_id": record.previous_response_id, "chain": chain,
                      "expires_at": record.expires_at})
        expires_ms = int(record.expires_at * 1000)
        key = self._resp(record.id)
        indexed = [(item["id"], "0") for item in record.output_items if isinstance(item.get("id"), str)]
        outputs = {item_id for item_id, _ in indexed}
        indexed += [(item["id"], "1") for item in inputs
                    if isinstance(item.get("id"), str) and item["id"] not in outputs]

        def write(r: redis_py.Redis) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(key, mapping={"meta": meta, "input": input_blob})
            pipe.pexpireat(key, expires_ms)
            for item_id, kind in dict(indexed).items():
                index_key = self._item(item_id)
                pipe.hset(index_key, record.id, kind)
                pipe.pexpireat(index_key, expires_ms, nx=True)  # a new key: GT alone would not set it
                pipe.pexpireat(index_key, expires_ms, gt=True)
            pipe.execute()

        self._call(write)

    def _fetch(self, response_id: str, with_input: bool) -> StoredResponse | None:
        fields = ["meta", "input"] if with_input else ["meta"]
        values = self._call(lambda r: r.hmget(self._resp(response_id), fields))
        return _record(response_id, values)

    def get_response(self, response_id: str, *, with_input: bool = False) -> StoredResponse | None:
        return self._fetch(response_id, with_input)

    def delete_response(self, response_id: str) -> bool:
        record = self._fetch(response_id, True)

        def delete(r: redis_py.Redis) -> int:
            pipe = r.pipeline(transaction=True)
            pipe.delete(self._resp(response_id))
            if record is not None:
                for item in [*record.output_items, *(record.input_items or [])]:
                    if isinstance(item.get("id"), str):
                        pipe.hdel(self._item(item["id"]), response_id)
            return pipe.execute()[0]

        return bool(self._call(delete)) and record is not None

    def list_input_items(self, response_id: str, *, after: str | None = None, before: str | None = None,
                         limit: int = 20, order: Order = "desc") -> ItemPage | None:
        record = self._fetch(response_id, True)
        if record is None:
            return None
        return paginate(record.input_items or [], after=after, before=before, limit=limit, order=order)

    def get_item(self, item_id: str) -> dict[str, Any] | None:
        return self.get_items([item_id]).get(item_id)

    def get_items(self, item_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Two round trips however many ids (item_reference resolution is on the time-to-first-token path)."""
        wanted = list(dict.fromkeys(item_ids))
        if not wanted:
            return {}

        def holders(r: redis_py.Redis) -> list:
            pipe = r.pipeline(transaction=False)
            for item_id in wanted:
                pipe.hgetall(self._item(item_id))
            return pipe.execute()

        # (item id, response id, kind) to look at, outputs ("0") before echoes ("1") for each item
        holders_of = zip(wanted, self._call(holders), strict=True)
        candidates = [(item_id, response_id.decode(), kind) for item_id, held in holders_of
                      for response_id, kind in sorted(cast("dict[bytes, bytes]", held).items(),
                                                      key=lambda pair: pair[1])]
        if not candidates:
            return {}

        def fetch(r: redis_py.Redis) -> list:
            pipe = r.pipeline(transaction=False)
            for _, response_id, kind in candidates:
                pipe.hmget(self._resp(response_id), ["meta", "input" if kind == b"1" else "meta"])
            return pipe.execute()

        now = now_seconds()
        found: dict[str, dict[str, Any]] = {}
        for (item_id, _, kind), (meta, blob) in zip(candidates, self._call(fetch), strict=True):
            if item_id in found or meta is None:
                continue
            decoded = loads(meta)
            if decoded["expires_at"] <= now:
                continue
            items = loads(blob) if kind == b"1" else decoded["response"].get("output") or []
            item = find_item(items, item_id)
            if item is not None:
                found[item_id] = item
        return found

    def get_conversation(self, response_id: str) -> list[StoredResponse] | None:
        last = self._fetch(response_id, True)
        if last is None:
            return None
        if not last.chain:
            return [last]

        def fetch(r: redis_py.Redis) -> list:
            pipe = r.pipeline(transaction=False)
            for earlier in last.chain:
                pipe.hmget(self._resp(earlier), ["meta", "input"])
            return pipe.execute()

        records = [_record(earlier, values) for earlier, values in zip(last.chain, self._call(fetch), strict=True)]
        if any(record is None for record in records):
            return None
        return [*(record for record in records if record is not None), last]

    # ---- reasoning cache ---------------------------------------------------------------------------------------
    def put_reasoning(self, key: str, text: str) -> None:
        # "expires_ms:text": like the responses, the instant travels with the value, so reads agree to the ms.
        expires_ms = int((now_seconds() + self.reasoning_ttl_seconds) * 1000)
        self._call(lambda r: r.set(f"{self.prefix}reasoning:{key}", b"%d:" % expires_ms + text.encode("utf-8"),
                                   pxat=expires_ms))

    def get_reasoning(self, key: str) -> str | None:
        value = cast("bytes | None", self._call(lambda r: r.get(f"{self.prefix}reasoning:{key}")))
        if value is None:
            return None
        expires_ms, _, text = value.partition(b":")
        return text.decode("utf-8") if int(expires_ms) > now_seconds() * 1000 else None


def _record(response_id: str, values: list) -> StoredResponse | None:
    meta_blob = values[0]
    if meta_blob is None:
        return None
    meta = loads(meta_blob)
    # Redis expires the key itself (ms precision); the stored instant keeps every reader exact and in agreement.
    if meta["expires_at"] <= now_seconds():
        return None
    return StoredResponse(id=response_id, response=meta["response"], model=meta["model"],
                          created_at=meta["created_at"], previous_response_id=meta["previous_response_id"],
                          chain=meta["chain"], expires_at=meta["expires_at"],
                          input_items=loads(values[1]) if len(values) > 1 and values[1] is not None else None)
