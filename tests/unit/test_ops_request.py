"""The request scope (deepseek_proxy/ops/request.py): what the relay calls, end to end on a memory store."""

from __future__ import annotations

import json
import logging

import pytest

from deepseek_proxy.config import (
    Config,
    LimitsConfig,
    ModelConfig,
    ServerConfig,
    UpstreamConfig,
)
from deepseek_proxy.ops import Ops
from deepseek_proxy.ops.keys import add_key
from deepseek_proxy.ops.request import Refused, begin_request
from deepseek_proxy.store.memory import MemoryStore

LIMITS = {"ttl_seconds": 3600.0, "reasoning_ttl_seconds": 600.0, "max_response_bytes": 1 << 20}
PRO = ModelConfig(id="deepseek-v4-pro", upstream_model="deepseek-v4-pro")
FLASH = ModelConfig(id="deepseek-v4-flash", upstream_model="deepseek-v4-flash")
USAGE = {"prompt_tokens": 1000, "completion_tokens": 100, "prompt_cache_hit_tokens": 900,
         "completion_tokens_details": {"reasoning_tokens": 30}}


def ops_with(tmp_path, **limits) -> Ops:
    config = Config(server=ServerConfig(reasoning_secret=b"x"),
                    upstreams={"deepseek": UpstreamConfig(name="deepseek", base_url="https://api.deepseek.test")},
                    models={"deepseek-v4-pro": PRO, "deepseek-v4-flash": FLASH}, limits=LimitsConfig(**limits))
    return Ops(config, store=MemoryStore(**LIMITS), env={"HOME": str(tmp_path)})


def environ(rid: str = "req_test1") -> dict:
    return {"deepseek_proxy.request_id": rid, "REQUEST_METHOD": "POST", "PATH_INFO": "/v1/responses"}


def test_a_request_is_attributed_recorded_counted_and_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="deepseek_proxy.access")
    ops = ops_with(tmp_path, key_concurrency=1, queue_ms=0)
    key = add_key(ops.store, "alice", models=("deepseek-v4-pro",))
    scope = begin_request(ops, environ=environ(), presented_key=key, door="responses", model=PRO, stream=True)
    assert scope.identity.name == "alice"
    with pytest.raises(Refused) as busy:  # her one slot is held by the open stream
        begin_request(ops, environ=environ("req_2"), presented_key=key, door="responses", model=PRO, stream=True)
    assert (busy.value.status, busy.value.kind, busy.value.headers) == (429, "rate_limited", {"retry-after": "1"})
    scope.first_token()
    scope.finish(usage=USAGE, status=200, outcome="completed", upstream_key="env:DEEPSEEK_API_KEY")
    scope.finish(usage=USAGE, status=200)  # once only
    [row] = ops.store.usage_rows(since=0)
    assert (row.key_name, row.model, row.upstream, row.status, row.request_id) == (
        "alice", "deepseek-v4-pro", "deepseek", 200, "req_test1")
    assert (row.input_tokens, row.cached_tokens, row.output_tokens, row.reasoning_tokens) == (1000, 900, 100, 30)
    assert row.cost_usd > 0 and row.ttft_ms is not None and row.duration_ms >= row.ttft_ms
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "deepseek_proxy.access"]
    assert len(lines) == 1 and lines[0]["key"] == "alice" and lines[0]["request_id"] == "req_test1"
    assert key not in caplog.text
    begin_request(ops, environ=environ("req_3"), presented_key=key, door="responses", model=PRO,
                  stream=False).finish(usage=None, status=200)  # the slot is free again


def test_refusals_carry_the_kind_the_door_renders(tmp_path):
    ops = ops_with(tmp_path)
    key = add_key(ops.store, "bob", models=("deepseek-v4-pro",))
    cases = [(None, PRO, 401, "authentication"), ("dsp-wrong", PRO, 401, "authentication"),
             (key, FLASH, 403, "permission")]
    for presented, model, status, kind in cases:
        with pytest.raises(Refused) as caught:
            begin_request(ops, environ=environ(), presented_key=presented, door="responses", model=model,
                          stream=False)
        assert (caught.value.status, caught.value.kind) == (status, kind)
