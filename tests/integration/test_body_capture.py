"""The opt-in body capture on the real server: off by default (nothing written); on, each request's body and its
reply (blocking, and streamed as it left) land in the capture directory, redacted, cut at the size cap, 0600."""

from __future__ import annotations

import json
import stat
import time

import requests

from tests.fakes.fake_deepseek import Reply

MODEL = "deepseek-v4-pro"
SECRET = "sk-" + "abcdefghijklmnopqrstuvwxyz0123456789"  # built, so no scanner takes it for a real key


def _files(directory):
    return sorted(p.name for p in directory.glob("*.json")) if directory.exists() else []


def test_bodies_are_captured_redacted_only_when_asked(start_proxy, upstream, tmp_path):
    captures = tmp_path / "captures"
    off = start_proxy(upstream.base_url, f'[logs]\ncapture_dir = "{captures}"\n')
    upstream.script(Reply.text("not kept"))
    assert requests.post(off.base_url + "/v1/responses", json={"model": MODEL, "input": "hi"}, timeout=30).ok
    assert _files(captures) == [], "the capture is off by default"

    on = start_proxy(upstream.base_url, f'[logs]\ncapture_bodies = true\ncapture_dir = "{captures}"\n'
                                        "capture_max_kb = 4\n")
    upstream.script(Reply.text("Hello there"), Reply.text("streamed " * 800))
    blocking = requests.post(on.base_url + "/v1/responses", timeout=30,
                             json={"model": MODEL, "input": f"my key is {SECRET}"})
    assert blocking.ok
    with requests.post(on.base_url + "/v1/responses", timeout=30, stream=True,
                       json={"model": MODEL, "input": "stream it", "stream": True}) as streamed:
        body = b"".join(streamed.iter_content(None))
    assert b"response.completed" in body

    first, second = blocking.headers["x-request-id"], streamed.headers["x-request-id"]
    # A streamed reply is written once the server has closed its stream, which can be just after the client has
    # read the last byte.
    deadline = time.monotonic() + 5
    while f"{second}.response.json" not in _files(captures) and time.monotonic() < deadline:
        time.sleep(0.05)
    names = _files(captures)
    assert f"{first}.request.json" in names and f"{first}.response.json" in names, names
    assert f"{second}.request.json" in names and f"{second}.response.json" in names, names
    request_text = (captures / f"{first}.request.json").read_text()
    assert SECRET not in request_text and "my key is" in request_text  # redacted, not dropped
    kept = json.loads((captures / f"{first}.response.json").read_text())
    assert [item["content"][0]["text"] for item in kept["output"] if item["type"] == "message"] == ["Hello there"]
    streamed_text = (captures / f"{second}.response.json").read_text()
    assert "response.created" in streamed_text
    assert len(streamed_text.encode()) < 4 * 1024 + 200, "cut at capture_max_kb"
    assert stat.S_IMODE((captures / f"{first}.request.json").stat().st_mode) == 0o600
