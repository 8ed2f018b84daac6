"""Running the proxy for a team (issue 12), on the real server (gunicorn + gevent) against the fake DeepSeek: client
keys made with `deepseek-proxy keys add` (revoked → refused at once), per-key rpm and concurrency limits (429 with
`retry-after` in each door's own error format), budgets, the upstream key pool's failover past a key the upstream
refuses, usage rows equal to the upstream's token counts, /metrics counters equal to the requests sent (2 workers),
and limits shared by two instances through a real Redis."""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from deepseek_proxy.cli import main as cli_main
from deepseek_proxy.config import StoreConfig
from deepseek_proxy.store import open_store
from tests.fakes.fake_deepseek import Reply

MODEL = "deepseek-v4-pro"
CLAUDE_MODEL = "claude-sonnet-4-5"


def cli(config: Path, *words: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["--config", str(config), *words]) == 0
    return out.getvalue()


def store_setup(tmp_path: Path, extra: str = "") -> tuple[str, Path, str]:
    """(store url, CLI config, proxy config text): the proxy and the CLI share one SQLite store."""
    url = f"sqlite:///{tmp_path}/team-store.db"
    cli_config = tmp_path / "cli.toml"
    cli_config.write_text(f'[store]\nurl = "{url}"\n')
    return url, cli_config, f'[store]\nurl = "{url}"\n{extra}'


def add_key(cli_config: Path, name: str, *options: str) -> str:
    [key] = re.findall(r"dsp-\S+", cli(cli_config, "keys", "add", name, *options))
    return key


def responses(base_url: str, key: str | None, *, stream: bool = False, **extra) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}", "Connection": "close"} if key else {"Connection": "close"}
    return requests.post(base_url + "/v1/responses", json={"model": MODEL, "input": "hi", "stream": stream, **extra},
                         headers=headers, timeout=30)


def messages(base_url: str, key: str, *, stream: bool = False) -> requests.Response:
    return requests.post(base_url + "/v1/messages",
                         json={"model": CLAUDE_MODEL, "max_tokens": 200, "stream": stream,
                               "messages": [{"role": "user", "content": "hi"}]},
                         headers={"x-api-key": key, "anthropic-version": "2023-06-01", "Connection": "close"},
                         timeout=30)


def test_a_revoked_key_is_refused_at_once_by_every_door(start_proxy, upstream, tmp_path):
    _, cli_config, config_text = store_setup(tmp_path)
    proxy = start_proxy(upstream.base_url, config_text, workers=2)
    key = add_key(cli_config, "alice")
    upstream.script(Reply.text("ok"), Reply.text("ok"))
    assert responses(proxy.base_url, key).status_code == 200
    assert messages(proxy.base_url, key).status_code == 200
    # This once failed: the SQLite store re-opened its file outside SQLite to set its mode, which dropped the
    # process's POSIX locks, so a worker went on reading a deleted WAL (tests/unit/test_store_sqlite.py).
    cli(cli_config, "keys", "revoke", "alice")
    time.sleep(1.1)  # a key's record is cached at most 1 s per process
    calls_before = len(upstream.chat_requests)
    for _ in range(4):  # both workers
        refused = responses(proxy.base_url, key)
        assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
        anthropic = messages(proxy.base_url, key)
        assert anthropic.status_code == 401
        assert anthropic.json()["type"] == "error" and anthropic.json()["error"]["type"] == "authentication_error"
        assert "revoked" in anthropic.json()["error"]["message"]
    assert len(upstream.chat_requests) == calls_before  # nothing reached the upstream
    assert responses(proxy.base_url, "dsp-not-a-key").status_code == 401  # keys exist: a wrong one is refused
    assert key not in proxy.log()


def test_a_key_over_its_rpm_gets_a_429_with_retry_after_in_each_doors_format(start_proxy, upstream, tmp_path):
    _, cli_config, config_text = store_setup(tmp_path)
    proxy = start_proxy(upstream.base_url, config_text, workers=2)
    key = add_key(cli_config, "bob", "--rpm", "2")
    upstream.script(Reply.text("one"), Reply.text("two"))
    assert responses(proxy.base_url, key).status_code == 200
    assert messages(proxy.base_url, key).status_code == 200
    openai = responses(proxy.base_url, key, stream=True)
    assert openai.status_code == 429
    assert int(openai.headers["retry-after"]) >= 1
    assert openai.json()["error"]["code"] == "rate_limit_exceeded"
    assert openai.json()["error"]["type"] == "rate_limit_error"
    anthropic = messages(proxy.base_url, key, stream=True)
    assert anthropic.status_code == 429 and int(anthropic.headers["retry-after"]) >= 1
    assert anthropic.json()["type"] == "error" and anthropic.json()["error"]["type"] == "rate_limit_error"
    gemini = requests.post(proxy.base_url + f"/v1beta/models/gemini-2.5-pro:generateContent?key={key}",
                           json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, timeout=30)
    assert gemini.status_code == 429 and int(gemini.headers["retry-after"]) >= 1
    assert gemini.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert len(upstream.chat_requests) == 2


def test_a_key_over_its_concurrency_gets_a_429_while_its_stream_is_open(start_proxy, upstream, tmp_path):
    _, cli_config, config_text = store_setup(tmp_path, "[limits]\nqueue_ms = 200\n")
    proxy = start_proxy(upstream.base_url, config_text, workers=2)
    key = add_key(cli_config, "carol", "--concurrency", "1")
    upstream.script(Reply.text("a slow answer", chunks=["a ", "slow ", "answer"], delay=0.5),
                    Reply.text("after"))
    opened = threading.Event()
    first: dict = {}

    def slow() -> None:
        with requests.post(proxy.base_url + "/v1/responses", json={"model": MODEL, "input": "hi", "stream": True},
                           headers={"Authorization": f"Bearer {key}"}, stream=True, timeout=30) as reply:
            first["status"] = reply.status_code
            opened.set()
            first["body"] = reply.content

    thread = threading.Thread(target=slow)
    thread.start()
    assert opened.wait(15)
    refused = responses(proxy.base_url, key, stream=True)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    anthropic = messages(proxy.base_url, key)
    assert anthropic.status_code == 429 and anthropic.json()["error"]["type"] == "rate_limit_error"
    thread.join(30)
    assert first["status"] == 200 and b"response.completed" in first["body"]
    # The slot was released when the stream ended: the next request is admitted.
    assert responses(proxy.base_url, key).status_code == 200


def test_a_budget_stops_a_key(start_proxy, upstream, tmp_path):
    _, cli_config, config_text = store_setup(tmp_path)
    proxy = start_proxy(upstream.base_url, config_text)
    key = add_key(cli_config, "dave", "--budget-usd", "0.0001")
    upstream.script(Reply.text("costly", usage={"prompt_tokens": 400_000, "prompt_cache_hit_tokens": 0,
                                                 "completion_tokens": 1000}))
    assert responses(proxy.base_url, key).status_code == 200
    time.sleep(1.1)  # the spent amount is read with the key's record, at most 1 s old
    refused = responses(proxy.base_url, key)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota" and "budget" in refused.json()["error"]["message"]
    anthropic = messages(proxy.base_url, key)
    # Anthropic's own word for money spent: 402 billing_error (Claude Code stops instead of retrying).
    assert anthropic.status_code == 402 and anthropic.json()["error"]["type"] == "billing_error"
    assert "budget" in anthropic.json()["error"]["message"]
    assert len(upstream.chat_requests) == 1


def test_an_upstream_key_that_answers_401_is_skipped(start_proxy, upstream, tmp_path):
    config_text = '[upstreams.deepseek]\napi_keys = ["env:FIRST_KEY", "env:DEEPSEEK_API_KEY"]\n'
    proxy = start_proxy(upstream.base_url, config_text, extra_env={"FIRST_KEY": "sk-refused-by-the-upstream-0001"})
    upstream.script(Reply.text("answered by the second key"), Reply.text("again"))
    reply = responses(proxy.base_url, None)
    assert reply.status_code == 200, reply.text
    assert reply.json()["output"][-1]["content"][0]["text"] == "answered by the second key"
    keys = [r.headers.get("authorization") for r in upstream.chat_requests]
    assert keys == ["Bearer sk-refused-by-the-upstream-0001", f"Bearer {upstream.api_key}"]
    # The refused key is set aside: the next request goes to the good key at once.
    assert responses(proxy.base_url, None, stream=True).status_code == 200
    assert len(upstream.chat_requests) == 3
    ready = requests.get(proxy.base_url + "/readyz", timeout=10).json()
    states = {k["source"]: k for k in ready["upstreams"]["deepseek"]["keys"]}
    assert states["env:FIRST_KEY"]["state"] == "set_aside" and "401" in states["env:FIRST_KEY"]["reason"]
    assert states["env:FIRST_KEY"]["key"] == "sk-…0001"  # masked
    assert states["env:DEEPSEEK_API_KEY"]["state"] == "ok"
    assert "sk-refused-by-the-upstream-0001" not in proxy.log()


USAGES = [
    {"prompt_tokens": 1234, "prompt_cache_hit_tokens": 1000, "completion_tokens": 56,
     "completion_tokens_details": {"reasoning_tokens": 7}},
    {"prompt_tokens": 777, "prompt_cache_hit_tokens": 0, "completion_tokens": 33,
     "completion_tokens_details": {"reasoning_tokens": 0}},
    {"prompt_tokens": 90_000, "prompt_cache_hit_tokens": 89_600, "completion_tokens": 4321,
     "completion_tokens_details": {"reasoning_tokens": 321}},
]


def test_usage_rows_match_the_upstreams_token_counts(start_proxy, upstream, tmp_path):
    url, cli_config, config_text = store_setup(tmp_path)
    proxy = start_proxy(upstream.base_url, config_text)
    key = add_key(cli_config, "erin")
    upstream.script(*[Reply.text(f"answer {i}", usage=u) for i, u in enumerate(USAGES)])
    assert responses(proxy.base_url, key, stream=True).status_code == 200
    assert messages(proxy.base_url, key).status_code == 200
    chat = requests.post(proxy.base_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                         json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
                         timeout=30)
    assert chat.status_code == 200
    store = open_store(StoreConfig(url=url))
    deadline = time.monotonic() + 10
    while len(rows := store.usage_rows()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # a stream's row is written right after its last event
    assert [(r.door, r.key_name, r.status) for r in rows] == [("responses", "erin", 200), ("messages", "erin", 200),
                                                            ("chat", "erin", 200)]
    for row, usage in zip(rows, USAGES, strict=True):
        assert (row.input_tokens, row.cached_tokens, row.output_tokens, row.reasoning_tokens) == (
            usage["prompt_tokens"], usage["prompt_cache_hit_tokens"], usage["completion_tokens"],
            usage["completion_tokens_details"]["reasoning_tokens"])
        assert row.cost_usd > 0 and row.ttft_ms is not None and row.duration_ms >= row.ttft_ms
    table = cli(cli_config, "usage", "--by", "key")
    assert "erin" in table and str(sum(u["completion_tokens"] for u in USAGES)) in table.replace(",", "")


def scrape(base_url: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(requests.get(base_url + "/metrics", timeout=10).text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def requests_total(found: dict, door: str, model: str, status: str = "200") -> float:
    labels = tuple(sorted({"door": door, "model": model, "status": status}.items()))
    return found.get(("deepseek_proxy_requests_total", labels), 0.0)


def test_metrics_count_the_requests_sent_to_the_doors_with_two_workers(start_proxy, upstream, tmp_path):
    proxy = start_proxy(upstream.base_url, workers=2)
    sent = 12
    upstream.script(*[Reply.text("counted", usage=USAGES[1]) for _ in range(2 * sent)])
    for i in range(sent):
        assert responses(proxy.base_url, None, stream=bool(i % 2)).status_code == 200
        assert requests.post(proxy.base_url + "/v1/messages", headers={"Connection": "close"},
                             json={"model": CLAUDE_MODEL, "max_tokens": 100, "stream": bool(i % 2),
                                   "messages": [{"role": "user", "content": "hi"}]}, timeout=30).status_code == 200
    deadline = time.monotonic() + 10
    while True:  # a stream is counted right after its last event
        found = scrape(proxy.base_url)
        if requests_total(found, "responses", MODEL) >= sent and requests_total(found, "messages", MODEL) >= sent \
                or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert requests_total(found, "responses", MODEL) == sent
    assert requests_total(found, "messages", MODEL) == sent
    tokens = {labels: v for (name, labels), v in found.items() if name == "deepseek_proxy_tokens_total"}
    assert tokens[(("kind", "output"), ("model", MODEL))] == 2 * sent * USAGES[1]["completion_tokens"]
    assert tokens[(("kind", "input_cache_miss"), ("model", MODEL))] == 2 * sent * USAGES[1]["prompt_tokens"]


def test_limits_are_shared_by_two_instances_through_redis(start_proxy, upstream, redis_server):
    config_text = f'[store]\nurl = "{redis_server.url}"\n[limits]\nrpm = 3\n'
    first = start_proxy(upstream.base_url, config_text)
    second = start_proxy(upstream.base_url, config_text)
    upstream.script(*[Reply.text("shared") for _ in range(3)])
    assert responses(first.base_url, None).status_code == 200
    assert responses(second.base_url, None).status_code == 200
    assert responses(first.base_url, None).status_code == 200
    for server in (second, first):
        refused = responses(server.base_url, None)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert len(upstream.chat_requests) == 3


def test_the_anthropic_passthrough_is_gated_and_recorded_too(start_proxy, upstream, tmp_path):
    """`messages_upstream = "anthropic"` bypasses the translation, not the gate: its rows carry the upstream's
    Anthropic usage (input + cache reads as input tokens), streamed and not."""
    url, cli_config, config_text = store_setup(tmp_path, '[models.deepseek-v4-pro]\nmessages_upstream = "anthropic"\n'
                                                          "[models.deepseek-v4-flash]\n")
    proxy = start_proxy(upstream.base_url, config_text)
    key = add_key(cli_config, "frank", "--rpm", "2")
    upstream.script(Reply.text("streamed answer"), Reply.text("whole answer"))
    streamed = messages(proxy.base_url, key, stream=True)
    whole = messages(proxy.base_url, key)
    assert streamed.status_code == 200 and whole.status_code == 200
    refused = messages(proxy.base_url, key)
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limit_error"
    events = [line for line in streamed.text.splitlines() if line.startswith("data: ")]

    usage = {**json.loads(events[0][6:])["message"]["usage"], **json.loads(
        next(e for e in events if '"message_delta"' in e)[6:])["usage"]}
    store = open_store(StoreConfig(url=url))
    deadline = time.monotonic() + 10
    while len(rows := store.usage_rows()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(r.door, r.key_name, r.status) for r in rows] == [("messages", "frank", 200)] * 2
    assert (rows[0].input_tokens, rows[0].cached_tokens, rows[0].output_tokens) == (
        usage["input_tokens"] + usage["cache_read_input_tokens"], usage["cache_read_input_tokens"],
        usage["output_tokens"])
    assert whole.json()["usage"]["output_tokens"] == rows[1].output_tokens > 0
    assert len(upstream.anthropic_requests) == 2
