"""Request logs (deepseek_proxy/ops/logs.py): one JSON line per request with known fields only and secrets
redacted; the opt-in body capture is redacted, size-capped, private and bounded in count."""

from __future__ import annotations

import json
import logging
import stat

import pytest

from deepseek_proxy.ops.logs import (
    BodyCapture,
    redact_json,
    request_fields,
    request_log,
)

SECRET = "sk-" + "0123456789abcdef" * 2  # built, so no scanner takes it for a real key


def test_one_json_line_with_the_fields_and_tokens(caplog):
    caplog.set_level(logging.INFO, logger="deepseek_proxy.access")
    request_log(request_id="req_abc", method="POST", path="/v1/responses", door="responses", status=200, key="alice",
                model="deepseek-v4-pro", upstream="deepseek", stream=True, duration_ms=812.456, ttft_ms=95.04,
                outcome="completed", usage={"prompt_tokens": 10, "completion_tokens": 3, "prompt_cache_hit_tokens": 8})
    [record] = [r for r in caplog.records if r.name == "deepseek_proxy.access"]
    line = record.getMessage()
    assert "\n" not in line
    data = json.loads(line)
    assert data["request_id"] == "req_abc" and data["key"] == "alice" and data["status"] == 200
    assert data["duration_ms"] == 812.5 and data["stream"] is True
    assert (data["input_tokens"], data["cached_tokens"], data["output_tokens"]) == (10, 8, 3)
    assert "ts" in data and "ttft_ms" in data


def test_a_body_or_header_cannot_be_logged_by_mistake():
    with pytest.raises(TypeError, match="body"):
        request_fields(request_id="r", body="{...}")
    with pytest.raises(TypeError, match="authorization"):
        request_fields(request_id="r", authorization="Bearer x")


def test_secret_looking_values_are_redacted():
    line = request_fields(request_id="r", outcome=f"upstream said: invalid key {SECRET}",
                          user_agent="curl Bearer abc.def.ghi", key="alice")
    text = json.dumps(line)
    assert SECRET not in text and "abc.def.ghi" not in text and text.count("[redacted]") == 2
    assert line["key"] == "alice"


def test_redact_json_hides_secret_fields_and_strings():
    body = {"model": "m", "max_output_tokens": 5, "api_key": SECRET, "headers": {"Authorization": "Bearer zzz"},
            "input": [{"content": f"my key is {SECRET}"}], "password": "", "token": "t0k"}
    redacted = redact_json(body)
    assert redacted["api_key"] == "[redacted]" and redacted["headers"]["Authorization"] == "[redacted]"
    assert redacted["input"][0]["content"] == "my key is [redacted]" and redacted["token"] == "[redacted]"
    assert redacted["max_output_tokens"] == 5 and redacted["password"] == ""  # nothing there to hide


def test_capture_is_off_by_default_in_effect(tmp_path):
    capture = BodyCapture(tmp_path / "captures", max_bytes=1024, enabled=False)
    assert capture.capture("req_1", "request", b'{"a": 1}') is None
    assert not (tmp_path / "captures").exists()


def test_capture_writes_private_redacted_capped_files(tmp_path):
    capture = BodyCapture(tmp_path / "captures", max_bytes=200)
    path = capture.capture("req_1", "request", json.dumps({"api_key": SECRET, "input": "x" * 1000}).encode())
    assert path == tmp_path / "captures" / "req_1.request.json"
    text = path.read_text()
    assert SECRET not in text and "[redacted]" in text and "cut at 200 bytes" in text
    assert len(text) < 300
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    stream = capture.capture("req_1", "response", f"data: {{\"x\": \"{SECRET}\"}}\n\n".encode())
    assert SECRET not in stream.read_text()
    assert capture.capture("../../etc/passwd", "request", b"{}").parent == tmp_path / "captures"


def test_capture_keeps_a_bounded_number_of_files(tmp_path):
    capture = BodyCapture(tmp_path, max_bytes=100, max_files=5)
    for n in range(52):
        capture.capture(f"req_{n}", "request", b"{}")
    assert len(list(tmp_path.glob("*.json"))) <= 5 + 50  # pruned every 50 writes, down to max_files
    assert not (tmp_path / "req_0.request.json").exists()
