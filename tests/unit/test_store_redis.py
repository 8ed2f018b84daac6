"""What only the Redis backend promises: Redis itself expires the keys, two stores (two proxy instances) see each
other's records, a dead server is StoreUnavailable without the URL's password, and a redis:// URL without redis-py
installed stops the start with the command that fixes it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid

import pytest
import redis

from deepseek_proxy.config import StoreConfig
from deepseek_proxy.store import StoredResponse, StoreUnavailable, open_store
from deepseek_proxy.store.redis import RedisStore

LIMITS = {"ttl_seconds": 3600.0, "reasoning_ttl_seconds": 600.0, "max_response_bytes": 1 << 22}


def record(response_id: str) -> StoredResponse:
    output = [{"id": f"rs_{response_id}", "type": "reasoning", "summary": []}]
    return StoredResponse(id=response_id, response={"id": response_id, "output": output},
                          input_items=[{"id": f"in_{response_id}", "type": "message", "role": "user", "content": "x"}],
                          model="m", created_at=1)


@pytest.fixture()
def prefix():
    return f"t{uuid.uuid4().hex[:8]}:"


def test_redis_expires_every_key_itself(redis_server, prefix):
    store = RedisStore(redis_server.url, prefix=prefix, **LIMITS)
    store.put_response(record("resp_1"))
    store.put_reasoning("call_1", "why")
    raw = redis.Redis.from_url(redis_server.url)
    keys = sorted(k.decode() for k in raw.keys(f"{prefix}*"))
    assert keys == [f"{prefix}item:in_resp_1", f"{prefix}item:rs_resp_1", f"{prefix}reasoning:call_1",
                    f"{prefix}resp:resp_1"]
    for key in keys:
        ttl = raw.pttl(key) / 1000
        limit = 600 if "reasoning" in key else 3600
        assert limit - 60 < ttl <= limit, key


def test_a_short_ttl_really_goes(redis_server, prefix):
    store = RedisStore(redis_server.url, prefix=prefix, ttl_seconds=0.2, reasoning_ttl_seconds=0.2,
                       max_response_bytes=1 << 20)
    store.put_response(record("resp_1"))
    raw = redis.Redis.from_url(redis_server.url)
    deadline = time.monotonic() + 10
    while raw.exists(f"{prefix}resp:resp_1") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not raw.exists(f"{prefix}resp:resp_1")  # gone from Redis, not only hidden
    assert store.get_response("resp_1") is None


def test_two_instances_share_one_redis(redis_server, prefix):
    a = RedisStore(redis_server.url, prefix=prefix, **LIMITS)
    b = RedisStore(redis_server.url, prefix=prefix, **LIMITS)
    a.put_response(record("resp_1"))
    a.put_reasoning("call_1", "seen on b")
    b.put_response(StoredResponse(id="resp_2", response={"id": "resp_2", "output": []}, input_items=[], model="m",
                                  created_at=2, previous_response_id="resp_1"))
    assert [r.id for r in a.get_conversation("resp_2")] == ["resp_1", "resp_2"]
    assert b.get_reasoning("call_1") == "seen on b"
    assert b.get_item("rs_resp_1")["type"] == "reasoning"


def test_an_unreachable_redis_is_unavailable_and_hides_the_password():
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    store = RedisStore(f"redis://:hunter2-secret@127.0.0.1:{port}/0", **LIMITS)
    with pytest.raises(StoreUnavailable) as caught:
        store.get_response("resp_1")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(StoreUnavailable):
        store.ping()


def test_open_store_picks_the_backend_from_the_url(redis_server, tmp_path):
    config = StoreConfig(url=redis_server.url)
    assert type(open_store(config)).__name__ == "RedisStore"
    assert type(open_store(StoreConfig(url=f"sqlite:///{tmp_path}/s.db"))).__name__ == "SQLiteStore"
    assert type(open_store(StoreConfig(url="memory://"))).__name__ == "MemoryStore"
    open_store(config).ping()


def test_a_redis_url_without_redis_py_says_how_to_install_it():
    # A fresh interpreter in which `import redis` fails, as in an install without the [redis] extra.
    script = textwrap.dedent("""
        import sys
        sys.modules["redis"] = None  # makes `import redis` raise ImportError
        from deepseek_proxy.config import ConfigError, StoreConfig
        from deepseek_proxy.store import open_store
        try:
            open_store(StoreConfig(url="redis://127.0.0.1:6379/0"))
        except ConfigError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "redis-py" in out.stdout and "pip install 'deepseek-proxy[redis]'" in out.stdout
