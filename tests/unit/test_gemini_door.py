"""The Gemini door's own pieces: request validation, the error-kind mapping, the JSON-array stream form."""

from __future__ import annotations

import json

import pytest

from deepseek_proxy.core.errors import ErrorKind, ProxyError
from deepseek_proxy.frontdoors.gemini import GeminiDoorStream, gemini_kind
from deepseek_proxy.frontdoors.gemini_validation import validate_gemini_request
from deepseek_proxy.translate.errors import RequestError
from deepseek_proxy.translate.gemini_errors import KINDS
from deepseek_proxy.translate.reasoning import ReasoningCodec
from deepseek_proxy.translate.tools import ToolMap

USER = {"role": "user", "parts": [{"text": "hi"}]}


@pytest.mark.parametrize("body, field", [
    ({"contents": []}, "contents"),
    ({"contents": [{"parts": [{"text": 1}]}]}, "contents[0].parts[0].text"),
    ({"contents": [{"parts": [{"thought": "yes"}]}]}, "contents[0].parts[0].thought"),
    ({"contents": [{"role": "model", "parts": [{"functionCall": {"name": "f", "args": [1]}}]}]},
     "contents[0].parts[0].functionCall.args"),
    ({"contents": [{"parts": [{"functionResponse": {"name": "f", "response": "text"}}]}]},
     "contents[0].parts[0].functionResponse.response"),
    ({"contents": [USER], "generationConfig": {"temperature": 3}}, "generationConfig.temperature"),
    ({"contents": [USER], "generationConfig": {"topK": 1.5}}, "generationConfig.topK"),
    ({"contents": [USER], "generation_config": {"max_output_tokens": 0}}, "generation_config.max_output_tokens"),
    ({"contents": [USER], "generationConfig": {"stopSequences": ["a"] * 6}}, "generationConfig.stopSequences"),
    ({"contents": [USER], "safetySettings": {}}, "safetySettings"),
    ({"contents": [USER], "cachedContent": "cachedContents/x"}, "cachedContent"),
])
def test_validation_names_the_field(body, field):
    with pytest.raises(RequestError) as caught:
        validate_gemini_request(body)
    assert caught.value.param == field and field in caught.value.message


def test_validation_accepts_every_captured_gemini_cli_request():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "fixtures" / "gemini-cli"
    captured = [json.loads(p.read_text()) for p in folder.glob("*.json") if not p.name.startswith(("index",
                                                                                                  "response_"))]
    assert len(captured) >= 5
    for request in captured:
        validate_gemini_request(request["body"])


def test_validation_refuses_absurd_nesting():
    deep: dict = {}
    node = deep
    for _ in range(100):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(RequestError, match="nested"):
        validate_gemini_request({"contents": [{"parts": [{"functionCall": {"name": "f", "args": deep}}]}]})


def test_every_error_kind_has_a_google_status():
    for kind in ErrorKind:
        assert gemini_kind(ProxyError(kind, "m")) in KINDS
    assert gemini_kind(ProxyError(ErrorKind.INSUFFICIENT_BALANCE, "m")) == "billing"  # 402: not retried
    assert gemini_kind(ProxyError(ErrorKind.UPSTREAM_UNAVAILABLE, "m")) == "api_error"  # 500: retried


def door(sse: bool) -> GeminiDoorStream:
    return GeminiDoorStream(model="gemini-x", tool_map=ToolMap(), codec=ReasoningCodec(b"k" * 32), sse=sse)


def chunk(text: str) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


def test_json_array_form_is_one_valid_array_also_when_it_fails():
    stream = door(sse=False)
    out = stream.encode(stream.start()) + stream.encode(stream.feed(chunk("a"))) + stream.encode(
        stream.feed(chunk("b"))) + stream.encode(stream.fail(ProxyError(ErrorKind.UPSTREAM_UNAVAILABLE, "cut")))
    objects = json.loads(out)
    assert objects[-1] == {"error": {"code": 500, "message": "cut", "status": "INTERNAL", "details": []}}
    assert objects[0]["candidates"][0]["content"]["parts"] == [{"text": "a"}]

    stream = door(sse=False)
    out = stream.encode(stream.feed(chunk("a"))) + stream.encode(stream.finish())
    assert json.loads(out)[-1]["candidates"][0]["finishReason"] == "STOP"


def test_sse_failure_is_the_bare_error_object_on_its_own():
    stream = door(sse=True)
    stream.feed(chunk("a"))
    written = stream.encode(stream.fail(ProxyError(ErrorKind.RATE_LIMITED, "slow down")))
    assert not written.startswith(b"data:")
    assert json.loads(written)["error"]["status"] == "RESOURCE_EXHAUSTED"


# ---- relay's failure_settle hook (the error object in a network read of its own) ----------------------------------

class _Events:
    def __init__(self, *events):
        self.events = list(events)

    def __iter__(self):
        return iter(self.events)

    def close(self):
        pass


def test_relay_settles_before_a_failure_that_follows_data(monkeypatch):
    from deepseek_proxy.frontdoors import relay as relay_module
    from deepseek_proxy.upstream.chat import Failure

    waits: list[float] = []
    monkeypatch.setattr(relay_module, "_settle", waits.append)
    failure = Failure(ProxyError(ErrorKind.UPSTREAM_UNAVAILABLE, "cut"))
    frames = list(relay_module.relay(_Events((c for c in [chunk("a"), chunk("b")]), failure), door(sse=True)))
    assert waits == [0.2]
    assert json.loads(frames[-1])["error"]["message"] == "cut"  # the failure is a write of its own
    assert frames[-2].startswith(b"data: ")

    waits.clear()  # nothing written yet: nothing to keep apart from, no wait
    list(relay_module.relay(_Events(failure), door(sse=True)))
    assert waits == []


def test_relay_does_not_settle_for_doors_without_the_hook(monkeypatch):
    from deepseek_proxy.frontdoors import relay as relay_module
    from deepseek_proxy.frontdoors.responses import ResponsesDoorStream
    from deepseek_proxy.upstream.chat import Failure

    waits: list[float] = []
    monkeypatch.setattr(relay_module, "_settle", waits.append)
    responses_door = ResponsesDoorStream(model="m", tool_map=ToolMap(), codec=ReasoningCodec(b"k"))
    list(relay_module.relay(_Events((c for c in [chunk("a")]), Failure(ProxyError(ErrorKind.TIMEOUT, "t"))),
                            responses_door))
    assert waits == []


# ---- the door's own error handler ---------------------------------------------------------------------------------

@pytest.fixture()
def app_client():
    import os

    from deepseek_proxy.app import create_app
    from deepseek_proxy.config import load_config

    env = {"DEEPSEEK_API_KEY": "sk-x"}
    return create_app(load_config(os.devnull, env=env), env=env).test_client()


def test_anything_escaping_the_door_is_googles_format_with_the_request_id(app_client, monkeypatch):
    from deepseek_proxy.frontdoors import gemini

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(gemini, "translate_gemini_request", broken)
    response = app_client.post("/v1beta/models/gemini-2.5-pro:generateContent", json={"contents": [USER]})
    error = response.get_json()["error"]
    assert response.status_code == 500 and error["status"] == "INTERNAL"
    assert response.headers["x-request-id"] in error["message"] and "a bug" not in error["message"]

    def too_deep(*args, **kwargs):
        raise RecursionError()

    monkeypatch.setattr(gemini, "translate_gemini_request", too_deep)
    response = app_client.post("/v1beta/models/gemini-2.5-pro:generateContent", json={"contents": [USER]})
    assert response.status_code == 400 and response.get_json()["error"]["status"] == "INVALID_ARGUMENT"


def test_routing_splits_on_the_last_colon(app_client):
    ok = app_client.post("/v1beta/models/models/gemini-2.5-pro:countTokens", json={"contents": [USER]})
    assert ok.status_code == 200 and ok.get_json()["totalTokens"] > 0
    assert app_client.post("/v1/models/deepseek-v4-pro:countTokens", json={"contents": [USER]}).status_code == 200
    unknown = app_client.post("/v1beta/models/gemini-2.5-pro:embedContent", json={})
    assert unknown.status_code == 404 and unknown.get_json()["error"]["status"] == "NOT_FOUND"
    bad_alt = app_client.post("/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=proto", json={})
    assert bad_alt.status_code == 400
