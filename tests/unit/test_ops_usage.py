"""Usage and cost (deepseek_proxy/ops/usage.py, prices.py): token counts from both usage shapes, dated default
prices with peak hours, the recorder, the report."""

from __future__ import annotations

import datetime

import pytest

from deepseek_proxy.ops.prices import PRICES_CHECKED, PRICES_DEFAULT, Prices
from deepseek_proxy.ops.usage import (
    Tokens,
    UsageRecorder,
    format_table,
    parse_since,
    summarize,
    tokens_of,
)
from deepseek_proxy.store import StoreUnavailable, UsageRow
from deepseek_proxy.store.memory import MemoryStore

LIMITS = {"ttl_seconds": 3600.0, "reasoning_ttl_seconds": 600.0, "max_response_bytes": 1 << 20}
OFF_PEAK = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.timezone.utc).timestamp()
PEAK = datetime.datetime(2026, 12, 1, 7, 30, tzinfo=datetime.timezone.utc).timestamp()

DEEPSEEK_USAGE = {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
                  "prompt_cache_hit_tokens": 1000, "prompt_cache_miss_tokens": 200,
                  "prompt_tokens_details": {"cached_tokens": 1000},
                  "completion_tokens_details": {"reasoning_tokens": 120}}
RESPONSES_USAGE = {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 1000}, "output_tokens": 300,
                   "output_tokens_details": {"reasoning_tokens": 120}, "total_tokens": 1500}


def test_tokens_from_either_usage_shape():
    assert tokens_of(DEEPSEEK_USAGE) == Tokens(1200, 1000, 300, 120)
    assert tokens_of(RESPONSES_USAGE) == Tokens(1200, 1000, 300, 120)
    openai_style = {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}}
    assert tokens_of(openai_style) == Tokens(10, 4, 2, 0)
    assert tokens_of(None) == Tokens() and tokens_of({"prompt_tokens": None, "completion_tokens": "x"}) == Tokens()


def test_the_default_prices_are_dated_and_cover_deepseeks_models():
    assert PRICES_CHECKED == "2026-11-15"
    assert {"deepseek-v4-pro", "deepseek-flash", "deepseek-v4-flash"} <= set(PRICES_DEFAULT)


def test_cost_off_peak_and_peak():
    prices = Prices()
    # pro off-peak: 1000 hit x 0.022 + 200 miss x 0.66 + 300 out x 1.98, per million
    expected = (1000 * 0.022 + 200 * 0.66 + 300 * 1.98) / 1e6
    assert prices.cost("deepseek-v4-pro", input_tokens=1200, cached_tokens=1000, output_tokens=300,
                       at=OFF_PEAK) == pytest.approx(expected)
    assert prices.cost("deepseek-v4-pro", input_tokens=1200, cached_tokens=1000, output_tokens=300,
                       at=PEAK) == pytest.approx(2 * expected)
    assert prices.cost("unknown-model", input_tokens=5, cached_tokens=0, output_tokens=5, at=PEAK) == 0.0


def test_configured_prices_replace_the_defaults_and_peak_hours_can_be_off():
    prices = Prices({"deepseek-v4-pro": {"cache_hit": 1.0, "cache_miss": 2.0, "output": 3.0},
                     "qwen": {"cache_hit": 0.0, "cache_miss": 0.5, "output": 1.0}}, peak_hours_utc=())
    assert prices.cost("deepseek-v4-pro", input_tokens=2_000_000, cached_tokens=1_000_000, output_tokens=1_000_000,
                       at=PEAK) == pytest.approx(1.0 + 2.0 + 3.0)
    assert prices.knows("qwen") and not prices.is_peak(PEAK)


def test_the_recorder_prices_by_the_upstream_model_and_keeps_the_row():
    store = MemoryStore(**LIMITS)
    recorder = UsageRecorder(store, Prices())
    row = recorder.record_usage(key_name="alice", model="pro-alias", upstream_model="deepseek-v4-pro",
                                upstream="deepseek", status=200, usage=DEEPSEEK_USAGE, duration_ms=812.3456,
                                ttft_ms=95.12345, door="responses", request_id="req_1", at=OFF_PEAK)
    assert row is not None and store.usage_rows(since=0) == [row]
    assert (row.input_tokens, row.cached_tokens, row.output_tokens, row.reasoning_tokens) == (1200, 1000, 300, 120)
    assert row.cost_usd == pytest.approx((1000 * 0.022 + 200 * 0.66 + 300 * 1.98) / 1e6)
    assert (row.duration_ms, row.ttft_ms) == (812.346, 95.123)
    assert store.spent_usd("alice") == pytest.approx(row.cost_usd)


def test_a_store_failure_is_logged_not_raised(caplog):
    class Down(MemoryStore):
        def add_usage(self, row):
            raise StoreUnavailable("the Redis store: connection refused")

    recorder = UsageRecorder(Down(**LIMITS), Prices())
    assert recorder.record_usage(key_name="a", model="m", upstream="u", status=200, usage=None, duration_ms=1,
                                 request_id="req_9") is not None
    assert "req_9" in caplog.text and "not recorded" in caplog.text


def test_recording_off_keeps_nothing():
    store = MemoryStore(**LIMITS)
    assert UsageRecorder(store, Prices(), enabled=False).record_usage(key_name="a", model="m", upstream="u",
                                                                      status=200, usage=None, duration_ms=1) is None
    assert store.usage_rows() == []


def rows() -> list[UsageRow]:
    day1 = datetime.datetime(2026, 11, 30, 9, tzinfo=datetime.timezone.utc).timestamp()
    day2 = day1 + 86400
    return [UsageRow(at=day1, key_name="alice", model="deepseek-v4-pro", upstream="deepseek", status=200,
                     input_tokens=1000, cached_tokens=800, output_tokens=100, reasoning_tokens=40, cost_usd=0.5),
            UsageRow(at=day2, key_name="alice", model="deepseek-v4-flash", upstream="deepseek", status=429,
                     cost_usd=0.0),
            UsageRow(at=day2, key_name="bob", model="deepseek-v4-pro", upstream="deepseek", status=200,
                     input_tokens=3000, cached_tokens=0, output_tokens=500, reasoning_tokens=0, cost_usd=1.25)]


def test_summaries_by_key_model_and_day():
    by_key = {s.group: s for s in summarize(rows(), "key")}
    assert (by_key["alice"].requests, by_key["alice"].errors, by_key["alice"].input_tokens) == (2, 1, 1000)
    assert by_key["alice"].cache_hit_ratio == pytest.approx(0.8) and by_key["bob"].cost_usd == 1.25
    assert [s.group for s in summarize(rows(), "model")] == ["deepseek-v4-flash", "deepseek-v4-pro"]
    assert [s.group for s in summarize(rows(), "day")] == ["2026-11-30", "2026-12-01"]
    with pytest.raises(ValueError):
        summarize(rows(), "hour")


def test_the_table_has_a_total_line():
    table = format_table(summarize(rows(), "key"), "key")
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["key", "requests", "errors"]
    assert lines[1].split()[:4] == ["alice", "2", "1", "1,000"] and "80.0%" in lines[1]
    assert lines[-1].split() == ["total", "3", "1", "4,000", "800", "600", "40", "20.0%", "1.7500"]


def test_since_takes_durations_and_dates():
    now = 1_800_000_000.0
    assert parse_since("24h", now) == now - 86400
    assert parse_since("30m", now) == now - 1800
    assert parse_since("2w", now) == now - 14 * 86400
    assert parse_since("2026-11-01", now) == datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc).timestamp()
    with pytest.raises(ValueError, match="--since"):
        parse_since("yesterday", now)
