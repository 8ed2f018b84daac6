"""The validation layer on the real server: each bad request of issue 9 is a 400 in OpenAI's error format that
names the parameter, and never reaches (or bills) the upstream."""

from __future__ import annotations

import pytest
import requests

from tests.fakes.fake_deepseek import Reply

MODEL = "deepseek-v4-pro"


def deep(depth: int) -> dict:
    value: dict = {"leaf": "x"}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("extra, param", [
    ({"stream": "false"}, "stream"),  # used to stream
    ({"temperature": -3}, "temperature"),
    ({"top_p": 7}, "top_p"),
    ({"tools": [{"type": "function", "name": "f", "parameters": "notaschema"}]}, "tools[0].parameters"),
    ({"metadata": deep(300)}, "metadata"),  # used to 500 after the upstream was called
    ({"metadata": deep(500), "stream": True}, "metadata"),  # used to answer text/plain Internal Server Error
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": 5}]}]}, "input[0].content[0].text"),
])
def test_bad_values_are_400s_that_never_reach_the_upstream(proxy, upstream, extra, param):
    upstream.script(Reply.text("should not be sent"))
    response = requests.post(proxy.base_url + "/v1/responses", json={"model": MODEL, "input": "hi", **extra},
                             timeout=30)
    assert response.status_code == 400, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert param in error["message"]
    assert upstream.chat_requests == [], "a bad request never reaches the upstream"


def test_legal_edge_values_are_served(proxy, upstream):
    upstream.script(Reply.text("fine"))
    response = requests.post(proxy.base_url + "/v1/responses", json={
        "model": MODEL, "input": "hi", "stream": False, "temperature": 2, "top_p": 0,
        "metadata": {f"k{i}": "v" * 512 for i in range(16)}}, timeout=30)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["metadata"]["k15"] == "v" * 512
    assert len(upstream.chat_requests) == 1
