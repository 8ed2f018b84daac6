"""The upstream key pool (deepseek_proxy/ops/keypool.py): picking, setting keys aside, cooling them down, failover
before the first byte (against `responses` mocks of the upstream), shared state through the store."""

from __future__ import annotations

import pytest
import requests
import responses

from deepseek_proxy.config import UpstreamConfig
from deepseek_proxy.ops.keypool import (
    KeyPool,
    NoKeyAvailable,
    PoolKey,
    mask,
    with_failover,
)
from deepseek_proxy.store.memory import MemoryStore
from deepseek_proxy.upstream.client import parse_retry_after

CHAT = "https://api.deepseek.test/chat/completions"
LIMITS = {"ttl_seconds": 3600.0, "reasoning_ttl_seconds": 600.0, "max_response_bytes": 1 << 20}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def pool_of(*keys: str, strategy: str = "round_robin", store=None, clock=None) -> KeyPool:
    clock = clock or Clock()
    return KeyPool("deepseek", [PoolKey(f"env:K{i}", k) for i, k in enumerate(keys)], strategy=strategy,
                   set_aside_seconds=600, store=store, clock=clock, monotonic=clock)


class UpstreamError(Exception):
    """What with_failover reads of an upstream refusal: `status`, `retry_after`, `message` (the attributes the
    upstream client's error has, before and after the relay's neutral errors)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


def send_chat(key: str) -> requests.Response:
    """What the upstream client does with a key: POST, and an UpstreamError with the status on a refusal."""
    reply = requests.post(CHAT, json={"model": "deepseek-v4-pro", "stream": True}, stream=True,
                          headers={"Authorization": f"Bearer {key}"})
    if reply.status_code >= 400:
        message = reply.json()["error"]["message"]
        reply.close()
        raise UpstreamError(reply.status_code, message, parse_retry_after(reply.headers.get("retry-after")))
    return reply


def upstream_answers(by_key: dict[str, tuple[int, dict]]) -> None:
    def callback(request):
        key = request.headers["Authorization"].removeprefix("Bearer ")
        status, headers = by_key[key]
        body = b'data: {"choices":[]}\n\n' if status == 200 else (
            b'{"error":{"message":"%s","type":"x"}}' % {401: b"Authentication Fails", 402: b"Insufficient Balance",
                                                        429: b"Rate limit reached", 500: b"boom"}[status])
        return status, headers, body

    responses.add_callback(responses.POST, CHAT, callback=callback)


def test_round_robin_takes_turns():
    pool = pool_of("sk-aaaaaaaaaaaa1111", "sk-bbbbbbbbbbbb2222", "sk-cccccccccccc3333")
    picked = []
    for _ in range(4):
        with pool.pick() as lease:
            picked.append(lease.key[-4:])
    assert picked == ["1111", "2222", "3333", "1111"]


def test_least_busy_prefers_the_key_with_fewest_in_flight():
    pool = pool_of("sk-aaaaaaaaaaaa1111", "sk-bbbbbbbbbbbb2222", strategy="least_busy")
    first = pool.pick()
    second = pool.pick()
    third = pool.pick()  # both hold one: round-robin order breaks the tie
    assert [first.key[-4:], second.key[-4:], third.key[-4:]] == ["1111", "2222", "1111"]
    first.release()
    third.release()
    assert pool.pick().key == first.key  # 1111 holds none now, 2222 one
    assert pool.pick().key == second.key  # one each: the tie goes round-robin, to the key after 1111



@responses.activate
def test_a_401_key_is_set_aside_and_the_request_succeeds_on_the_next():
    upstream_answers({"sk-revokedkey0001": (401, {}), "sk-goodkey000002": (200, {})})
    pool = pool_of("sk-revokedkey0001", "sk-goodkey000002")
    reply, lease = with_failover(send_chat, pool)
    assert reply.status_code == 200 and lease.key == "sk-goodkey000002"
    lease.release()
    assert [c.request.headers["Authorization"] for c in responses.calls] == [
        "Bearer sk-revokedkey0001", "Bearer sk-goodkey000002"]
    described = pool.describe()
    assert described[0]["state"] == "set_aside" and described[0]["seconds_left"] == 600
    assert "401" in described[0]["reason"] and "Authentication Fails" in described[0]["reason"]
    assert described[1]["state"] == "ok"
    # The next request goes straight to the good key.
    reply, lease = with_failover(send_chat, pool)
    lease.release()
    assert len(responses.calls) == 3 and responses.calls[2].request.headers["Authorization"].endswith("0002")


@responses.activate
def test_a_429_cools_the_key_down_for_retry_after_then_it_comes_back():
    clock = Clock()
    upstream_answers({"sk-busykey000001": (429, {"retry-after": "7"}), "sk-otherkey00002": (200, {})})
    pool = pool_of("sk-busykey000001", "sk-otherkey00002", clock=clock)
    _, lease = with_failover(send_chat, pool)
    lease.release()
    assert pool.describe()[0]["state"] == "cooling" and pool.describe()[0]["seconds_left"] == 7
    clock.now += 7.5
    assert pool.describe()[0]["state"] == "ok"


@responses.activate
def test_when_every_key_refuses_the_last_refusal_is_raised():
    upstream_answers({"sk-busykey000001": (429, {"retry-after": "3"}), "sk-busykey000002": (429, {"retry-after": "9"})})
    pool = pool_of("sk-busykey000001", "sk-busykey000002")
    with pytest.raises(UpstreamError) as caught:
        with_failover(send_chat, pool)
    assert caught.value.status == 429 and caught.value.retry_after == 9
    # With both cooling, the next request is refused without asking the upstream, retry-after the sooner one.
    with pytest.raises(NoKeyAvailable) as exhausted:
        with_failover(send_chat, pool)
    assert exhausted.value.status == 429 and exhausted.value.retry_after == 3
    assert len(responses.calls) == 2


@responses.activate
def test_an_upstream_failure_that_is_not_about_the_key_is_not_failed_over():
    upstream_answers({"sk-firstkey00001": (500, {}), "sk-secondkey0002": (200, {})})
    pool = pool_of("sk-firstkey00001", "sk-secondkey0002")
    with pytest.raises(UpstreamError) as caught:
        with_failover(send_chat, pool)
    assert caught.value.status == 500 and len(responses.calls) == 1
    assert [k["state"] for k in pool.describe()] == ["ok", "ok"] and pool.describe()[0]["in_flight"] == 0


@responses.activate
def test_402_everywhere_says_balance():
    upstream_answers({"sk-poorkey000001": (402, {})})
    pool = pool_of("sk-poorkey000001")
    with pytest.raises(UpstreamError):
        with_failover(send_chat, pool)
    with pytest.raises(NoKeyAvailable) as caught:
        pool.pick()
    assert caught.value.status == 402 and caught.value.kind == "insufficient_balance"
    assert "Insufficient Balance" in caught.value.message and "sk-poorkey000001" not in caught.value.message


def test_a_second_pool_on_the_same_store_skips_the_cooled_key():
    """Two workers (or instances) sharing one store agree on cool-downs."""
    store = MemoryStore(**LIMITS)
    clock = Clock()
    first = pool_of("sk-sharedkey0001", "sk-sharedkey0002", store=store, clock=clock)
    second = pool_of("sk-sharedkey0001", "sk-sharedkey0002", store=store, clock=clock)
    lease = first.pick()
    lease.report(429, 30)
    lease.release()
    assert second.pick().key == "sk-sharedkey0002"
    assert second.describe()[0]["state"] == "cooling"
    assert "sk-sharedkey0001" not in repr(store._marks)  # the key's hash prefix, never the key


def test_describe_masks_keys_and_reports_missing_sources(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("sk-fromafile9876\n")
    config = UpstreamConfig(name="deepseek", base_url="https://api.deepseek.test",
                            api_keys=("env:POOL_A", "env:POOL_MISSING", f"file:{key_file}"))
    pool = KeyPool.from_config(config, env={"POOL_A": "sk-fromtheenv1234"})
    described = pool.describe()
    assert [d["key"] for d in described] == ["sk-…1234", None, "sk-…9876"]
    assert [d["state"] for d in described] == ["ok", "missing", "ok"]
    assert "POOL_MISSING is not set" in described[1]["reason"]
    text = repr(described)
    assert "fromtheenv" not in text and "fromafile" not in text
    assert {pool.pick().key, pool.pick().key} == {"sk-fromtheenv1234", "sk-fromafile9876"}
    assert mask("short") == "…"


def test_a_single_api_key_is_a_pool_of_one():
    config = UpstreamConfig(name="deepseek", base_url="https://api.deepseek.test", api_key="env:DEEPSEEK_API_KEY")
    pool = KeyPool.from_config(config, env={"DEEPSEEK_API_KEY": "sk-onlyonekey0000"})
    assert [d["source"] for d in pool.describe()] == ["env:DEEPSEEK_API_KEY"]


def test_a_file_key_source_reads_the_first_line_and_says_what_is_wrong(tmp_path):
    from deepseek_proxy.config import KeyUnavailable, key_source_fix, resolve_key

    path = tmp_path / "deepseek.key"
    path.write_text("  sk-fromfile00001  \nsecond line ignored\n")
    assert resolve_key(f"file:{path}") == "sk-fromfile00001"
    with pytest.raises(KeyUnavailable, match="cannot be read"):
        resolve_key(f"file:{tmp_path}/absent")
    path.write_text("\n")
    with pytest.raises(KeyUnavailable, match="is empty"):
        resolve_key(f"file:{path}")
    fix = key_source_fix(UpstreamConfig(name="deepseek", base_url="https://x", api_key=f"file:{path}"))
    assert str(path) in fix and "first line" in fix
