"""Limits (deepseek_proxy/ops/limits.py): requests per minute and in flight, per key and global, with a short
queue; and the same limits shared by two processes through one real Redis (tests/redis_server.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

import pytest

from deepseek_proxy.config import LimitsConfig
from deepseek_proxy.ops.keys import ClientIdentity
from deepseek_proxy.ops.limits import Limiter, RateLimited
from deepseek_proxy.store import StoreUnavailable
from deepseek_proxy.store.memory import MemoryStore

LIMITS = {"ttl_seconds": 3600.0, "reasoning_ttl_seconds": 600.0, "max_response_bytes": 1 << 20}
ALICE = ClientIdentity("alice", "store")
BOB = ClientIdentity("bob", "store")


class FakeTime:
    """The limiter's monotonic clock and sleep: a sleep moves the clock, nothing really waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self.on_sleep = None

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep()


def limiter(store=None, **limits) -> tuple[Limiter, FakeTime]:
    fake = FakeTime()
    return Limiter(LimitsConfig(**limits), store or MemoryStore(**LIMITS), sleep=fake.sleep, clock=fake.clock), fake


def test_no_limits_configured_admits_everything_without_slots():
    lim, _ = limiter()
    for _ in range(100):
        assert lim.admit(ALICE).slots == []


def test_a_key_over_its_rpm_gets_retry_after_and_others_go_on():
    lim, _ = limiter(key_rpm=3)
    for _ in range(3):
        lim.admit(ALICE).release()
    with pytest.raises(RateLimited) as caught:
        lim.admit(ALICE)
    assert (caught.value.scope, caught.value.limit, caught.value.status) == ("key", "rpm", 429)
    assert 1 <= caught.value.retry_after <= 120 and "alice" in caught.value.message and "3 requests per minute" in \
        caught.value.message
    lim.admit(BOB).release()


def test_a_keys_own_rpm_wins_over_the_default():
    lim, _ = limiter(key_rpm=100)
    generous = ClientIdentity("carol", "store", rpm=1)
    lim.admit(generous).release()
    with pytest.raises(RateLimited):
        lim.admit(generous)


def test_the_global_rpm_counts_every_key_and_a_refused_key_does_not_use_it_up():
    lim, _ = limiter(rpm=4, key_rpm=2)
    for who in (ALICE, ALICE, BOB):
        lim.admit(who).release()
    with pytest.raises(RateLimited) as key_limited:
        lim.admit(ALICE)  # alice is at her own limit: refused before the global counter
    assert key_limited.value.scope == "key"
    lim.admit(BOB).release()  # the 4th in the global window
    with pytest.raises(RateLimited) as global_limited:
        lim.admit(ClientIdentity("dave", "store"))
    assert global_limited.value.scope == "global" and "this proxy" in global_limited.value.message


def test_concurrency_waits_in_the_queue_for_a_slot():
    lim, fake = limiter(key_concurrency=1, queue_ms=500)
    holding = lim.admit(ALICE)
    fake.on_sleep = lambda: holding.release() if fake.now >= 0.05 else None  # the stream ends 50 ms later
    second = lim.admit(ALICE)
    assert len(second.slots) == 1 and 0.05 <= fake.now < 0.5
    second.release()


def test_concurrency_over_the_queue_time_is_refused_and_releases_what_it_took():
    store = MemoryStore(**LIMITS)
    lim, fake = limiter(store, concurrency=5, key_concurrency=1, queue_ms=200)
    holding = lim.admit(ALICE)
    with pytest.raises(RateLimited) as caught:
        lim.admit(ALICE)
    assert (caught.value.limit, caught.value.retry_after) == ("concurrency", 1)
    assert fake.now == pytest.approx(0.2) and max(fake.slept) <= 0.1  # backed off, never past the deadline
    assert store.slots_in_use("global:inflight") == 1  # only the holder's
    holding.release()
    assert store.slots_in_use("global:inflight") == 0 and store.slots_in_use("key:alice:inflight") == 0


def test_global_concurrency_refusal_gives_back_the_key_slot():
    store = MemoryStore(**LIMITS)
    lim, _ = limiter(store, concurrency=1, key_concurrency=3, queue_ms=0)
    holding = lim.admit(BOB)
    with pytest.raises(RateLimited) as caught:
        lim.admit(ALICE)
    assert caught.value.scope == "global"
    assert store.slots_in_use("key:alice:inflight") == 0
    holding.release()


def test_touch_refreshes_slots_at_most_once_per_third_of_the_ttl():
    store = MemoryStore(**LIMITS)
    refreshed = []
    store.refresh_slot = lambda name, token, ttl: refreshed.append((name, ttl))  # type: ignore[method-assign]
    lim, fake = limiter(store, key_concurrency=2, slot_ttl_seconds=60)
    admission = lim.admit(ALICE)
    admission.touch()
    fake.now += 19
    admission.touch()
    assert refreshed == []
    fake.now += 2
    admission.touch()
    assert refreshed == [("key:alice:inflight", 60)]


class DownStore(MemoryStore):
    def admit(self, *args):
        raise StoreUnavailable("the Redis store: connection refused")


def test_a_store_outage_lets_requests_through(caplog):
    lim, _ = limiter(DownStore(**LIMITS), rpm=1, concurrency=1)
    for _ in range(3):
        lim.admit(ALICE).release()
    assert "letting the request through" in caplog.text


# ---- two processes, one Redis ------------------------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import json, sys, time
    from deepseek_proxy.config import LimitsConfig
    from deepseek_proxy.ops.keys import ClientIdentity
    from deepseek_proxy.ops.limits import Limiter, RateLimited
    from deepseek_proxy.store.redis import RedisStore

    url, prefix, mode, start = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    store = RedisStore(url, prefix=prefix, ttl_seconds=60, reasoning_ttl_seconds=60, max_response_bytes=1 << 20)
    store.ping()
    while time.time() < start:  # both processes begin together
        time.sleep(0.005)
    if mode == "rpm":
        limiter = Limiter(LimitsConfig(key_rpm=10), store)
        outcomes = []
        for _ in range(10):
            try:
                limiter.admit(ClientIdentity("alice", "store")).release()
                outcomes.append("ok")
            except RateLimited as exc:
                outcomes.append(exc.retry_after)
        print(json.dumps(outcomes))
    elif mode == "hold":
        limiter = Limiter(LimitsConfig(key_concurrency=1, queue_ms=0), store)
        admission = limiter.admit(ClientIdentity("alice", "store"))
        print(json.dumps("holding"), flush=True)
        sys.stdin.readline()  # until the test says so
        admission.release()
        print(json.dumps("released"), flush=True)
""")


def run_worker(redis_server, prefix: str, mode: str, start: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, redis_server.url, prefix, mode, repr(start)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_two_processes_share_one_rpm_limit_through_redis(redis_server):
    import time

    prefix = f"t{uuid.uuid4().hex[:8]}:"
    start = time.time() + 1.5  # both have imported and connected by then
    workers = [run_worker(redis_server, prefix, "rpm", start) for _ in range(2)]
    outcomes = [json.loads(w.communicate(timeout=60)[0]) for w in workers]
    admitted = sum(o == "ok" for out in outcomes for o in out)
    refused = [o for out in outcomes for o in out if o != "ok"]
    assert admitted == 10, outcomes  # 20 tries, one limit of 10 per minute between them
    assert len(refused) == 10 and all(isinstance(r, int) and r >= 1 for r in refused)


def test_a_slot_held_by_one_process_is_refused_to_another(redis_server):
    from deepseek_proxy.store.redis import RedisStore

    prefix = f"t{uuid.uuid4().hex[:8]}:"
    holder = run_worker(redis_server, prefix, "hold", 0)
    try:
        assert json.loads(holder.stdout.readline()) == "holding"
        store = RedisStore(redis_server.url, prefix=prefix, **LIMITS)
        other = Limiter(LimitsConfig(key_concurrency=1, queue_ms=0), store)
        with pytest.raises(RateLimited):
            other.admit(ALICE)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert json.loads(holder.stdout.readline()) == "released"
        other.admit(ALICE).release()
    finally:
        holder.kill()
        holder.wait()
