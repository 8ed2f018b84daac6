"""GET /metrics: Prometheus text format (deepseek_proxy/ops/metrics.py), and the count of every HTTP request.

When the proxy asks its clients for keys (config keys, or keys made with `deepseek-proxy keys add`), a scrape
must present one too (Prometheus: `authorization: {credentials: KEY}` in the scrape config): the metrics name
models, keys' names and upstream key states.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from ..ops import metrics as ops_metrics
from ..ops import ops_for
from ..ops.keys import AuthFailure
from .common import bearer_token, gateway, openai_error

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    if not gateway().config.ops.metrics:
        return openai_error(404, "Metrics are switched off ([metrics] enabled = false).", code="not_found")
    ops = ops_for(current_app)
    result = ops.authenticator.authenticate(bearer_token())
    if isinstance(result, AuthFailure) and result.kind != "insufficient_balance":  # a spent key may still watch
        return openai_error(result.status, result.message, code=result.code,
                            type="invalid_request_error" if result.status < 500 else "server_error")
    for upstream, pool in ops.pools_in_use().items():
        ops_metrics.set_key_states(upstream, pool.describe())
    body, content_type = ops_metrics.exposition()
    return Response(body, mimetype=None, content_type=content_type)


@bp.after_app_request
def count_request(response: Response) -> Response:
    """Every request the app answers, by its route template (bounded: never the raw path)."""
    rule = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
    ops_metrics.http_request(route=rule, method=request.method, status=response.status_code)
    return response
