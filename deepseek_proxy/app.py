"""The application factory: one Flask app, one blueprint per front door, one Gateway per worker process."""

from __future__ import annotations

import logging
import os
from typing import Mapping

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from .codex.frontdoor import codex_catalog_bp
from .config import Config, load_config
from .frontdoors import health, models, responses
from .core.errors import ProxyError
from .frontdoors.common import EXTENSION, Gateway, openai_error, upstream_error_response
from .translate.reasoning import ReasoningCodec
from .upstream.client import UpstreamClient

log = logging.getLogger("deepseek_proxy")


def create_app(config: Config | None = None, *, env: Mapping[str, str] = os.environ) -> Flask:
    """Build the app. Without a Config, it is loaded from the environment (how `gunicorn 'deepseek_proxy.app:create_app()'`
    and deploy/gunicorn.conf.py start it)."""
    config = config or load_config(env=env)
    app = Flask("deepseek_proxy", static_folder=None)
    # Codex resends the whole history every turn: bodies of tens of MB are normal, larger ones get a clear 413.
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    used = {m.upstream for m in config.models.values()}
    app.extensions[EXTENSION] = Gateway(
        config=config,
        upstreams={name: UpstreamClient(up, env=env, retry_after=config.server.retry_after_seconds)
                   for name, up in config.upstreams.items() if name in used},
        codec=ReasoningCodec(config.server.reasoning_secret),
    )
    for blueprint in (responses.bp, models.bp, health.bp, codex_catalog_bp):
        app.register_blueprint(blueprint)
    app.register_error_handler(HTTPException, _http_error)
    # A door renders its own errors; one that escapes a view still gets a status and a body, never a 500.
    app.register_error_handler(ProxyError, upstream_error_response)
    app.register_error_handler(Exception, _unexpected_error)
    return app


def _http_error(error: HTTPException) -> Response:
    """Routing and size errors in the OpenAI error format, so every client can read them."""
    if error.code == 413:
        return openai_error(413, "The request body is larger than this proxy accepts "
                                 "(server.max_body_mb in the config raises the limit).",
                            code="request_too_large")
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.code or 0)
    return openai_error(error.code or 500, error.description or error.name, code=code)


def _unexpected_error(error: Exception) -> Response:
    log.exception("unhandled error")
    return openai_error(500, "The proxy failed on this request; see its log.", type="server_error",
                        code="server_error")
