"""The upstream client with `responses` mocks: error mapping, retry-after, key handling, proxy settings."""

from __future__ import annotations

import socket
import threading

import pytest
import requests
import responses

from deepseek_proxy.config import UpstreamConfig
from deepseek_proxy.core.errors import ErrorKind
from deepseek_proxy.frontdoors.common import openai_type_and_code
from deepseek_proxy.upstream.client import UpstreamClient, UpstreamError

BASE = "https://api.deepseek.test"


def client(**overrides) -> UpstreamClient:
    config = UpstreamConfig(**{"name": "deepseek", "base_url": BASE, "api_key": "env:K", **overrides})
    return UpstreamClient(config, env={"K": "sk-test-key"}, retry_after=3)


def error_body(message, code="invalid_request_error"):
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


@responses.activate
@pytest.mark.parametrize("status, message, code, kind, want", [
    (402, "Insufficient Balance", "invalid_request_error", ErrorKind.INSUFFICIENT_BALANCE, "insufficient_quota"),
    (400, "This model's maximum context length is 1048576 tokens. However, you requested 2000000 tokens "
          "(2000000 in the messages, 0 in the completion).", "invalid_request_error", ErrorKind.CONTEXT_OVERFLOW,
     "context_length_exceeded"),
    (401, "Authentication Fails, Your api key: ****5678 is invalid", "invalid_request_error",
     ErrorKind.AUTHENTICATION, "invalid_api_key"),
    (422, "Failed to deserialize the JSON body", "invalid_request_error", ErrorKind.INVALID_REQUEST,
     "invalid_request_error"),
    (500, "Internal Server Error", None, ErrorKind.SERVER_ERROR, "server_error"),
    (503, "Server overloaded", None, ErrorKind.OVERLOADED, "server_is_overloaded"),
])
def test_errors_keep_status_and_message_and_get_a_neutral_kind(status, message, code, kind, want):
    responses.post(f"{BASE}/chat/completions", json=error_body(message, code), status=status)
    with pytest.raises(UpstreamError) as caught:
        client().post_chat({"model": "m", "messages": [], "stream": True})
    assert (caught.value.status, caught.value.kind, caught.value.message) == (status, kind, message)
    assert openai_type_and_code(caught.value)[1] == want  # what the OpenAI-style doors make of it


@responses.activate
def test_context_overflow_carries_deepseeks_numbers():
    message = ("This model's maximum context length is 1048576 tokens. However, you requested 1100000 tokens "
               "(1100000 in the messages, 0 in the completion).")
    responses.post(f"{BASE}/chat/completions", json=error_body(message), status=400)
    with pytest.raises(UpstreamError) as caught:
        client().post_chat({"model": "m", "messages": []})
    assert (caught.value.context_limit, caught.value.requested_tokens) == (1048576, 1100000)
    assert not caught.value.kind.retryable


@responses.activate
def test_rate_limit_without_retry_after_gets_the_configured_one():
    responses.post(f"{BASE}/chat/completions", json=error_body("Rate Limit Reached"), status=429)
    with pytest.raises(UpstreamError) as caught:
        client().post_chat({"model": "m", "messages": []})
    assert caught.value.kind is ErrorKind.RATE_LIMITED and caught.value.retry_after == 3


@responses.activate
def test_upstream_retry_after_is_kept():
    responses.post(f"{BASE}/chat/completions", json=error_body("busy"), status=429, headers={"Retry-After": "17"})
    with pytest.raises(UpstreamError) as caught:
        client().post_chat({"model": "m", "messages": []})
    assert caught.value.retry_after == 17


@responses.activate
def test_non_json_error_body_is_reported_as_text():
    responses.post(f"{BASE}/chat/completions", body="<html>bad gateway</html>", status=502)
    with pytest.raises(UpstreamError) as caught:
        client().post_chat({"model": "m", "messages": []})
    assert caught.value.status == 502 and "bad gateway" in caught.value.message


@responses.activate
def test_the_key_is_sent_and_the_request_body_not_kept():
    responses.post(f"{BASE}/chat/completions", json={"choices": []})
    response = client().post_chat({"model": "m", "messages": []})
    sent = responses.calls[0].request
    assert sent.headers["Authorization"] == "Bearer sk-test-key"
    assert sent.headers["Accept-Encoding"] == "identity"
    assert response.request.body is None


@responses.activate
def test_client_key_is_passed_through_only_when_configured():
    responses.post(f"{BASE}/chat/completions", json={"choices": []})
    client(api_key="client").post_chat({"model": "m", "messages": []}, client_key="sk-users-own")
    client().post_chat({"model": "m", "messages": []}, client_key="sk-users-own")
    assert responses.calls[0].request.headers["Authorization"] == "Bearer sk-users-own"
    assert responses.calls[1].request.headers["Authorization"] == "Bearer sk-test-key"


def test_missing_key_is_a_clear_error_before_any_request():
    keyless = UpstreamClient(UpstreamConfig(name="deepseek", base_url=BASE, api_key="env:NOPE"), env={})
    assert "NOPE" in keyless.key_error
    with pytest.raises(UpstreamError) as caught:
        keyless.post_chat({"model": "m", "messages": []})
    assert caught.value.kind is ErrorKind.PROXY_KEY_MISSING and openai_type_and_code(caught.value)[1] == "upstream_key_missing"


@responses.activate
def test_unreachable_upstream_is_a_502():
    responses.post(f"{BASE}/chat/completions", body=requests.ConnectionError("refused"))
    with pytest.raises(UpstreamError) as caught:
        client().post_chat({"model": "m", "messages": []})
    assert caught.value.status == 502 and openai_type_and_code(caught.value)[1] == "upstream_unreachable"


def test_proxy_settings_are_read_once_from_the_environment(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://corporate-proxy.test:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxied = client()
    assert proxied.session.proxies.get("https") == "http://corporate-proxy.test:3128"
    assert proxied.session.trust_env is False  # no per-request environment / ~/.netrc look-ups
    monkeypatch.setenv("NO_PROXY", "api.deepseek.test")
    assert client().session.proxies == {}


@responses.activate
def test_a_private_ca_bundle_from_the_environment_is_used():
    responses.post(f"{BASE}/chat/completions", json={"choices": []})
    config = UpstreamConfig(name="deepseek", base_url=BASE, api_key="env:K")
    private = UpstreamClient(config, env={"K": "k", "REQUESTS_CA_BUNDLE": "/etc/corp-ca.pem"})
    private.post_chat({"model": "m", "messages": []})
    client().post_chat({"model": "m", "messages": []})
    assert responses.calls[0].request.req_kwargs["verify"] == "/etc/corp-ca.pem"
    assert responses.calls[1].request.req_kwargs["verify"] is True


@pytest.mark.parametrize("error, want", [
    ({"message": "This model's maximum context length is 1048576 tokens.", "code": "invalid_request_error"},
     "context_length_exceeded"),
    ({"message": "Server busy", "code": "server_busy"}, "server_busy"),
    ({"message": "boom"}, "server_error"),
    ("plain text failure", "server_error"),
])
def test_error_chunks_inside_a_stream_get_the_codes_codex_acts_on(error, want):
    from deepseek_proxy.frontdoors.responses import stream_failure_code
    failure = client().profile.stream_failure(error)
    assert stream_failure_code(failure) == want and failure.message


# ---- TLS failures: only a rejected certificate is reported as one ------------------------------------------------


def _https_client(base_url: str, **env) -> UpstreamClient:
    config = UpstreamConfig(name="t", base_url=base_url, api_key="env:K", connect_timeout=5, read_timeout=5)
    return UpstreamClient(config, env={"K": "sk-k", **env})


def _post_error(client: UpstreamClient) -> UpstreamError:
    with pytest.raises(UpstreamError) as caught:
        client.post_chat({"model": "m", "messages": [], "stream": False})
    return caught.value


def test_an_untrusted_certificate_is_a_tls_error_naming_the_ca_setting(tls_upstream):
    error = _post_error(_https_client(tls_upstream.base_url))  # no REQUESTS_CA_BUNDLE: self-signed is untrusted
    assert (error.status, openai_type_and_code(error)[1]) == (502, "upstream_tls_error")
    assert "REQUESTS_CA_BUNDLE" in error.message


def test_a_plain_http_port_behind_an_https_url_is_unreachable_not_a_certificate_problem(upstream):
    error = _post_error(_https_client(upstream.base_url.replace("http://", "https://")))
    assert (error.status, openai_type_and_code(error)[1]) == (502, "upstream_unreachable")


def test_a_handshake_the_server_drops_is_unreachable_not_a_certificate_problem():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def drop_each_connection():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.close()

    threading.Thread(target=drop_each_connection, daemon=True).start()
    try:
        error = _post_error(_https_client(f"https://127.0.0.1:{port}"))
    finally:
        listener.close()
    assert (error.status, openai_type_and_code(error)[1]) == (502, "upstream_unreachable")
