"""What every OpenAI-style front door shares: the gateway services, client auth, and the error body format."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any

from flask import Response, current_app, request

from ..config import Config, ModelConfig
from ..jsonfast import JSONDecodeError, dumps, loads
from ..translate.errors import RequestError
from ..translate.reasoning import ReasoningCache, ReasoningCodec
from ..upstream.client import UpstreamClient, UpstreamError

EXTENSION = "deepseek_proxy"


@dataclass
class Gateway:
    """Everything a request needs, built once per worker: config, one pooled client per upstream, the codec."""

    config: Config
    upstreams: dict[str, UpstreamClient]
    codec: ReasoningCodec
    reasoning_cache: ReasoningCache = field(default_factory=ReasoningCache)

    def client_for(self, model: ModelConfig) -> UpstreamClient:
        return self.upstreams[model.upstream]


def gateway() -> Gateway:
    return current_app.extensions[EXTENSION]


def openai_error(status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return Response(dumps(body), status=status, mimetype="application/json", headers=headers)


def request_error_response(error: RequestError) -> Response:
    return openai_error(error.status, error.message, code=error.code, param=error.param)


def upstream_error_response(error: UpstreamError) -> Response:
    headers = {"retry-after": str(error.retry_after)} if error.retry_after is not None else None
    return openai_error(error.status, error.message, type=error.type, code=error.code, param=error.param,
                        headers=headers)


def bearer_token() -> str | None:
    """The client's key: `Authorization: Bearer …` (OpenAI SDK, Codex) or `x-api-key` (Anthropic style)."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def check_client_key(config: Config) -> Response | None:
    """When the proxy is configured with client keys, a request must present one of them."""
    if not config.server.client_keys:
        return None
    # As bytes: compare_digest refuses str with non-ASCII characters (a 500 on `Bearer é`). WSGI headers are the
    # raw bytes decoded as latin-1.
    presented = (bearer_token() or "").encode("latin-1", "replace")
    if any(hmac.compare_digest(presented, key.encode()) for key in config.server.client_keys):
        return None
    return openai_error(401, "Incorrect API key provided for this proxy.", type="invalid_request_error",
                        code="invalid_api_key")


def json_body() -> Any:
    """The request body as JSON, or a RequestError that says what is wrong with it."""
    data = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    if not data:
        raise RequestError("The request body is empty; expected a JSON object.")
    try:
        return loads(data)
    except JSONDecodeError as exc:
        raise RequestError(f"We could not parse the JSON body of your request: {exc}") from None
