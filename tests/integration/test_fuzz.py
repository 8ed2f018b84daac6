"""An HTTP fuzz of the running server from the OpenAPI document it serves (schemathesis generates the requests,
valid and invalid ones): no reply is a 500, none hangs, and the worker is alive afterwards.

Bounded: a fixed number of examples per operation and mode, each request with its own time limit; on 2 shared
cores the whole run takes a minute or two. The summary line (requests tried, statuses seen) is printed in the
run's terminal summary, so it shows in CI's log.
"""

from __future__ import annotations

import collections
import time

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import FAKE_KEY, ProxyProcess
from tests.fakes.fake_deepseek import FakeDeepSeek

EXAMPLES = {"POST /v1/responses": 300, "POST /v1/chat/completions": 150}  # per generation mode; the rest get DEFAULT_EXAMPLES
DEFAULT_EXAMPLES = 25
REQUEST_TIMEOUT = 15.0  # seconds without a byte, or in all, before a request counts as hung


@pytest.fixture(scope="module")
def fuzzed_proxy(tmp_path_factory):
    """A proxy and a fake DeepSeek of their own: the fuzz must not disturb (or be disturbed by) other tests."""
    with FakeDeepSeek(api_key=FAKE_KEY) as fake:
        server = ProxyProcess(tmp_path_factory.mktemp("fuzz"), upstream_url=fake.base_url)
        try:
            yield server
        finally:
            server.stop()


def test_fuzz_from_the_served_openapi_document(fuzzed_proxy, summary_lines):
    base_url = fuzzed_proxy.base_url
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    statuses: collections.Counter = collections.Counter()
    by_operation: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures: list[str] = []
    slowest = 0.0
    session = requests.Session()

    def call(case, label: str) -> None:
        nonlocal slowest
        started = time.monotonic()
        try:
            response = case.call(base_url=base_url, session=session, timeout=REQUEST_TIMEOUT)
        except requests.Timeout:
            statuses["hang"] += 1
            failures.append(f"{label}: no answer within {REQUEST_TIMEOUT}s: {case.body!r:.300}")
            return
        elapsed = time.monotonic() - started
        slowest = max(slowest, elapsed)
        statuses[response.status_code] += 1
        by_operation[label][response.status_code] += 1
        if response.status_code == 500 or elapsed > REQUEST_TIMEOUT:
            failures.append(f"{label}: {response.status_code} after {elapsed:.1f}s for {case.body!r:.300}: "
                            f"{response.text[:300]}")

    def fuzz_operation(strategy, label: str, examples: int) -> None:
        # derandomize: the same requests every run, so a count asserted below cannot pass one run and fail the next.
        @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate], derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def fuzz(case) -> None:
            call(case, label)

        fuzz()

    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/responses", "POST /v1/chat/completions", "GET /v1/models", "GET /v1/models/{model_id}",
                                               "GET /healthz", "GET /readyz", "GET /v1/codex/models.json"}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)
            try:
                fuzz_operation(strategy, f"{operation.label} ({mode.value})",
                               EXAMPLES.get(operation.label, DEFAULT_EXAMPLES))
            except Unsatisfiable:
                pass  # nothing invalid can be made for this operation (no parameters, no body)
    took = time.monotonic() - started

    alive = requests.get(base_url + "/healthz", timeout=10)
    tried = sum(statuses.values())
    seen = ", ".join(f"{status}×{count}" for status, count in sorted(statuses.items(), key=lambda kv: str(kv[0])))
    summary_lines.append(f"HTTP fuzz (schemathesis, /openapi.json): {tried} requests in {took:.0f}s; statuses: {seen}; "
                         f"500s: {statuses[500]}; hangs: {statuses['hang']}; slowest {slowest:.1f}s; "
                         f"healthz afterwards: {alive.status_code}")
    assert tried >= 300, "the fuzz ran far fewer requests than planned"
    responses_ok = by_operation["POST /v1/responses (positive)"][200]
    assert responses_ok >= 10, f"few generated requests got through to a reply: {dict(by_operation)}"

    assert failures == [], "\n".join(failures[:10])
    assert alive.status_code == 200
    assert fuzzed_proxy.process.poll() is None, "the server is still running"
