"""What every front door shares: the gateway services, client auth (a blueprint hook), and the OpenAI error
format (the Responses door's, and the Chat Completions door's to come): neutral `ProxyError` kinds rendered as
OpenAI status / type / code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import Response, current_app, request

from ..config import Config, ModelConfig
from ..core.errors import ErrorKind, ProxyError
from ..jsonfast import JSONDecodeError, dumps, loads
from ..store import ReasoningCacheAdapter, Store, open_store
from ..translate.errors import RequestError
from ..translate.reasoning import ReasoningCache, ReasoningCodec
from ..upstream.chat import StreamLimits
from ..upstream.client import UpstreamClient

EXTENSION = "deepseek_proxy"


@dataclass
class Gateway:
    """Everything a request needs, built once per worker: config, one pooled client per upstream, the codec."""

    config: Config
    upstreams: dict[str, UpstreamClient]
    codec: ReasoningCodec
    reasoning_cache: ReasoningCache = field(default_factory=ReasoningCache)
    _store: Store | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if _shared_store_url(self.config.store.url):
            self.reasoning_cache = SharedReasoningCache(self.reasoning_cache, ReasoningCacheAdapter(self.store))

    @property
    def store(self) -> Store:
        """The response store of `[store]`: built once per worker on first use, connected on its first call
        (after gunicorn's fork), so a worker that never stores anything never opens it."""
        if self._store is None:
            self._store = open_store(self.config.store)
        return self._store

    def client_for(self, model: ModelConfig) -> UpstreamClient:
        return self.upstreams[model.upstream]

    @property
    def stream_limits(self) -> StreamLimits:
        server = self.config.server
        return StreamLimits(keepalive_interval=server.keepalive_interval,
                            max_bytes=int(server.max_upstream_stream_mb * 2**20),
                            max_seconds=server.max_upstream_stream_seconds)


def _shared_store_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


class SharedReasoningCache(ReasoningCache):
    """The reasoning fallback cache when `[store]` is a Redis that several instances share: this process's LRU
    first, then the shared store, so a call made through instance A is replayed with its reasoning through B.

    Why not always the store: the fallback is what Codex (which sends `store: false`) relies on when a client
    drops its reasoning items. With the default SQLite store that would put Codex's reasoning on disk for
    `reasoning_ttl_days` although the client asked to keep nothing; an operator who configures a shared Redis
    has chosen shared state for N instances, and the entries there expire by Redis' own TTL. A store failure is
    a miss (ReasoningCacheAdapter logs it), never a failed request."""

    def __init__(self, local: ReasoningCache, shared: ReasoningCacheAdapter):
        super().__init__()
        self.local, self.shared = local, shared

    def put(self, call_id: str, reasoning: str) -> None:
        self.local.put(call_id, reasoning)
        self.shared.put(call_id, reasoning)

    def get(self, call_id: str) -> str | None:
        found = self.local.get(call_id)
        if found is None:
            found = self.shared.get(call_id)
            if found is not None:
                self.local.put(call_id, found)
        return found

    def __len__(self) -> int:
        return len(self.local)


def configured_model(gw: Gateway, body: Any) -> ModelConfig:
    """The configured model the body names (by its own name), else a 404 naming the models served here: the
    OpenAI doors' lookup (the Messages and Gemini doors also map their clients' model names)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    name = body.get("model")
    if not isinstance(name, str):
        raise RequestError("`model` is required and must be a string", param="model")
    model = gw.config.model(name)
    if model is None:
        raise RequestError(f"The model `{name}` does not exist or you do not have access to it. "
                           f"Models served here: {', '.join(gw.config.models)}.",
                           param="model", code="model_not_found", status=404)
    return model


def gateway() -> Gateway:
    return current_app.extensions[EXTENSION]


def openai_error(status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return Response(dumps(body), status=status, mimetype="application/json", headers=headers)


def request_error_response(error: RequestError) -> Response:
    return openai_error(error.status, error.message, code=error.code, param=error.param)


# kind → (OpenAI error type, code when the upstream gave none). What the openai SDK and Codex read from an HTTP
# error body; the status stays the upstream's own.
_OPENAI_ERRORS: dict[ErrorKind, tuple[str, str | None]] = {
    ErrorKind.INVALID_REQUEST: ("invalid_request_error", None),
    ErrorKind.AUTHENTICATION: ("authentication_error", "invalid_api_key"),
    ErrorKind.PROXY_KEY_MISSING: ("authentication_error", "upstream_key_missing"),
    ErrorKind.PERMISSION: ("permission_error", None),
    ErrorKind.NOT_FOUND: ("invalid_request_error", "model_not_found"),
    ErrorKind.TOO_LARGE: ("invalid_request_error", "request_too_large"),
    ErrorKind.CONTEXT_OVERFLOW: ("invalid_request_error", "context_length_exceeded"),
    ErrorKind.INSUFFICIENT_BALANCE: ("insufficient_quota", "insufficient_quota"),
    ErrorKind.RATE_LIMITED: ("rate_limit_error", "rate_limit_exceeded"),
    ErrorKind.OVERLOADED: ("server_error", "server_is_overloaded"),
    ErrorKind.UPSTREAM_UNAVAILABLE: ("server_error", "upstream_unreachable"),
    ErrorKind.TIMEOUT: ("server_error", "upstream_timeout"),
    ErrorKind.SERVER_ERROR: ("server_error", "server_error"),
    ErrorKind.SHUTTING_DOWN: ("server_error", "server_error"),
}
# Kinds whose code is always ours: the upstream's own code would not tell the client what to do.
_FIXED_CODE = frozenset({ErrorKind.AUTHENTICATION, ErrorKind.CONTEXT_OVERFLOW, ErrorKind.INSUFFICIENT_BALANCE,
                         ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED, ErrorKind.PROXY_KEY_MISSING})


def openai_type_and_code(error: ProxyError) -> tuple[str, str | None]:
    kind_type, default_code = _OPENAI_ERRORS[error.kind]
    if error.kind in _FIXED_CODE:
        return kind_type, default_code
    if error.kind is ErrorKind.INVALID_REQUEST and error.status == 422:
        default_code = "invalid_value"
    return kind_type, error.upstream_code or default_code


def upstream_error_response(error: ProxyError) -> Response:
    """A neutral error as an OpenAI error body, with the upstream's status (and retry-after when known)."""
    headers = {"retry-after": str(error.retry_after)} if error.retry_after is not None else None
    kind_type, code = openai_type_and_code(error)
    return openai_error(error.status, error.message, type=kind_type, code=code, param=error.param, headers=headers)


def bearer_token() -> str | None:
    """The client's key: `Authorization: Bearer …` (OpenAI SDK, Codex) or `x-api-key` (Anthropic style)."""
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def check_client_key(config: Config) -> Response | None:
    """The client's key, checked by the proxy's authenticator (ops/keys.py): config keys (constant-time), stored
    keys made with `deepseek-proxy keys add` (by hash; a revoked one is refused within a second), or anyone when
    neither exists. A refusal in the OpenAI format: 401 invalid_api_key, or 503 when the key store is down.
    `config` is the app's own (the authenticator is built from it); kept for the callers' signature."""
    from .gate import (
        client_refusal,  # gate imports the upstream layer, which imports this module's neighbours
    )

    refusal = client_refusal(bearer_token())
    if refusal is None:
        return None
    headers = {"retry-after": str(refusal.retry_after)} if refusal.retry_after is not None else None
    return openai_error(refusal.status, refusal.message,
                        type="invalid_request_error" if refusal.status < 500 else "server_error",
                        code=refusal.upstream_code, headers=headers)


def require_client_key() -> Response | None:
    """`before_request` hook for a door's blueprint: the client-key check once per request, before any view."""
    return check_client_key(gateway().config)


def _raw_bytes(header_value: str) -> bytes:
    try:
        return header_value.encode("latin-1")  # the bytes as sent (PEP 3333)
    except UnicodeEncodeError:
        return header_value.encode("utf-8", "surrogateescape")


def json_body() -> Any:
    """The request body as JSON, or a RequestError that says what is wrong with it."""
    data = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    if not data:
        raise RequestError("The request body is empty; expected a JSON object.")
    try:
        return loads(data)
    except JSONDecodeError as exc:
        raise RequestError(f"We could not parse the JSON body of your request: {exc}") from None
