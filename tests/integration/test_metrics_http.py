"""GET /metrics on the real server (gunicorn + gevent, 2 workers): its text parses with prometheus_client's parser,
its counters sum both workers and match the requests sent; it asks for a client key when the proxy has keys; a key
revoked with `deepseek-proxy keys revoke` is refused by every worker once the 1 s cache has passed. The door-level
counters (requests by door/model/status, tokens) are wired into the relay after its merge."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from deepseek_proxy.cli import main as cli_main


def scrape(base_url: str, key: str | None = None) -> dict[tuple[str, tuple], float]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    reply = requests.get(base_url + "/metrics", headers=headers, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def count(found: dict, route: str, status: str = "200") -> float:
    labels = tuple(sorted({"route": route, "method": "GET", "status": status}.items()))
    return found.get(("deepseek_proxy_http_requests_total", labels), 0.0)


def metrics_dir(tmp: Path) -> Path:
    [directory] = list((tmp / "state" / "deepseek-proxy" / "metrics").iterdir())
    return directory


def test_metrics_sum_both_workers_and_match_the_requests_sent(start_proxy, upstream, tmp_path):
    proxy = start_proxy(upstream.base_url, workers=2)
    directory = metrics_dir(tmp_path)
    assert directory.name.isdigit()  # <state dir>/metrics/<master pid>, made by `serve`
    before = scrape(proxy.base_url)
    sent = {"/healthz": 0, "/v1/models": 0}

    def get(path: str) -> int:
        # A connection of its own each time, so the two workers' accept loops share the requests.
        return requests.get(proxy.base_url + path, headers={"Connection": "close"}, timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            paths = ["/healthz", "/v1/models"] * 10
            assert list(pool.map(get, paths)) == [200] * len(paths)
            for path in paths:
                sent[path] += 1
            served_by = {re.sub(r"\D", "", p.name) for p in directory.glob("counter_*.db")}
            if len(served_by) >= 2:
                break
    assert len(served_by) >= 2, "only one worker served requests"
    after = scrape(proxy.base_url)
    assert count(after, "/healthz") - count(before, "/healthz") == sent["/healthz"]
    assert count(after, "/v1/models") - count(before, "/v1/models") == sent["/v1/models"]
    assert count(after, "/metrics") >= 1  # the first scrape, counted once it was answered
    families = {family.name for family in text_string_to_metric_families(
        requests.get(proxy.base_url + "/metrics", timeout=10).text)}
    # In multi-process mode a family shows once some worker has a sample of it (the model-level ones come with
    # the relay's wiring); these two have theirs.
    assert {"deepseek_proxy_http_requests", "deepseek_proxy_upstream_key_state"} <= families
    key_states = {labels: v for (name, labels), v in after.items() if name == "deepseek_proxy_upstream_key_state"}
    assert key_states[(("key", "sk-…seek"), ("state", "ok"), ("upstream", "deepseek"))] == 1
    proxy.stop()
    assert not directory.exists()  # removed at the end of the run


def test_metrics_ask_for_a_key_and_a_revoked_key_is_refused(start_proxy, upstream, tmp_path):
    store_url = f"sqlite:///{tmp_path}/shared-store.db"
    config_text = f'[server]\nclient_keys = ["config-key-1"]\n[store]\nurl = "{store_url}"\n'
    proxy = start_proxy(upstream.base_url, config_text, workers=2)
    assert requests.get(proxy.base_url + "/metrics", timeout=10).status_code == 401
    assert requests.get(proxy.base_url + "/metrics", headers={"Authorization": "Bearer nope"},
                        timeout=10).status_code == 401
    scrape(proxy.base_url, "config-key-1")

    cli_config = tmp_path / "cli.toml"
    cli_config.write_text(f'[store]\nurl = "{store_url}"\n')
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["--config", str(cli_config), "keys", "add", "alice"]) == 0
    [key] = re.findall(r"dsp-\S+", out.getvalue())
    for _ in range(6):  # both workers know it
        scrape(proxy.base_url, key)
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli_main(["--config", str(cli_config), "keys", "revoke", "alice"]) == 0
    time.sleep(1.1)  # the authenticator's cache of a key's record is at most 1 s old
    statuses = [requests.get(proxy.base_url + "/metrics", headers={"Authorization": f"Bearer {key}",
                                                                   "Connection": "close"}, timeout=10)
                for _ in range(10)]
    assert [r.status_code for r in statuses] == [401] * 10
    assert "revoked" in statuses[0].json()["error"]["message"]
    assert key not in proxy.log()
