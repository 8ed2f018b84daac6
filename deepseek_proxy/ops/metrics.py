"""Prometheus metrics (prometheus-client), summed across gunicorn's worker processes.

Multi-process mode: each worker writes its samples to memory-mapped files in PROMETHEUS_MULTIPROC_DIR and a
scrape of `/metrics` (served by whichever worker gets it) reads all of them. The directory is prepared by the
gunicorn master before it forks (server.py `on_starting` → `prepare_multiprocess_dir`): a fresh one under the
state dir, or the operator's own PROMETHEUS_MULTIPROC_DIR, emptied of an earlier run's files. `child_exit` marks
a dead worker so its open-stream gauge stops counting (`livesum`). prometheus_client picks its storage when it
is first imported, so nothing imports it before the directory is set (this module imports it lazily). Without
the variable (the app under another server, tests) the metrics are this process's own.

For the relay, one object per request:

    metrics = RequestMetrics(door="responses", model=model.id, stream=True)   # counts an open stream
    metrics.first_token()                                                     # the first reply byte (once)
    metrics.finish(usage=final_usage, status=200)                             # however it ended (once)
    upstream_error(upstream="deepseek", kind="rate_limited")                  # each upstream failure
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from .usage import tokens_of

log = logging.getLogger("deepseek_proxy.metrics")

ENV = "PROMETHEUS_MULTIPROC_DIR"
NAMESPACE = "deepseek_proxy"
# Seconds. Time to first token: DeepSeek's thinking models take seconds, a queued request minutes.
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
KEY_STATES = ("ok", "cooling", "set_aside", "missing")
# Share of a request's input tokens that hit the upstream's prefix cache: a coding agent's turns mostly sit at
# 0.9-0.99 when the prefix holds; a break shows as a request near 0.
CACHE_HIT_RATIO_BUCKETS = (0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1)

_metrics: dict[str, Any] | None = None


def _build() -> dict[str, Any]:
    from prometheus_client import Counter, Gauge, Histogram

    return {
        "http": Counter(f"{NAMESPACE}_http_requests", "HTTP requests answered, by route template, method and status",
                        ["route", "method", "status"]),
        "requests": Counter(f"{NAMESPACE}_requests", "Model requests, by front door, model and final status",
                            ["door", "model", "status"]),
        "ttft": Histogram(f"{NAMESPACE}_time_to_first_token_seconds", "From the request to the first reply byte",
                          ["door", "model"], buckets=TTFT_BUCKETS),
        "duration": Histogram(f"{NAMESPACE}_request_duration_seconds", "From the request to the end of its reply",
                              ["door", "model"], buckets=DURATION_BUCKETS),
        "tokens": Counter(f"{NAMESPACE}_tokens", "Tokens, by model and kind (input_cache_hit, input_cache_miss, "
                          "output, reasoning; reasoning is part of output)", ["model", "kind"]),
        "streams": Gauge(f"{NAMESPACE}_open_streams", "Replies in progress", ["door"], multiprocess_mode="livesum"),
        "upstream_errors": Counter(f"{NAMESPACE}_upstream_errors", "Upstream failures, by upstream and error kind",
                                   ["upstream", "kind"]),
        "rate_limited": Counter(f"{NAMESPACE}_rate_limited", "Requests refused by the proxy's own limits",
                                ["scope", "limit"]),
        "cache_hit_ratio": Histogram(f"{NAMESPACE}_cache_hit_ratio", "Per request with input tokens: the share of "
                                     "them that were upstream prefix-cache hits", ["door", "model"],
                                     buckets=CACHE_HIT_RATIO_BUCKETS),
        "key_state": Gauge(f"{NAMESPACE}_upstream_key_state", "1 for each upstream key's current state (keys "
                           "masked)", ["upstream", "key", "state"], multiprocess_mode="mostrecent"),
        # prefix-break detection (ops/prefix.py): `what` is system, tools or message (never the message's number)
        "prefix_checks": Counter(f"{NAMESPACE}_prefix_checks", "Completed replies whose upstream prompt the "
                                 "prefix-break detector compared with its conversation's previous one", ["door"]),
        "prefix_breaks": Counter(f"{NAMESPACE}_prefix_breaks", "Upstream prompts that stopped continuing their "
                                 "conversation's previous prompt, by front door and where", ["door", "what"]),
        "prefix_lost_bytes": Counter(f"{NAMESPACE}_prefix_break_lost_bytes", "Bytes of earlier prompts (canonical "
                                     "JSON, ~3.5 per token) that a prefix break made the upstream read again",
                                     ["door"]),
    }


def metrics() -> dict[str, Any]:
    global _metrics
    if _metrics is None:
        _metrics = _build()
    return _metrics


class RequestMetrics:
    """One model request's metrics. `finish` counts it once, however often it is called."""

    def __init__(self, *, door: str, model: str, stream: bool = False, clock: Callable[[], float] = time.monotonic):
        self.door, self.model, self.stream = door, model, stream
        self._clock = clock
        self.started = clock()
        self.ttft: float | None = None
        self._finished = False
        if stream:
            metrics()["streams"].labels(door).inc()

    def first_token(self) -> None:
        if self.ttft is None:
            self.ttft = self._clock() - self.started
            metrics()["ttft"].labels(self.door, self.model).observe(self.ttft)

    def finish(self, *, usage: Mapping[str, Any] | None, status: int) -> None:
        if self._finished:
            return
        self._finished = True
        m = metrics()
        m["requests"].labels(self.door, self.model, str(status)).inc()
        m["duration"].labels(self.door, self.model).observe(self._clock() - self.started)
        tokens = tokens_of(usage)
        for kind, count in (("input_cache_hit", tokens.cached), ("input_cache_miss", tokens.input - tokens.cached),
                            ("output", tokens.output), ("reasoning", tokens.reasoning)):
            if count > 0:
                m["tokens"].labels(self.model, kind).inc(count)
        if tokens.input > 0:
            m["cache_hit_ratio"].labels(self.door, self.model).observe(min(tokens.cached, tokens.input) / tokens.input)
        if self.stream:
            m["streams"].labels(self.door).dec()


def upstream_error(*, upstream: str, kind: str) -> None:
    metrics()["upstream_errors"].labels(upstream, kind).inc()


def rate_limited(*, scope: str, limit: str) -> None:
    metrics()["rate_limited"].labels(scope, limit).inc()


def prefix_checked(*, door: str) -> None:
    metrics()["prefix_checks"].labels(door).inc()


def prefix_break(*, door: str, what: str, lost_bytes: int) -> None:
    m = metrics()
    m["prefix_breaks"].labels(door, what).inc()
    if lost_bytes > 0:
        m["prefix_lost_bytes"].labels(door).inc(lost_bytes)


def http_request(*, route: str, method: str, status: int) -> None:
    metrics()["http"].labels(route, method, str(status)).inc()


def set_key_states(upstream: str, described: list[dict[str, Any]]) -> None:
    """The key pool's `describe()` as gauges (set at scrape time by the worker serving /metrics)."""
    gauge = metrics()["key_state"]
    for entry in described:
        key = entry["key"] or entry["source"]
        for state in KEY_STATES:
            gauge.labels(upstream, key, state).set(1 if entry["state"] == state else 0)


def exposition() -> tuple[bytes, str]:
    """The text format for a scrape: every worker's samples in multi-process mode, else this process's."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
    )

    metrics()  # every family shows from the first scrape on, even before its first sample
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# ---- the gunicorn master's part ------------------------------------------------------------------------------

def prepare_multiprocess_dir(state_dir: Path, env: MutableMapping[str, str] | None = None) -> Path:
    """Before the workers fork: the directory their samples go to, empty. The operator's PROMETHEUS_MULTIPROC_DIR
    when set (its *.db files removed: samples of an earlier run would be added to this one's), else
    `<state dir>/metrics/<master pid>`, made fresh, after removing those of masters no longer running."""
    if env is None:
        env = os.environ
    given = env.get(ENV)
    if given:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
        return directory
    parent = state_dir / "metrics"
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for other in parent.iterdir():
        if other.name.isdigit() and not _running(int(other.name)):
            shutil.rmtree(other, ignore_errors=True)
    directory = parent / str(os.getpid())
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o700)
    env[ENV] = str(directory)
    return directory


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_exited(pid: int) -> None:
    """gunicorn's child_exit: the worker's live gauges stop counting."""
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def remove_multiprocess_dir(state_dir: Path) -> None:
    """gunicorn's on_exit: remove the directory prepare_multiprocess_dir made (never the operator's own)."""
    directory = os.environ.get(ENV)
    if directory and Path(directory).parent == state_dir / "metrics":
        shutil.rmtree(directory, ignore_errors=True)
