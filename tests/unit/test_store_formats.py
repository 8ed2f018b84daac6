"""Records as the stores already hold them: a SQLite file and Redis keys written by the version before usage rows
carried a conversation (schema 2; the bytes below were written by that code) keep reading, and this version writes a
response's record byte for byte as it did (store/base.py holds the one codec every backend uses)."""

from __future__ import annotations

import sqlite3
import uuid

from deepseek_proxy.ops.usage import NONE, summarize
from deepseek_proxy.store import ClientKeyRecord, StoredResponse, UsageRow
from deepseek_proxy.store import sqlite as store_sqlite
from deepseek_proxy.store.sqlite import SQLiteStore

LIMITS = {"ttl_seconds": 1e9, "reasoning_ttl_seconds": 1e9, "max_response_bytes": 1 << 20,
          "usage_retention_seconds": 1e11}
EXPIRES = 4102444800.0  # 2100-01-01
# resp_1 and resp_2 (which continues it), their input items, a usage row and a client key, as schema 2 wrote them.
OLD_META_1 = (b'{"response":{"id":"resp_1","output":[{"id":"msg_1","type":"message"}]},"model":"deepseek-v4-pro",'
              b'"created_at":1700000000,"previous_response_id":null,"chain":[]}')
OLD_META_2 = (b'{"response":{"id":"resp_2","output":[]},"model":"deepseek-v4-pro","created_at":1700000001,'
              b'"previous_response_id":"resp_1","chain":["resp_1"]}')
OLD_INPUT_1 = b'[{"id":"in_1","type":"message"}]'
OLD_USAGE = (b'{"at":1764583200.0,"key_name":"alice","model":"deepseek-v4-pro","upstream":"deepseek","status":200,'
             b'"input_tokens":1200,"cached_tokens":1000,"output_tokens":300,"reasoning_tokens":120,'
             b'"duration_ms":812.346,"ttft_ms":95.123,"cost_usd":0.000748,"door":"responses","request_id":"req_1"}')
OLD_KEY = ('{"name":"alice","key_hash":"' + "a" * 64 + '","created_at":1.0,"hint":"dsp-AbC…","models":[],'
           '"budget_usd":null,"rpm":null,"concurrency":null,"revoked_at":null,"last_used_at":null}').encode()


def records() -> list[StoredResponse]:
    return [StoredResponse(id="resp_1", response={"id": "resp_1", "output": [{"id": "msg_1", "type": "message"}]},
                           input_items=[{"id": "in_1", "type": "message"}], model="deepseek-v4-pro",
                           created_at=1700000000, expires_at=EXPIRES),
            StoredResponse(id="resp_2", response={"id": "resp_2", "output": []}, input_items=[],
                           model="deepseek-v4-pro", created_at=1700000001, previous_response_id="resp_1",
                           expires_at=EXPIRES)]


def new_row() -> UsageRow:
    return UsageRow(at=1764583300.0, key_name="alice", model="deepseek-v4-pro", upstream="deepseek", status=200,
                    input_tokens=2000, cached_tokens=1920, output_tokens=10, cost_usd=0.0001, door="messages",
                    conversation="messages:0b7c5e0e-7c1f-4c55-9d1e-3f5b8e2a9c41", saved_usd=0.0012)


def check_old_rows_read(store) -> None:
    [old] = store.usage_rows(since=0)
    assert (old.key_name, old.input_tokens, old.cached_tokens, old.door, old.request_id) == (
        "alice", 1200, 1000, "responses", "req_1")
    assert old.conversation == "" and old.saved_usd is None  # fields the old version did not write
    store.add_usage(new_row())
    rows = store.usage_rows(since=0)
    assert rows == [old, new_row()]
    by_conversation = {s.group: s for s in summarize(rows, "conversation", lambda row: 0.5)}
    assert by_conversation[NONE].saved_usd == 0.5 and by_conversation[NONE].estimated == 1
    assert by_conversation[new_row().conversation].saved_usd == 0.0012
    assert store.get_client_key("alice").hint == "dsp-AbC…" and store.revoke_client_key("alice")
    assert store.get_client_key("alice").revoked_at is not None
    conversation = store.get_conversation("resp_2")
    assert [r.id for r in conversation] == ["resp_1", "resp_2"] and conversation[1].chain == ["resp_1"]
    assert conversation[0].input_items == [{"id": "in_1", "type": "message"}]
    assert store.get_item("msg_1") == {"id": "msg_1", "type": "message"}


def test_a_schema_2_sqlite_file_keeps_working_and_records_are_written_as_before(tmp_path):
    assert store_sqlite.SCHEMA_VERSION == 2  # conversation and saved_usd ride in the usage row's JSON: no migration
    path = tmp_path / "store.db"
    with sqlite3.connect(path) as conn:
        for statement in store_sqlite.SCHEMA.split(";"):
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
        conn.executemany("INSERT INTO responses (id, expires_at, meta, input) VALUES (?, ?, ?, ?)",
                         [("resp_1", EXPIRES, OLD_META_1, OLD_INPUT_1), ("resp_2", EXPIRES, OLD_META_2, b"[]")])
        conn.executemany("INSERT INTO items (item_id, response_id, kind) VALUES (?, ?, ?)",
                         [("msg_1", "resp_1", 0), ("in_1", "resp_1", 1)])
        conn.execute("INSERT INTO usage (at, key_name, row) VALUES (?, ?, ?)", (1764583200.0, "alice", OLD_USAGE))
        conn.execute("INSERT INTO client_keys (name, key_hash, record, revoked) VALUES (?, ?, ?, 0)",
                     ("alice", "a" * 64, OLD_KEY))
    store = SQLiteStore(path, **LIMITS)
    check_old_rows_read(store)
    for record in records():  # written again: the same bytes as before
        store.put_response(record)
    store.close()
    with sqlite3.connect(path) as conn:
        assert dict(conn.execute("SELECT id, meta FROM responses").fetchall()) == {"resp_1": OLD_META_1,
                                                                                    "resp_2": OLD_META_2}
        assert conn.execute("SELECT input FROM responses WHERE id = 'resp_1'").fetchone()[0] == OLD_INPUT_1


def test_redis_keys_written_by_the_version_before_keep_working(redis_server):
    import redis as redis_py

    from deepseek_proxy.store.redis import RedisStore

    prefix = f"t{uuid.uuid4().hex[:8]}:"
    raw = redis_py.Redis.from_url(redis_server.url)
    with_expiry = {name: meta[:-1] + b',"expires_at":4102444800.0}'
                   for name, meta in (("resp_1", OLD_META_1), ("resp_2", OLD_META_2))}
    raw.hset(f"{prefix}resp:resp_1", mapping={"meta": with_expiry["resp_1"], "input": OLD_INPUT_1})
    raw.hset(f"{prefix}resp:resp_2", mapping={"meta": with_expiry["resp_2"], "input": b"[]"})
    raw.hset(f"{prefix}item:msg_1", "resp_1", "0")
    raw.xadd(f"{prefix}usage:2025-12-01", {"row": OLD_USAGE})
    raw.set(f"{prefix}ckey:alice", OLD_KEY)
    raw.set(f"{prefix}ckeyhash:{'a' * 64}", "alice")
    raw.sadd(f"{prefix}ckeys", "alice")
    store = RedisStore(redis_server.url, prefix=prefix, **LIMITS)
    check_old_rows_read(store)
    for record in records():
        store.put_response(record)
    assert {name: raw.hget(f"{prefix}resp:{name}", "meta") for name in with_expiry} == with_expiry
    store.put_client_key(ClientKeyRecord(name="alice", key_hash="b" * 64, created_at=2.0))  # replaces the revoked one
    assert raw.get(f"{prefix}ckeyhash:{'a' * 64}") is None and store.find_client_key("b" * 64).created_at == 2.0
    store.close()
