"""The application factory: one Flask app, one blueprint per front door, one Gateway per worker process."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from . import faults
from .codex.frontdoor import codex_catalog_bp
from .config import Config, load_config
from .core.errors import ProxyError
from .frontdoors import capture, chat, gemini, health, messages, models, openapi, responses, responses_ws
from .frontdoors.common import EXTENSION, Gateway, openai_error, upstream_error_response
from .frontdoors.metrics import bp as metrics_bp
from .request_body import ProxyRequest
from .shutdown import ServerShuttingDown
from .translate.reasoning import ReasoningCodec
from .upstream.client import UpstreamClient

log = logging.getLogger("deepseek_proxy")


def create_app(config: Config | None = None, *, env: Mapping[str, str] = os.environ) -> Flask:
    """Build the app. Without a Config, it is loaded from the environment (how
    `gunicorn 'deepseek_proxy.app:create_app()'`
    and deploy/gunicorn.conf.py start it)."""
    config = config or load_config(env=env)
    app = Flask("deepseek_proxy", static_folder=None)
    app.request_class = ProxyRequest
    # Codex resends the whole history every turn: bodies of tens of MB are normal, larger ones get a clear 413.
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    used = {m.upstream for m in config.models.values()}
    app.extensions[EXTENSION] = Gateway(
        config=config,
        upstreams={name: UpstreamClient(up, env=env, retry_after=config.server.retry_after_seconds)
                   for name, up in config.upstreams.items() if name in used},
        codec=ReasoningCodec(config.server.reasoning_secret),
    )
    for blueprint in (responses.bp, responses_ws.bp, messages.bp, messages.root_bp, chat.bp, gemini.bp, models.bp,
                      health.bp, codex_catalog_bp, openapi.bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(metrics_bp)  # GET /metrics, and the per-request HTTP counter
    app.register_error_handler(HTTPException, _http_error)
    # A door renders its own errors; one that escapes a view still gets a status and a body, never a 500.
    app.register_error_handler(ProxyError, upstream_error_response)
    app.register_error_handler(Exception, _unexpected_error)
    app.after_request(_tag_request_id)
    capture.install(app)
    return app


def _tag_request_id(response: Response) -> Response:
    response.headers[faults.HEADER] = faults.request_id(request.environ)
    return response


def _http_error(error: HTTPException) -> Response:
    """Routing and size errors in the OpenAI error format, so every client can read them."""
    if error.code == 413:
        return openai_error(413, "The request body is larger than this proxy accepts "
                                 "(server.max_body_mb in the config raises the limit).",
                            code="request_too_large")
    code = {404: "not_found", 405: "method_not_allowed", 408: "request_timeout"}.get(error.code or 0)
    return openai_error(error.code or 500, error.description or error.name, code=code)


def _unexpected_error(error: Exception) -> Response:
    """Whatever else a request raised. What only a client's input can cause is a 400; the stop's end of a request
    is a retryable 503; anything else is the proxy's fault, a 500 whose message carries the request id."""
    rid = faults.request_id(request.environ)
    fault = faults.input_fault(error)
    if fault is not None:
        log.info("request %s: %s %s refused: %s", rid, request.method, request.path, fault[1])
        return openai_error(fault[0], fault[1])
    if isinstance(error, ServerShuttingDown):
        return openai_error(503, "The proxy is restarting; try again.", type="server_error",
                            code="server_shutting_down", headers={"retry-after": "1"})
    log.exception("request %s: unhandled error in %s %s", rid, request.method, request.path)
    return openai_error(500, faults.unexpected_message(rid), type="server_error", code="server_error")
