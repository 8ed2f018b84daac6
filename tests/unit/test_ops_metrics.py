"""Metrics (deepseek_proxy/ops/metrics.py): what RequestMetrics counts, the text format as prometheus_client's own
parser reads it, and the multi-process mode (separate processes' samples summed; a dead worker's open streams
no longer counted once child_exit has marked it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from prometheus_client.parser import text_string_to_metric_families

from deepseek_proxy.ops import metrics as ops_metrics
from deepseek_proxy.ops.metrics import RequestMetrics, prepare_multiprocess_dir

USAGE = {"prompt_tokens": 1200, "completion_tokens": 300, "prompt_cache_hit_tokens": 1000,
         "completion_tokens_details": {"reasoning_tokens": 120}}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape() -> dict[tuple[str, tuple], float]:
    body, content_type = ops_metrics.exposition()
    assert content_type.startswith("text/plain")
    return samples(body.decode())


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_request_counts_status_tokens_ttft_duration_and_its_open_stream():
    before = scrape()
    clock = Clock()
    request = RequestMetrics(door="responses", model="m-test-1", stream=True, clock=clock)
    during = scrape()
    assert value(during, "deepseek_proxy_open_streams", door="responses") == \
        value(before, "deepseek_proxy_open_streams", door="responses") + 1
    clock.now += 0.2
    request.first_token()
    request.first_token()  # once only
    clock.now += 3.0
    request.finish(usage=USAGE, status=200)
    request.finish(usage=USAGE, status=200)  # once only
    after = scrape()
    assert value(after, "deepseek_proxy_requests_total", door="responses", model="m-test-1", status="200") == 1
    assert value(after, "deepseek_proxy_open_streams", door="responses") == \
        value(before, "deepseek_proxy_open_streams", door="responses")
    tokens = {kind: value(after, "deepseek_proxy_tokens_total", model="m-test-1", kind=kind)
              for kind in ("input_cache_hit", "input_cache_miss", "output", "reasoning")}
    assert tokens == {"input_cache_hit": 1000, "input_cache_miss": 200, "output": 300, "reasoning": 120}
    assert value(after, "deepseek_proxy_time_to_first_token_seconds_count", door="responses", model="m-test-1") == 1
    assert value(after, "deepseek_proxy_time_to_first_token_seconds_bucket", door="responses", model="m-test-1",
                 le="0.25") == 1
    assert value(after, "deepseek_proxy_time_to_first_token_seconds_bucket", door="responses", model="m-test-1",
                 le="0.1") == 0
    assert value(after, "deepseek_proxy_request_duration_seconds_sum", door="responses",
                 model="m-test-1") == pytest.approx(3.2)


def test_upstream_errors_rate_limits_and_key_states():
    ops_metrics.upstream_error(upstream="deepseek", kind="rate_limited")
    ops_metrics.rate_limited(scope="key", limit="rpm")
    ops_metrics.set_key_states("deepseek", [{"source": "env:A", "key": "sk-…1234", "state": "cooling"},
                                            {"source": "env:B", "key": None, "state": "missing"}])
    found = scrape()
    assert value(found, "deepseek_proxy_upstream_errors_total", upstream="deepseek", kind="rate_limited") >= 1
    assert value(found, "deepseek_proxy_rate_limited_total", scope="key", limit="rpm") >= 1
    assert value(found, "deepseek_proxy_upstream_key_state", upstream="deepseek", key="sk-…1234", state="cooling") == 1
    assert value(found, "deepseek_proxy_upstream_key_state", upstream="deepseek", key="sk-…1234", state="ok") == 0
    assert value(found, "deepseek_proxy_upstream_key_state", upstream="deepseek", key="env:B", state="missing") == 1


def test_the_directory_is_made_fresh_and_stale_ones_go(tmp_path):
    env: dict[str, str] = {}
    stale = tmp_path / "metrics" / "999999999"  # no such process
    stale.mkdir(parents=True)
    (stale / "counter_1.db").write_bytes(b"old")
    directory = prepare_multiprocess_dir(tmp_path, env)
    assert directory == tmp_path / "metrics" / str(os.getpid()) and env["PROMETHEUS_MULTIPROC_DIR"] == str(directory)
    assert not stale.exists() and list(directory.iterdir()) == []
    own = tmp_path / "mine"
    own.mkdir()
    (own / "counter_5.db").write_bytes(b"old")
    (own / "notes.txt").write_text("kept")
    assert prepare_multiprocess_dir(tmp_path, {"PROMETHEUS_MULTIPROC_DIR": str(own)}) == own
    assert [p.name for p in own.iterdir()] == ["notes.txt"]  # only the samples of an earlier run go


WORKER = textwrap.dedent("""
    import sys
    from deepseek_proxy.ops.metrics import RequestMetrics
    RequestMetrics(door="responses", model="m", stream=False).finish(usage={"prompt_tokens": 5}, status=200)
    if sys.argv[1] == "open":
        RequestMetrics(door="responses", model="m", stream=True)  # a stream still open when the process dies
""")
COLLECT = textwrap.dedent("""
    import sys
    from deepseek_proxy.ops import metrics
    for pid in sys.argv[1:]:
        metrics.worker_exited(int(pid))
    sys.stdout.write(metrics.exposition()[0].decode())
""")


def test_multiprocess_mode_sums_the_workers_and_forgets_a_dead_ones_streams(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for mode in ("closed", "open"):  # two worker processes, one after the other, both gone now
        subprocess.run([sys.executable, "-c", WORKER, mode], env=env, check=True, capture_output=True)
    files = sorted(p.name for p in tmp_path.iterdir())
    gauge_pids = [name.split("_")[-1].removesuffix(".db") for name in files if name.startswith("gauge_livesum")]
    assert len(gauge_pids) == 1, files  # the one with the open stream: its pid names its gauge file
    alive = samples(subprocess.run([sys.executable, "-c", COLLECT], env=env, check=True, capture_output=True,
                                   text=True).stdout)
    assert value(alive, "deepseek_proxy_requests_total", door="responses", model="m", status="200") == 2
    assert value(alive, "deepseek_proxy_tokens_total", model="m", kind="input_cache_miss") == 10
    assert value(alive, "deepseek_proxy_open_streams", door="responses") == 1  # not yet marked dead
    marked = samples(subprocess.run([sys.executable, "-c", COLLECT, gauge_pids[0]], env=env, check=True,
                                    capture_output=True, text=True).stdout)
    assert value(marked, "deepseek_proxy_open_streams", door="responses") == 0
    assert value(marked, "deepseek_proxy_requests_total", door="responses", model="m", status="200") == 2


def test_each_request_with_input_observes_its_cache_hit_ratio():
    before = scrape()
    RequestMetrics(door="messages", model="m-ratio", stream=False).finish(usage=USAGE, status=200)  # 1000 / 1200
    RequestMetrics(door="messages", model="m-ratio").finish(usage={"prompt_tokens": 640, "completion_tokens": 1},
                                                           status=200)  # no hit: 0
    RequestMetrics(door="messages", model="m-ratio").finish(usage=None, status=502)  # no input: not observed
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, door="messages", model="m-ratio", **labels) - \
            value(before, name, door="messages", model="m-ratio", **labels)

    assert delta("deepseek_proxy_cache_hit_ratio_count") == 2
    assert delta("deepseek_proxy_cache_hit_ratio_sum") == pytest.approx(1000 / 1200)
    buckets = {le: delta("deepseek_proxy_cache_hit_ratio_bucket", le=le)
               for le in ("0.0", "0.1", "0.75", "0.9", "1.0", "+Inf")}
    assert buckets == {"0.0": 1, "0.1": 1, "0.75": 1, "0.9": 2, "1.0": 2, "+Inf": 2}
