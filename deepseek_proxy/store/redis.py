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
Issue 12 (no expiry unless said):
- `ckey:{name}` string: the ClientKeyRecord's JSON (the key's sha256, never the key); `ckeyhash:{sha256}` → name;
  `ckeys` set of names; `spent:{name}` the name's cost in all (INCRBYFLOAT in the same MULTI as its usage row).
- `usage:{YYYY-MM-DD}` stream (UTC day) of usage rows, expiring `usage_retention` after the day's end.
- `rl:{counter}:{window start}` counters (INCR + PEXPIRE in one Lua script, two windows long);
  `slots:{name}` sorted set token → expiry (Lua: drop expired, count, add); `marks:{scope}` hash
  member → "UNTIL:REASON".
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis as redis_py

from ..jsonfast import dumps, loads
from .base import (
    Admitted,
    ClientKeyRecord,
    KeyNameTaken,
    Store,
    StoredResponse,
    StoreUnavailable,
    UsageRow,
    find_item,
    now_seconds,
    window_start,
)

T = TypeVar("T")
DEFAULT_PREFIX = "deepseek-proxy:"

# Store.admit in one step, with base.sliding_window's arithmetic in Lua (so that read, decide and count are one
# atomic step on the server); `hit` is an admit of one rate.
# KEYS: for each rate its previous and current window counters, then each slot set.
# ARGV: now, number of rates, number of slots; per rate: elapsed, window, limit, expiry ms; per slot: limit,
# token, expires at. Returns {1} or {0, "slot", index} or {0, "rate", index, wait}; writes only when granting.
_ADMIT = """
local now, nr, ns = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local slot_args = 4 + 4 * nr
for i = 1, ns do
  local key = KEYS[2 * nr + i]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(ARGV[slot_args + (i - 1) * 3]) then return {0, 'slot', i - 1, '0'} end
end
for i = 1, nr do
  local a = 4 + (i - 1) * 4
  local previous = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
  local current = tonumber(redis.call('GET', KEYS[2 * i]) or '0')
  local elapsed, window, limit = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  if previous * (1 - elapsed / window) + current + 1 > limit then
    local wait
    if current + 1 <= limit then
      wait = ((1 - (limit - current - 1) / previous) - elapsed / window) * window
    else
      wait = (window - elapsed) + (1 - (limit - 1) / current) * window
    end
    if wait < 0.001 then wait = 0.001 end
    return {0, 'rate', i - 1, tostring(wait)}
  end
end
for i = 1, nr do
  redis.call('INCR', KEYS[2 * i])
  redis.call('PEXPIRE', KEYS[2 * i], ARGV[4 + (i - 1) * 4 + 3])
end
for i = 1, ns do
  local a = slot_args + (i - 1) * 3
  redis.call('ZADD', KEYS[2 * nr + i], ARGV[a + 2], ARGV[a + 1])
end
return {1}
"""


class RedisStore(Store):
    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX, **limits: Any):
        super().__init__(**limits)
        self.prefix = prefix
        # Connects on first use (after gunicorn's fork). Timeouts so a dead Redis fails a call, not hangs it.
        self._redis = redis_py.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10,
                                              health_check_interval=30)

    def _script(self, name: str, source: str) -> Any:
        scripts = self.__dict__.setdefault("_scripts", {})
        if name not in scripts:
            scripts[name] = self._redis.register_script(source)  # EVALSHA, loading it again after a restart
        return scripts[name]

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
        input_blob, _ = self._prepare_put(record, now_seconds())
        record.chain = []
        if record.previous_response_id:
            previous = self._call(lambda r: r.hget(self._resp(record.previous_response_id or ""), "meta"))
            record.follow(cast("bytes | None", previous))
        meta = record.encode_meta(with_expiry=True)
        expires_ms = int(record.expires_at * 1000)
        key = self._resp(record.id)
        indexed = [(item["id"], "0") for item in record.output_items if isinstance(item.get("id"), str)]
        outputs = {item_id for item_id, _ in indexed}
        indexed += [(item["id"], "1") for item in record.input_items or []
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

    # ---- client keys -------------------------------------------------------------------------------------------
    def _watched_write(self, key: str, plan: Callable[[bytes | None], Callable[[Any], None] | None]) -> bool:
        """Optimistic read-modify-write of `key`: `plan` sees its value (read under WATCH) and returns what to queue
        in the MULTI (a function of the pipeline), or None to write nothing (→ False). Redone from the read when
        another client changed the key meanwhile."""
        def run(r: redis_py.Redis) -> bool:
            with r.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        pipe.watch(key)
                        queue = plan(cast("bytes | None", pipe.get(key)))
                        if queue is None:
                            return False
                        pipe.multi()
                        queue(pipe)
                        pipe.execute()
                        return True
                    except redis_py.WatchError:
                        continue

        return self._call(run)

    def put_client_key(self, record: ClientKeyRecord) -> None:
        def plan(old: bytes | None) -> Callable[[Any], None]:
            replaced = ClientKeyRecord.decode(old) if old is not None else None
            if replaced is not None and replaced.revoked_at is None:
                raise KeyNameTaken(record.name)

            def queue(pipe: Any) -> None:
                if replaced is not None:
                    pipe.delete(f"{self.prefix}ckeyhash:{replaced.key_hash}")
                pipe.set(f"{self.prefix}ckey:{record.name}", record.encode())
                pipe.set(f"{self.prefix}ckeyhash:{record.key_hash}", record.name)
                pipe.sadd(f"{self.prefix}ckeys", record.name)

            return queue

        self._watched_write(f"{self.prefix}ckey:{record.name}", plan)

    def _keys_named(self, names: list[str]) -> list[ClientKeyRecord]:
        if not names:
            return []

        def read(r: redis_py.Redis) -> list:
            pipe = r.pipeline(transaction=False)
            for name in names:
                pipe.get(f"{self.prefix}ckey:{name}")
                pipe.get(f"{self.prefix}spent:{name}")
            return pipe.execute()

        values = self._call(read)
        return [ClientKeyRecord.decode(blob, float(spent or 0))
                for blob, spent in zip(values[::2], values[1::2], strict=True) if blob is not None]

    def find_client_key(self, key_hash: str) -> ClientKeyRecord | None:
        name = self._call(lambda r: r.get(f"{self.prefix}ckeyhash:{key_hash}"))
        if name is None:
            return None
        found = self._keys_named([cast("bytes", name).decode()])
        return found[0] if found and found[0].key_hash == key_hash else None

    def get_client_key(self, name: str) -> ClientKeyRecord | None:
        found = self._keys_named([name])
        return found[0] if found else None

    def list_client_keys(self) -> list[ClientKeyRecord]:
        names = sorted(n.decode() for n in cast("set[bytes]", self._call(lambda r: r.smembers(f"{self.prefix}ckeys"))))
        return self._keys_named(names)

    def _update_key(self, name: str, change: Callable[[dict[str, Any]], bool]) -> bool:
        key = f"{self.prefix}ckey:{name}"

        def plan(old: bytes | None) -> Callable[[Any], None] | None:
            data = loads(old) if old is not None else None
            if data is None or not change(data):
                return None
            return lambda pipe: pipe.set(key, dumps(data))

        return self._watched_write(key, plan)

    # ---- usage -------------------------------------------------------------------------------------------------
    def _usage_key(self, day: datetime.date) -> str:
        return f"{self.prefix}usage:{day.isoformat()}"

    def add_usage(self, row: UsageRow) -> None:
        day = datetime.datetime.fromtimestamp(row.at, datetime.timezone.utc).date()
        day_end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(),
                                            datetime.timezone.utc).timestamp()
        key = self._usage_key(day)

        def write(r: redis_py.Redis) -> None:
            pipe = r.pipeline(transaction=True)
            pipe.xadd(key, {"row": row.encode()})
            pipe.pexpireat(key, int((day_end + self.usage_retention_seconds) * 1000))
            if row.cost_usd:
                pipe.incrbyfloat(f"{self.prefix}spent:{row.key_name}", row.cost_usd)
            pipe.execute()

        self._call(write)

    def usage_rows(self, since: float | None = None, until: float | None = None) -> list[UsageRow]:
        now = now_seconds()
        low, high = self._usage_window(since, until, now)
        first = datetime.datetime.fromtimestamp(low, datetime.timezone.utc).date()
        last = datetime.datetime.fromtimestamp(min(high, now + 86400), datetime.timezone.utc).date()
        days = [first + datetime.timedelta(days=n) for n in range((last - first).days + 1)]

        def read(r: redis_py.Redis) -> list:
            pipe = r.pipeline(transaction=False)
            for day in days:
                pipe.xrange(self._usage_key(day))
            return pipe.execute()

        rows = [UsageRow.decode(fields[b"row"]) for entries in self._call(read) for _, fields in entries]
        return sorted((row for row in rows if low <= row.at < high), key=lambda row: row.at)

    def spent_usd(self, key_name: str) -> float:
        value = self._call(lambda r: r.get(f"{self.prefix}spent:{key_name}"))
        return float(value) if value is not None else 0.0

    # ---- limits ------------------------------------------------------------------------------------------------
    def admit(self, rates: list[tuple[str, float, int]], slots: list[tuple[str, int, float]]) -> Admitted:
        """One script, one round trip, atomic on the server."""
        now = now_seconds()
        keys: list[str] = []
        args: list[Any] = [repr(now), len(rates), len(slots)]
        for counter, window, limit in rates:
            start = window_start(now, window)
            keys += [f"{self.prefix}rl:{counter}:{start - window:.0f}", f"{self.prefix}rl:{counter}:{start:.0f}"]
            args += [repr(now - start), repr(float(window)), limit, int(window * 2000)]
        tokens = [uuid.uuid4().hex for _ in slots]
        for (name, limit, ttl), token in zip(slots, tokens, strict=True):
            keys.append(f"{self.prefix}slots:{name}")
            args += [limit, token, repr(now + ttl)]
        script = self._script("admit", _ADMIT)
        result = self._call(lambda r: script(keys=keys, args=args, client=r))
        if result[0] == 1:
            return Admitted(True, tokens=tokens)
        if result[1] == b"slot":
            return Admitted(False, refused_slot=int(result[2]))
        return Admitted(False, refused_rate=int(result[2]), wait=float(result[3]))

    def refresh_slot(self, name: str, token: str, ttl_seconds: float) -> None:
        until = now_seconds() + ttl_seconds
        self._call(lambda r: r.zadd(f"{self.prefix}slots:{name}", {token: until}, xx=True))

    def release_slot(self, name: str, token: str) -> None:
        self._call(lambda r: r.zrem(f"{self.prefix}slots:{name}", token))

    def slots_in_use(self, name: str) -> int:
        return int(self._call(lambda r: r.zcount(f"{self.prefix}slots:{name}", f"({now_seconds()!r}", "+inf")))

    # ---- marks -------------------------------------------------------------------------------------------------
    def put_mark(self, scope: str, member: str, until: float, reason: str) -> None:
        self._call(lambda r: r.hset(f"{self.prefix}marks:{scope}", member, f"{until!r}:{reason}"))

    def get_marks(self, scope: str) -> dict[str, tuple[float, str]]:
        raw = cast("dict[bytes, bytes]", self._call(lambda r: r.hgetall(f"{self.prefix}marks:{scope}")))
        now = now_seconds()
        marks = {}
        for member, value in raw.items():
            until, _, reason = value.decode().partition(":")
            if float(until) > now:
                marks[member.decode()] = (float(until), reason)
        return marks

    def clear_mark(self, scope: str, member: str) -> None:
        self._call(lambda r: r.hdel(f"{self.prefix}marks:{scope}", member))


def _record(response_id: str, values: list) -> StoredResponse | None:
    if values[0] is None:
        return None
    record = StoredResponse.decode(response_id, values[0], input_blob=values[1] if len(values) > 1 else None)
    # Redis expires the key itself (ms precision); the stored instant keeps every reader exact and in agreement.
    return record if record.expires_at > now_seconds() else None
