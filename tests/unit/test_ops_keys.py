"""Client keys (deepseek_proxy/ops/keys.py): the key format, its hash, and authenticate() over config keys and
stored keys, with revocation taking effect within the 1 s cache."""

from __future__ import annotations

import re

import pytest

from deepseek_proxy.ops.keys import (
    INVALID,
    MISSING,
    REVOKED,
    STORE_DOWN,
    Authenticator,
    AuthFailure,
    ClientIdentity,
    add_key,
    check_model,
    key_hash,
    new_key,
)
from deepseek_proxy.store import StoreUnavailable
from deepseek_proxy.store.memory import MemoryStore

LIMITS = {"ttl_seconds": 3600.0, "reasoning_ttl_seconds": 600.0, "max_response_bytes": 1 << 20}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def store():
    return MemoryStore(**LIMITS)


@pytest.fixture()
def clock():
    return Clock()


def test_a_new_key_has_the_prefix_and_256_random_bits():
    keys = {new_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert re.fullmatch(r"dsp-[A-Za-z0-9_\-]{43}", key), key
    assert key_hash("dsp-x") == key_hash(b"dsp-x") and len(key_hash("dsp-x")) == 64


def test_only_the_hash_is_stored(store):
    key = add_key(store, "alice")
    record = store.get_client_key("alice")
    assert record.key_hash == key_hash(key)
    assert key not in repr(record) and key not in repr(record.to_json())
    assert record.hint == key[:8] + "…"


def test_no_keys_anywhere_means_an_open_proxy(store):
    auth = Authenticator((), store)
    assert auth.authenticate(None) == ClientIdentity("anonymous", "open")
    assert auth.authenticate("whatever") == ClientIdentity("anonymous", "open")


def test_config_keys_are_named_by_position_and_others_refused(store):
    auth = Authenticator(("first-key", "second-key"), store)
    assert auth.authenticate("second-key") == ClientIdentity("config#2", "config")
    assert auth.authenticate(b"first-key") == ClientIdentity("config#1", "config")
    assert auth.authenticate(None) is MISSING
    assert auth.authenticate("") is MISSING
    assert auth.authenticate("wrong") is INVALID
    assert auth.authenticate("Bearer é".encode("latin-1")) is INVALID  # non-ASCII bytes: refused, not a crash
    assert auth.authenticate("ключ") is INVALID


def test_a_stored_key_authenticates_with_its_limits(store):
    key = add_key(store, "alice", models=("deepseek-v4-pro",), budget_usd=3.0, rpm=10, concurrency=2)
    identity = Authenticator((), store).authenticate(key)
    assert identity == ClientIdentity("alice", "store", ("deepseek-v4-pro",), 3.0, 10, 2, 0.0)
    assert check_model(identity, "deepseek-v4-pro") is None
    refusal = check_model(identity, "deepseek-v4-flash")
    assert isinstance(refusal, AuthFailure) and refusal.status == 403 and "deepseek-v4-flash" in refusal.message


def test_once_a_key_exists_requests_without_one_are_refused(store, clock):
    auth = Authenticator((), store, clock=clock)
    assert isinstance(auth.authenticate(None), ClientIdentity)
    add_key(store, "alice")
    clock.now += 1.0
    assert auth.authenticate(None) is MISSING
    assert auth.authenticate("dsp-not-a-key") is INVALID


def test_revoking_the_last_key_does_not_open_the_proxy(store, clock):
    key = add_key(store, "alice")
    store.revoke_client_key("alice")
    auth = Authenticator((), store, clock=clock)
    assert auth.authenticate(key) is REVOKED
    assert auth.authenticate(None) is MISSING
    assert auth.authenticate("dsp-not-a-key") is INVALID


def test_a_revoked_key_is_refused_within_the_cache_time(store, clock):
    key = add_key(store, "alice")
    auth = Authenticator((), store, clock=clock)
    assert auth.authenticate(key).name == "alice"
    store.revoke_client_key("alice")
    clock.now += 0.5
    assert auth.authenticate(key).name == "alice"  # the cached record, at most 1 s old
    clock.now += 0.5
    assert auth.authenticate(key) is REVOKED
    fresh = Authenticator((), store, clock=clock)  # another worker: no cache yet, refused at once
    assert fresh.authenticate(key) is REVOKED


def test_a_spent_budget_refuses_with_insufficient_quota(store, clock):
    from deepseek_proxy.store import UsageRow

    key = add_key(store, "alice", budget_usd=1.0)
    auth = Authenticator((), store, clock=clock)
    assert auth.authenticate(key).spent_usd == 0.0
    store.add_usage(UsageRow(at=1.0, key_name="alice", model="m", upstream="u", status=200, cost_usd=1.25))
    clock.now += 1.0
    refusal = auth.authenticate(key)
    assert isinstance(refusal, AuthFailure)
    assert (refusal.status, refusal.code, refusal.kind) == (429, "insufficient_quota", "insufficient_balance")
    assert "$1.25 of $1.00" in refusal.message and "alice" in refusal.message


def test_last_use_is_written_once_a_minute(store, clock):
    key = add_key(store, "alice")
    auth = Authenticator((), store, clock=clock, wall_clock=lambda: 5000.0 + clock.now)
    auth.authenticate(key)
    assert store.get_client_key("alice").last_used_at == 6000.0
    clock.now += 30
    auth.authenticate(key)
    assert store.get_client_key("alice").last_used_at == 6000.0
    clock.now += 31
    auth.authenticate(key)
    assert store.get_client_key("alice").last_used_at == 6061.0


class BrokenStore(MemoryStore):
    def find_client_key(self, key_hash):
        raise StoreUnavailable("the Redis store: connection refused")

    def list_client_keys(self):
        raise StoreUnavailable("the Redis store: connection refused")


def test_an_unreachable_store_fails_closed_but_config_keys_still_work():
    auth = Authenticator(("cfg-key",), BrokenStore(**LIMITS))
    assert auth.authenticate("cfg-key") == ClientIdentity("config#1", "config")
    assert auth.authenticate("dsp-something") is STORE_DOWN
    open_auth = Authenticator((), BrokenStore(**LIMITS))
    assert open_auth.authenticate(None) is MISSING  # it cannot know there are no keys: it asks for one
