"""Usage and cost (deepseek_proxy/ops/usage.py, prices.py): token counts from both usage shapes, dated default
prices with peak hours, the recorder (with the conversation and what the prefix cache saved), the report by key,
model, day, conversation and door, its savings line and JSON."""

from __future__ import annotations

import datetime

import pytest

from deepseek_proxy.ops.prices import PRICES_CHECKED, PRICES_DEFAULT, Prices
from deepseek_proxy.ops.usage import (
    NONE,
    Tokens,
    UsageRecorder,
    format_savings,
    format_table,
    parse_since,
    report_json,
    shorten,
    summarize,
    tokens_of,
    total_of,
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
    assert lines[0].split() == ["key", "requests", "errors", "input", "cached", "miss", "cache", "hit", "output",
                                "reasoning", "cost", "USD"]
    assert lines[-1].split() == ["total", "3", "1", "4,000", "800", "3,200", "20.0%", "600", "40", "1.7500"]


def test_since_takes_durations_and_dates():
    now = 1_800_000_000.0
    assert parse_since("24h", now) == now - 86400
    assert parse_since("30m", now) == now - 1800
    assert parse_since("2w", now) == now - 14 * 86400
    assert parse_since("2026-11-01", now) == datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc).timestamp()
    with pytest.raises(ValueError, match="--since"):
        parse_since("yesterday", now)


PRO_HIT, PRO_MISS, PRO_OUT = 0.022, 0.66, 1.98  # deepseek-v4-pro off-peak, USD per 1M tokens


def test_the_saving_is_the_hits_at_the_miss_price_less_the_hit_price_peak_or_not():
    prices = Prices()
    assert prices.rates("deepseek-v4-pro", OFF_PEAK) == (PRO_HIT, PRO_MISS, PRO_OUT)
    assert prices.rates("deepseek-v4-pro", PEAK) == (2 * PRO_HIT, 2 * PRO_MISS, 2 * PRO_OUT)
    saved = prices.saving("deepseek-v4-pro", input_tokens=1200, cached_tokens=1000, at=OFF_PEAK)
    assert saved == pytest.approx(1000 * (PRO_MISS - PRO_HIT) / 1e6)
    all_miss = prices.cost("deepseek-v4-pro", input_tokens=1200, cached_tokens=0, output_tokens=300, at=OFF_PEAK)
    actual = prices.cost("deepseek-v4-pro", input_tokens=1200, cached_tokens=1000, output_tokens=300, at=OFF_PEAK)
    assert actual + saved == pytest.approx(all_miss)
    assert prices.saving("deepseek-v4-pro", input_tokens=1200, cached_tokens=1000, at=PEAK) == pytest.approx(2 * saved)
    assert prices.saving("unknown-model", input_tokens=10, cached_tokens=10, at=PEAK) == 0.0


def test_the_recorder_keeps_the_conversation_and_what_the_cache_saved():
    store = MemoryStore(**LIMITS)
    recorder = UsageRecorder(store, Prices())
    row = recorder.record_usage(key_name="alice", model="deepseek-v4-pro", upstream="deepseek", status=200,
                                usage=DEEPSEEK_USAGE, duration_ms=1, door="messages", at=OFF_PEAK,
                                conversation="messages:0b7c5e0e-7c1f-4c55-9d1e-3f5b8e2a9c41")
    assert store.usage_rows(since=0) == [row]
    assert row.conversation == "messages:0b7c5e0e-7c1f-4c55-9d1e-3f5b8e2a9c41" and row.door == "messages"
    assert row.saved_usd == pytest.approx(1000 * (PRO_MISS - PRO_HIT) / 1e6)
    unnamed = recorder.make_row(key_name="a", model="deepseek-v4-pro", upstream="u", status=200, usage=None,
                                duration_ms=1, conversation=None)
    assert (unnamed.conversation, unnamed.saved_usd, unnamed.cost_usd) == ("", 0.0, 0.0)


def test_more_hits_than_input_count_as_all_of_the_input():
    recorder = UsageRecorder(MemoryStore(**LIMITS), Prices())
    row = recorder.make_row(key_name="a", model="deepseek-v4-pro", upstream="u", status=200, duration_ms=1,
                            usage={"prompt_tokens": 100, "prompt_cache_hit_tokens": 150, "completion_tokens": 1},
                            at=OFF_PEAK)
    assert (row.input_tokens, row.cached_tokens) == (100, 100)
    assert summarize([row])[0].cache_hit_ratio == 1.0


CODEX = "responses:019ad1f4-31c2-7b4e-9a10-5c2f0e8d7a31"
CODEX_LATER = "responses:019ad1f4-31c2-7f00-8b22-6d3e1f9c8b42"  # the same millisecond prefix, another session
CLAUDE = "messages:0b7c5e0e-7c1f-4c55-9d1e-3f5b8e2a9c41"


def conversation_rows() -> list[UsageRow]:
    def row(at: float, conversation: str, door: str, input_tokens: int, cached: int, cost: float,
            saved: float | None) -> UsageRow:
        return UsageRow(at=OFF_PEAK + at, key_name="alice", model="deepseek-v4-pro", upstream="deepseek", status=200,
                        input_tokens=input_tokens, cached_tokens=cached, output_tokens=10, cost_usd=cost, door=door,
                        conversation=conversation, saved_usd=saved)

    return [row(0, CODEX_LATER, "responses", 1000, 0, 0.001, 0.0),
            row(-60, CODEX, "responses", 2000, 1920, 0.0002, 0.0012),
            row(-30, CODEX, "responses", 3000, 2944, 0.0002, 0.0018),
            row(10, CLAUDE, "messages", 4000, 3968, 0.0003, 0.0025),
            row(20, "", "chat", 500, 64, 0.0004, None)]  # no conversation; recorded before savings were


def test_summaries_by_conversation_in_the_order_they_started_and_by_door():
    summaries = summarize(conversation_rows(), "conversation", estimate=lambda row: 0.25)
    assert [s.group for s in summaries] == [CODEX, CODEX_LATER, CLAUDE, NONE]
    codex = summaries[0]
    assert (codex.requests, codex.input_tokens, codex.cached_tokens, codex.miss_tokens) == (2, 5000, 4864, 136)
    assert codex.cache_hit_ratio == pytest.approx(4864 / 5000)
    assert codex.cost_usd == pytest.approx(0.0004) and codex.saved_usd == pytest.approx(0.003)
    assert codex.cost_without_cache_usd == pytest.approx(0.0034)
    assert (summaries[3].saved_usd, summaries[3].estimated) == (0.25, 1)
    by_door = {s.group: s for s in summarize(conversation_rows(), "door")}
    assert set(by_door) == {"chat", "messages", "responses"}
    assert by_door["responses"].cache_hit_ratio == pytest.approx(4864 / 6000)
    assert summarize(conversation_rows(), "conversation")[3].saved_usd == 0.0  # no estimate: nothing claimed


def test_long_conversation_keys_are_shortened_to_a_prefix_that_tells_them_apart():
    shown = shorten([CODEX, CODEX_LATER, CLAUDE, NONE, "alice"], width=26)
    assert shown[NONE] == NONE and shown["alice"] == "alice"
    assert shown[CLAUDE] == CLAUDE[:25] + "…"
    # the two Codex sessions share their first 25 characters: each is cut one past them
    assert shown[CODEX] == CODEX[:26] + "…" and shown[CODEX_LATER] == CODEX_LATER[:26] + "…"
    assert len(set(shown.values())) == 5
    assert shorten(["responses:" + "a" * 30, "responses:" + "a" * 31])["responses:" + "a" * 30] == "responses:" + "a" * 30
    table = format_table(summarize(conversation_rows(), "conversation"), "conversation")
    assert CODEX not in table and CODEX[:26] + "…" in table
    assert max(len(line) for line in table.splitlines()) < 120


def test_the_savings_line_and_the_json_report():
    summaries = summarize(conversation_rows(), "conversation", estimate=lambda row: 0.25)
    total = total_of(summaries)
    line = format_savings(total)
    assert "8,896 of 10,500 input tokens hit (84.7%)" in line
    assert f"saving {0.0055 + 0.25:.4f} USD: these requests cost {total.cost_usd:.4f} USD, " \
           f"{total.cost_usd + 0.2555:.4f} USD at cache-miss prices" in line
    assert "the saving of 1 request(s) recorded before savings were is estimated" in line
    assert format_savings(total_of([])) == ""
    report = report_json(summaries, "conversation", since=OFF_PEAK - 3600, until=None)
    assert report["by"] == "conversation" and report["until"] is None
    assert report["since"] == "2026-12-01T11:00:00+00:00"
    first = report["groups"][0]
    assert first["group"] == CODEX  # whole, never shortened
    assert (first["input_tokens"], first["cached_tokens"], first["miss_tokens"]) == (5000, 4864, 136)
    assert first["cache_hit_ratio"] == pytest.approx(0.9728) and first["first"] == "2026-12-01T11:59:00+00:00"
    assert report["total"]["requests"] == 5
    assert report["total"]["cost_without_cache_usd"] == pytest.approx(total.cost_usd + total.saved_usd)


def test_the_request_scope_records_its_conversation_and_door(tmp_path):
    from deepseek_proxy.config import Config, ModelConfig, ServerConfig, UpstreamConfig
    from deepseek_proxy.ops import Ops
    from deepseek_proxy.ops.request import begin_request

    pro = ModelConfig(id="deepseek-v4-pro", upstream_model="deepseek-v4-pro")
    upstreams = {"deepseek": UpstreamConfig(name="deepseek", base_url="https://api.deepseek.test")}
    ops = Ops(Config(server=ServerConfig(reasoning_secret=b"x"), upstreams=upstreams, models={"deepseek-v4-pro": pro}),
              store=MemoryStore(**LIMITS), env={"HOME": str(tmp_path)})
    environ = {"deepseek_proxy.request_id": "req_c", "REQUEST_METHOD": "POST", "PATH_INFO": "/v1/messages"}
    scope = begin_request(ops, environ=environ, presented_key=None, door="messages", model=pro, stream=False)
    scope.conversation = CLAUDE  # set by the door from the client's session
    scope.finish(usage=DEEPSEEK_USAGE, status=200)
    unnamed = begin_request(ops, environ=environ, presented_key=None, door="chat", model=pro, stream=False)
    unnamed.finish(usage=DEEPSEEK_USAGE, status=200)
    rows = ops.store.usage_rows(since=0)
    assert [(row.door, row.conversation) for row in rows] == [("messages", CLAUDE), ("chat", "")]
    expected = Prices().saving("deepseek-v4-pro", input_tokens=1200, cached_tokens=1000, at=rows[0].at)
    assert expected > 0 and rows[0].saved_usd == pytest.approx(expected)
