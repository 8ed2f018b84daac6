"""The store contract (deepseek_proxy/store/base.py), the same tests against every backend: memory, SQLite in a
temporary directory, and Redis on a real redis-server the tests start (tests/redis_server.py)."""

from __future__ import annotations

import copy
import math
import uuid

import pytest

from deepseek_proxy.store import (
    ClientKeyRecord,
    InvalidCursor,
    KeyNameTaken,
    ReasoningCacheAdapter,
    ResponseTooLarge,
    StoredResponse,
    StoreUnavailable,
    UsageRow,
)
from deepseek_proxy.store import base as store_base
from deepseek_proxy.store import memory as store_memory
from deepseek_proxy.store import sqlite as store_sqlite
from deepseek_proxy.store.base import sliding_window
from deepseek_proxy.store.memory import MemoryStore
from deepseek_proxy.store.sqlite import SQLiteStore

DAY = 86400.0
LIMITS = {"ttl_seconds": 30 * DAY, "reasoning_ttl_seconds": 7 * DAY, "max_response_bytes": 1024 * 1024}


class Clock:
    """Every backend's notion of now, moved by the test. Starts at the real time: Redis's own key expiry runs on
    the real clock, and keys set to expire in the fake future must not already be gone there."""

    def __init__(self, monkeypatch):
        import time

        self.now = time.time()
        modules = [store_base, store_memory, store_sqlite]
        try:
            from deepseek_proxy.store import redis as store_redis
            modules.append(store_redis)
        except ImportError:  # the Redis tests then fail on their own, with the reason
            pass
        for module in modules:
            monkeypatch.setattr(module, "now_seconds", lambda: self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture()
def clock(monkeypatch):
    return Clock(monkeypatch)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request, tmp_path, clock):
    if request.param == "memory":
        yield MemoryStore(**LIMITS)
    elif request.param == "sqlite":
        s = SQLiteStore(tmp_path / "data" / "store.db", **LIMITS)
        yield s
        s.close()
    else:
        from deepseek_proxy.store.redis import RedisStore

        server = request.getfixturevalue("redis_server")
        # A prefix of its own per test: no test sees another's keys on the shared server.
        s = RedisStore(server.url, prefix=f"t{uuid.uuid4().hex[:8]}:", **LIMITS)
        yield s
        s.close()


def message(item_id: str, text: str, role: str = "user") -> dict:
    content_type = "input_text" if role == "user" else "output_text"
    return {"id": item_id, "type": "message", "role": role, "content": [{"type": content_type, "text": text}]}


def response_record(response_id: str = "resp_1", *, inputs: list[dict] | None = None,
                    outputs: list[dict] | None = None, previous: str | None = None) -> StoredResponse:
    outputs = outputs if outputs is not None else [
        {"id": f"rs_{response_id}", "type": "reasoning", "summary": [], "content": [
            {"type": "reasoning_text", "text": "thinking"}]},
        message(f"msg_{response_id}", "hello", role="assistant"),
    ]
    response = {"id": response_id, "object": "response", "created_at": 1_700_000_000, "status": "completed",
                "model": "deepseek-v4-pro", "output": outputs, "previous_response_id": previous, "store": True}
    return StoredResponse(id=response_id, response=response,
                          input_items=inputs if inputs is not None else [message(f"in_{response_id}", "hi")],
                          model="deepseek-v4-pro", created_at=1_700_000_000, previous_response_id=previous)


# ---- responses ------------------------------------------------------------------------------------------------

def test_put_then_get_round_trips_the_record(store, clock):
    record = response_record(inputs=[message("in_a", "é 😀 中文"), {"type": "function_call_output", "call_id": "c1",
                                                                    "output": "ok"}])
    store.put_response(copy.deepcopy(record))
    got = store.get_response("resp_1", with_input=True)
    assert got is not None
    assert got.response == record.response
    assert got.input_items == record.input_items
    assert got.output_items == record.response["output"]
    assert (got.model, got.created_at, got.previous_response_id) == ("deepseek-v4-pro", 1_700_000_000, None)
    assert got.expires_at == pytest.approx(clock.now + 30 * DAY)


def test_get_without_input_does_not_load_it(store):
    store.put_response(response_record())
    got = store.get_response("resp_1")
    assert got is not None and got.input_items is None and got.response["id"] == "resp_1"


def test_unknown_id_is_none_everywhere(store):
    assert store.get_response("resp_nope") is None
    assert store.list_input_items("resp_nope") is None
    assert store.get_conversation("resp_nope") is None
    assert store.get_item("msg_nope") is None
    assert store.delete_response("resp_nope") is False


def test_the_store_keeps_a_copy_not_the_callers_objects(store):
    record = response_record()
    store.put_response(record)
    record.response["status"] = "changed after put"
    record.input_items.append(message("in_late", "late"))  # type: ignore[union-attr]
    got = store.get_response("resp_1", with_input=True)
    assert got.response["status"] == "completed"
    assert [i["id"] for i in got.input_items] == ["in_resp_1"]


def test_a_second_put_replaces_the_first(store):
    in_progress = response_record(outputs=[])
    in_progress.response["status"] = "in_progress"
    store.put_response(in_progress)
    store.put_response(response_record(inputs=[message("in_2", "second")]))
    got = store.get_response("resp_1", with_input=True)
    assert got.response["status"] == "completed"
    assert [i["id"] for i in got.input_items] == ["in_2"]
    assert store.get_item("in_resp_1") is None  # the replaced input is no longer indexed


def test_delete_removes_the_response_and_its_items(store):
    store.put_response(response_record())
    assert store.delete_response("resp_1") is True
    assert store.get_response("resp_1") is None
    assert store.list_input_items("resp_1") is None
    assert store.get_item("msg_resp_1") is None
    assert store.delete_response("resp_1") is False


# ---- input items and their pagination --------------------------------------------------------------------------

def put_with_inputs(store, count: int) -> list[str]:
    ids = [f"msg_{n:03d}" for n in range(count)]
    store.put_response(response_record(inputs=[message(i, i) for i in ids]))
    return ids


def listed(page) -> list[str]:
    return [item["id"] for item in page.data]


def test_input_items_default_newest_first_twenty(store):
    ids = put_with_inputs(store, 25)
    page = store.list_input_items("resp_1")
    assert listed(page) == ids[::-1][:20] and page.has_more is True
    body = page.as_list_object()
    assert body == {"object": "list", "data": page.data, "has_more": True, "first_id": ids[24], "last_id": ids[5]}


def test_input_items_ascending_and_cursor_walk(store):
    ids = put_with_inputs(store, 7)
    seen, after = [], None
    while True:
        page = store.list_input_items("resp_1", order="asc", limit=3, after=after)
        seen += listed(page)
        if not page.has_more:
            break
        after = page.as_list_object()["last_id"]
    assert seen == ids


def test_input_items_before_and_between(store):
    ids = put_with_inputs(store, 10)
    assert listed(store.list_input_items("resp_1", order="asc", before=ids[3])) == ids[:3]
    assert listed(store.list_input_items("resp_1", order="asc", after=ids[2], before=ids[6])) == ids[3:6]
    # desc: "after" goes towards older items
    assert listed(store.list_input_items("resp_1", order="desc", after=ids[5], limit=2)) == [ids[4], ids[3]]
    assert listed(store.list_input_items("resp_1", order="desc", before=ids[7])) == [ids[9], ids[8]]


def test_input_items_page_edges(store):
    ids = put_with_inputs(store, 100)
    exactly = store.list_input_items("resp_1", limit=100)
    assert len(exactly.data) == 100 and exactly.has_more is False
    one = store.list_input_items("resp_1", limit=1, order="asc")
    assert listed(one) == [ids[0]] and one.has_more is True
    past_end = store.list_input_items("resp_1", order="asc", after=ids[-1])
    assert past_end.data == [] and past_end.has_more is False
    assert past_end.as_list_object()["first_id"] is None
    crossed = store.list_input_items("resp_1", order="asc", after=ids[5], before=ids[2])
    assert crossed.data == [] and crossed.has_more is False


def test_input_items_empty_input(store):
    store.put_response(response_record(inputs=[]))
    page = store.list_input_items("resp_1")
    assert page.data == [] and page.has_more is False


@pytest.mark.parametrize("limit", [0, 101, -1])
def test_input_items_limit_out_of_range(store, limit):
    put_with_inputs(store, 3)
    with pytest.raises(ValueError, match="limit"):
        store.list_input_items("resp_1", limit=limit)


def test_input_items_unknown_cursor(store):
    put_with_inputs(store, 3)
    with pytest.raises(InvalidCursor) as caught:
        store.list_input_items("resp_1", after="msg_elsewhere")
    assert caught.value.param == "after"
    with pytest.raises(InvalidCursor):
        store.list_input_items("resp_1", before="msg_elsewhere")
    with pytest.raises(ValueError, match="order"):
        store.list_input_items("resp_1", order="sideways")


# ---- item lookup (item_reference) ------------------------------------------------------------------------------

def test_items_we_issued_are_found_by_id(store):
    store.put_response(response_record())
    assert store.get_item("rs_resp_1")["type"] == "reasoning"
    assert store.get_item("msg_resp_1")["content"][0]["text"] == "hello"
    assert store.get_item("in_resp_1")["role"] == "user"  # an input item with an id too
    assert store.get_items(["rs_resp_1", "nope", "msg_resp_1"]).keys() == {"rs_resp_1", "msg_resp_1"}


def test_the_output_item_wins_over_an_echo(store):
    store.put_response(response_record("resp_a", outputs=[{"id": "fc_1", "type": "function_call", "call_id": "c1",
                                                            "name": "f", "arguments": "{}"}]))
    echo = {"id": "fc_1", "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"edited\":1}"}
    store.put_response(response_record("resp_b", inputs=[echo]))
    assert store.get_item("fc_1")["arguments"] == "{}"
    # The issuing response deleted: the echo still held by a live response is what is left.
    store.delete_response("resp_a")
    assert store.get_item("fc_1")["arguments"] == "{\"edited\":1}"
    store.delete_response("resp_b")
    assert store.get_item("fc_1") is None


# ---- conversations (previous_response_id) ----------------------------------------------------------------------

def test_conversation_is_the_chain_oldest_first(store):
    store.put_response(response_record("resp_1"))
    store.put_response(response_record("resp_2", previous="resp_1"))
    third = response_record("resp_3", previous="resp_2")
    store.put_response(third)
    assert third.chain == ["resp_1", "resp_2"]
    conversation = store.get_conversation("resp_3")
    assert [r.id for r in conversation] == ["resp_1", "resp_2", "resp_3"]
    assert all(r.input_items for r in conversation)
    assert [i["id"] for r in conversation for i in [*r.input_items, *r.output_items]] == [
        "in_resp_1", "rs_resp_1", "msg_resp_1", "in_resp_2", "rs_resp_2", "msg_resp_2",
        "in_resp_3", "rs_resp_3", "msg_resp_3"]
    assert [r.id for r in store.get_conversation("resp_1")] == ["resp_1"]


def test_a_missing_earlier_turn_is_never_a_shorter_history(store):
    store.put_response(response_record("resp_1"))
    store.put_response(response_record("resp_2", previous="resp_1"))
    store.put_response(response_record("resp_3", previous="resp_2"))
    store.delete_response("resp_1")
    assert store.get_conversation("resp_3") is None
    assert store.get_conversation("resp_2") is None
    assert store.get_response("resp_3") is not None  # the record itself is still there


def test_an_expired_earlier_turn_ends_the_conversation(store, clock):
    store.put_response(response_record("resp_1"))
    clock.advance(20 * DAY)
    store.put_response(response_record("resp_2", previous="resp_1"))
    assert len(store.get_conversation("resp_2")) == 2
    clock.advance(11 * DAY)  # resp_1 is 31 days old, resp_2 11
    assert store.get_response("resp_2") is not None
    assert store.get_conversation("resp_2") is None


# ---- TTL -------------------------------------------------------------------------------------------------------

def test_an_expired_response_is_invisible_at_once(store, clock):
    store.put_response(response_record())
    clock.advance(30 * DAY - 1)
    assert store.get_response("resp_1") is not None
    clock.advance(1)
    assert store.get_response("resp_1") is None
    assert store.list_input_items("resp_1") is None
    assert store.get_item("msg_resp_1") is None
    assert store.get_item("in_resp_1") is None
    assert store.get_conversation("resp_1") is None
    assert store.delete_response("resp_1") is False


def test_sweep_reclaims_expired_records_only(store, clock):
    store.put_response(response_record("resp_old"))
    store.put_reasoning("call_old", "old")
    clock.advance(31 * DAY)
    store.put_reasoning("call_new", "new")
    swept = store.sweep()
    assert store.get_reasoning("call_new") == "new"
    assert store.get_response("resp_old") is None
    if isinstance(store, (MemoryStore, SQLiteStore)):
        assert swept == 2  # resp_old, call_old
        assert store.sweep() == 0
    else:
        assert swept == 0  # Redis expires keys by itself


def test_a_record_with_its_own_expiry_keeps_it(store, clock):
    record = response_record()
    record.expires_at = clock.now + 60
    store.put_response(record)
    clock.advance(61)
    assert store.get_response("resp_1") is None


# ---- size limit ------------------------------------------------------------------------------------------------

def test_a_response_over_the_size_limit_is_refused_and_nothing_kept(store):
    store.put_response(response_record("resp_1"))
    huge = response_record("resp_1", inputs=[message("in_big", "x" * (1024 * 1024))])
    with pytest.raises(ResponseTooLarge) as caught:
        store.put_response(huge)
    assert "max_response_mb" in str(caught.value) and caught.value.limit == 1024 * 1024
    assert store.get_response("resp_1", with_input=True).input_items[0]["id"] == "in_resp_1"  # the old one stays
    with pytest.raises(ResponseTooLarge):
        store.put_response(response_record("resp_2", inputs=[message("in_big", "x" * (1024 * 1024))]))
    assert store.get_response("resp_2") is None
    assert store.get_item("in_big") is None


def test_a_response_just_under_the_limit_is_kept(store):
    record = response_record("resp_1", inputs=[message("in_big", "x" * (1024 * 1024 - 2000))])
    store.put_response(record)
    assert len(store.get_response("resp_1", with_input=True).input_items[0]["content"][0]["text"]) == 1024 * 1024 - 2000


# ---- reasoning fallback cache ----------------------------------------------------------------------------------

def test_reasoning_put_get_replace_expire(store, clock):
    assert store.get_reasoning("call_1") is None
    store.put_reasoning("call_1", "first thought")
    store.put_reasoning("call_1", "é 😀 second thought")
    assert store.get_reasoning("call_1") == "é 😀 second thought"
    clock.advance(7 * DAY)
    assert store.get_reasoning("call_1") is None


def test_the_adapter_has_reasoning_caches_get_and_put(store):
    cache = ReasoningCacheAdapter(store)
    cache.put("call_9", "why")
    assert cache.get("call_9") == "why"
    assert cache.get("call_other") is None


def test_the_adapter_reads_a_failing_store_as_a_miss(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    broken = SQLiteStore(blocker / "store.db", **LIMITS)  # its directory is a file: it cannot open
    with pytest.raises(StoreUnavailable):
        broken.get_reasoning("call_1")
    cache = ReasoningCacheAdapter(broken)
    cache.put("call_1", "lost")
    assert cache.get("call_1") is None
    assert "reasoning cache" in caplog.text


def test_get_items_resolves_several_across_responses(store):
    store.put_response(response_record("resp_a", outputs=[{"id": "fc_1", "type": "function_call", "call_id": "c1",
                                                            "name": "f", "arguments": "{}"}]))
    echo = {"id": "fc_1", "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"echo\":1}"}
    store.put_response(response_record("resp_b", inputs=[echo]))
    found = store.get_items(["fc_1", "msg_resp_b", "rs_unknown", "fc_1", "rs_resp_b"])
    assert found.keys() == {"fc_1", "msg_resp_b", "rs_resp_b"}
    assert found["fc_1"]["arguments"] == "{}"
    assert store.get_items([]) == {}
    store.delete_response("resp_a")
    assert store.get_items(["fc_1"])["fc_1"]["arguments"] == "{\"echo\":1}"


# ---- issue 12: client keys, usage, limits, marks ---------------------------------------------------------------



def key_record(name: str = "alice", key_hash: str = "a" * 64, **extra) -> ClientKeyRecord:
    return ClientKeyRecord(name=name, key_hash=key_hash, created_at=1_700_000_000.0, hint="dsp-abc", **extra)


def test_client_keys_round_trip_by_hash_and_name(store):
    store.put_client_key(key_record(models=("deepseek-v4-pro",), budget_usd=5.0, rpm=30, concurrency=2))
    store.put_client_key(key_record("bob", "b" * 64))
    found = store.find_client_key("a" * 64)
    assert found is not None and found.name == "alice"
    assert (found.models, found.budget_usd, found.rpm, found.concurrency) == (("deepseek-v4-pro",), 5.0, 30, 2)
    assert found.revoked_at is None and found.spent_usd == 0.0
    assert store.get_client_key("bob").key_hash == "b" * 64
    assert store.find_client_key("c" * 64) is None and store.get_client_key("carol") is None
    assert [k.name for k in store.list_client_keys()] == ["alice", "bob"]


def test_a_live_name_cannot_be_taken_twice_but_a_revoked_one_can(store, clock):
    store.put_client_key(key_record())
    with pytest.raises(KeyNameTaken):
        store.put_client_key(key_record(key_hash="d" * 64))
    assert store.revoke_client_key("alice") is True
    assert store.revoke_client_key("alice") is False  # already revoked
    assert store.revoke_client_key("nobody") is False
    revoked = store.find_client_key("a" * 64)
    assert revoked is not None and revoked.revoked_at == pytest.approx(clock.now)
    store.put_client_key(key_record(key_hash="d" * 64))  # a new key for the same person
    assert store.find_client_key("d" * 64).revoked_at is None
    assert store.find_client_key("a" * 64) is None  # the old key no longer leads anywhere


def test_touch_records_the_last_use(store):
    store.put_client_key(key_record())
    store.touch_client_key("alice", 1_700_000_123.0)
    assert store.get_client_key("alice").last_used_at == 1_700_000_123.0
    store.touch_client_key("nobody", 1.0)  # no error, nothing made
    assert store.get_client_key("nobody") is None


def usage(at: float, key: str = "alice", cost: float = 0.25, **extra) -> UsageRow:
    return UsageRow(at=at, key_name=key, model="deepseek-v4-pro", upstream="deepseek", status=200, input_tokens=100,
                    cached_tokens=60, output_tokens=20, reasoning_tokens=5, duration_ms=12.5, ttft_ms=3.0,
                    cost_usd=cost, door="responses", request_id="req_1", **extra)


def test_usage_rows_are_kept_in_order_and_filtered_by_time(store, clock):
    store.put_client_key(key_record())
    base = clock.now
    store.add_usage(usage(base - 10))
    store.add_usage(usage(base - 20, key="bob", cost=1.0))
    store.add_usage(usage(base))
    rows = store.usage_rows()
    assert [row.at for row in rows] == [base - 20, base - 10, base]
    assert rows[0] == usage(base - 20, key="bob", cost=1.0)  # every field survives
    assert [row.at for row in store.usage_rows(since=base - 15)] == [base - 10, base]
    assert [row.at for row in store.usage_rows(until=base - 10)] == [base - 20]
    assert store.spent_usd("alice") == pytest.approx(0.5)
    assert store.spent_usd("bob") == pytest.approx(1.0)
    assert store.spent_usd("nobody") == 0.0
    assert store.get_client_key("alice").spent_usd == pytest.approx(0.5)


def test_usage_rows_older_than_the_retention_are_gone_but_spending_stays(store, clock):
    store.usage_retention_seconds = 2 * DAY
    store.add_usage(usage(clock.now - 3 * DAY, cost=2.0))
    store.add_usage(usage(clock.now))
    assert len(store.usage_rows()) == 1
    assert store.spent_usd("alice") == pytest.approx(2.25)


def test_sliding_window_arithmetic():
    assert sliding_window(0, 0, 0.0, 60.0, 1) == (True, 0.0)
    assert sliding_window(0, 2, 10.0, 60.0, 3) == (True, 0.0)
    allowed, wait = sliding_window(0, 3, 10.0, 60.0, 3)
    # next window: 3 * (1 - f) + 1 <= 3 once f >= 1/3, i.e. 20 s into it
    assert not allowed and wait == pytest.approx(50.0 + 60.0 / 3)
    # Half the previous window still overlaps: 4 * 0.5 + 1 = 3 counted; one more waits for it to slide out.
    allowed, wait = sliding_window(4, 1, 30.0, 60.0, 3)
    assert not allowed and wait == pytest.approx((1 - 1 / 4) * 60.0 - 30.0)
    assert sliding_window(4, 0, 30.0, 60.0, 3) == (True, 0.0)


def test_hit_counts_up_to_the_limit_then_refuses_with_a_wait(store, clock):
    clock.now = math.floor(clock.now / 60) * 60 + 1  # one second into a fresh window
    for _ in range(3):
        assert store.hit("key:alice", 60, 3) == (True, 0.0)
    allowed, wait = store.hit("key:alice", 60, 3)
    assert not allowed and 59 <= wait <= 60 + 60  # the window ends in 59 s, then the previous must slide out
    assert store.hit("key:bob", 60, 3) == (True, 0.0)  # counters are independent
    clock.advance(60 + 59.5)  # the full window is now almost entirely slid out
    assert store.hit("key:alice", 60, 3)[0] is True


def test_a_memory_store_keeps_two_windows_of_a_counter_however_long_it_counts(clock):
    """Only the current and the previous window take part in a decision; `admit` (every request's path) forgets the
    older ones, as SQLite does, so a long-running `memory://` store does not grow by a counter a minute."""
    store = MemoryStore(**LIMITS)
    for _ in range(10):
        assert store.admit([("key:alice", 60, 3)], []).granted
        clock.advance(60)
    assert len([key for key in store._counters if key[0] == "key:alice"]) <= 2


def test_slots_are_limited_released_and_expire(store, clock):
    first = store.acquire_slot("streams:alice", 2, 30)
    second = store.acquire_slot("streams:alice", 2, 30)
    assert first and second and first != second
    assert store.acquire_slot("streams:alice", 2, 30) is None
    assert store.slots_in_use("streams:alice") == 2
    store.release_slot("streams:alice", first)
    third = store.acquire_slot("streams:alice", 2, 30)
    assert third is not None
    clock.advance(20)
    store.refresh_slot("streams:alice", third, 30)
    clock.advance(15)  # `second` (not refreshed) has expired; `third` lives on
    assert store.slots_in_use("streams:alice") == 1
    assert store.acquire_slot("streams:alice", 2, 30) is not None
    assert store.acquire_slot("streams:alice", 2, 30) is None


def test_marks_expire_and_clear(store, clock):
    store.put_mark("keypool:deepseek", "k1", clock.now + 10, "429 rate limited")
    store.put_mark("keypool:deepseek", "k2", clock.now + 100, "401: Authentication Fails")
    assert store.get_marks("keypool:deepseek") == {"k1": (clock.now + 10, "429 rate limited"),
                                                   "k2": (clock.now + 100, "401: Authentication Fails")}
    clock.advance(11)
    assert set(store.get_marks("keypool:deepseek")) == {"k2"}
    store.clear_mark("keypool:deepseek", "k2")
    assert store.get_marks("keypool:deepseek") == {}
    assert store.get_marks("keypool:other") == {}


def test_admit_grants_every_limit_together_or_none(store, clock):
    clock.now = math.floor(clock.now / 60) * 60 + 1
    rates = [("key:alice:rpm", 60, 2), ("global:rpm", 60, 3)]
    slots = [("key:alice:inflight", 1, 30), ("global:inflight", 5, 30)]
    first = store.admit(rates, slots)
    assert first.granted and len(first.tokens) == 2
    assert store.slots_in_use("key:alice:inflight") == 1 and store.slots_in_use("global:inflight") == 1
    busy = store.admit(rates, slots)  # alice's one slot is held: refused, nothing counted or taken
    assert not busy.granted and busy.refused_slot == 0 and busy.tokens == []
    assert store.slots_in_use("global:inflight") == 1
    store.release_slot("key:alice:inflight", first.tokens[0])
    second = store.admit(rates, slots)
    assert second.granted  # the refused attempt did not count against alice's 2 per minute
    store.release_slot("key:alice:inflight", second.tokens[0])
    over = store.admit(rates, slots)
    assert not over.granted and over.refused_rate == 0 and 59 <= over.wait <= 120
    assert store.slots_in_use("key:alice:inflight") == 0 and store.slots_in_use("global:inflight") == 2
    bob = store.admit([("key:bob:rpm", 60, 2), ("global:rpm", 60, 3)], [])
    assert bob.granted  # the 3rd in the global window: alice's refused one was not counted there either
    refused = store.admit([("key:carol:rpm", 60, 2), ("global:rpm", 60, 3)], [])
    assert not refused.granted and refused.refused_rate == 1
    assert store.admit([("key:carol:rpm", 60, 1)], []).granted  # carol was not counted by her refusal
