"""The real server (gunicorn + gevent) against a fake DeepSeek that speaks HTTPS, as the real one does.

The proxy trusts the fake's throw-away certificate through REQUESTS_CA_BUNDLE (how a private CA is named).
"""

from __future__ import annotations

import time

import openai
import pytest
import requests

from tests.fakes.fake_deepseek import Reply

MODEL = "deepseek-v4-pro"


@pytest.fixture()
def tls_proxy(start_proxy, tls_upstream, tls_cert):
    """A proxy pointed at the HTTPS fake, trusting its certificate."""
    return start_proxy(tls_upstream.base_url, extra_env={"REQUESTS_CA_BUNDLE": tls_cert[0]})


def test_streamed_reply_with_a_late_first_token(tls_proxy, tls_upstream):
    """The upstream's headers come alone and the first token 0.5 s later: the case that once broke over TLS."""
    tls_upstream.script(Reply.text("Hello over TLS.", reasoning="Think first.", ttft=0.5, delay=0.02),
                        Reply.text("Second turn.", reasoning=None))
    client = openai.OpenAI(base_url=tls_proxy.base_url + "/v1", api_key="unused", max_retries=0)
    started = time.monotonic()
    events = list(client.responses.create(model=MODEL, input="hi", stream=True))
    elapsed = time.monotonic() - started

    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed", types
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hello over TLS."
    assert "".join(e.delta for e in events if e.type == "response.reasoning_text.delta") == "Think first."
    assert events[-1].response.output_text == "Hello over TLS."
    assert elapsed >= 0.5, "the reply cannot have come before the upstream's first token"

    # The pooled TLS connection is still good for the next request (and it is the same connection).
    again = list(client.responses.create(model=MODEL, input="again", stream=True))
    assert again[-1].type == "response.completed" and again[-1].response.output_text == "Second turn."
    ports = [r.client_port for r in tls_upstream.chat_requests]
    assert len(ports) == 2 and ports[0] == ports[1], f"the upstream TLS connection was not reused: {ports}"
    assert tls_upstream.rejections == []


def test_non_streamed_reply(tls_proxy, tls_upstream):
    tls_upstream.script(Reply.text("Forty-two.", ttft=0.3))
    client = openai.OpenAI(base_url=tls_proxy.base_url + "/v1", api_key="unused", max_retries=0)
    result = client.responses.create(model=MODEL, input="answer", instructions="Be brief.")
    assert result.status == "completed"
    assert result.output_text == "Forty-two."
    assert tls_upstream.chat_requests[-1].body["stream"] is False


def test_untrusted_certificate_is_a_502_in_openai_format(start_proxy, tls_upstream):
    """Without the CA bundle the proxy cannot verify the upstream: the client gets an OpenAI-shaped 502."""
    untrusting = start_proxy(tls_upstream.base_url)
    response = requests.post(untrusting.base_url + "/v1/responses", json={"model": MODEL, "input": "hi", "stream": True},
                             timeout=30)
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["type"] == "server_error"
    assert error["code"] == "upstream_tls_error"
    assert "TLS certificate could not be verified" in error["message"] and "REQUESTS_CA_BUNDLE" in error["message"]
    assert tls_upstream.chat_requests == [], "no request may pass an unverified TLS connection"
    assert "TLS certificate not verified" in untrusting.log(), "the operator's log names the TLS failure"

    client = openai.OpenAI(base_url=untrusting.base_url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        client.responses.create(model=MODEL, input="hi")
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_tls_error"
