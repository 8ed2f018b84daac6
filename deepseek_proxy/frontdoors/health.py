"""Liveness and readiness.

/healthz: the process answers. /readyz: every upstream a model uses has a key; with ?deep=1 each upstream is
also asked for its model list, which proves it is reachable and accepts the key (used by `deepseek-proxy doctor`).
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from ..jsonfast import dumps
from ..upstream.client import UpstreamError
from .common import bearer_token, gateway

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return Response(b'{"status":"ok"}', mimetype="application/json")


@bp.get("/readyz")
def readyz() -> Response:
    gw = gateway()
    deep = request.args.get("deep") in ("1", "true", "yes")
    checks = {}
    for name in sorted({m.upstream for m in gw.config.models.values()}):
        client = gw.upstreams[name]
        check = {"base_url": client.config.base_url, "key": "client" if client.passes_client_key else
                 ("missing" if client.key_error else "configured")}
        ok = client.key_error is None
        if not ok:
            check["error"] = client.key_error
        elif deep:
            try:
                client.list_models(client_key=bearer_token())
                check["reachable"] = True
            except UpstreamError as exc:
                ok = False
                check.update(reachable=exc.status not in (502, 504), error=f"{exc.status}: {exc.message}")
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported in words
                ok = False
                check.update(reachable=False, error=f"{exc.__class__.__name__}: {exc}")
        check["ok"] = ok
        checks[name] = check
    ready = all(c["ok"] for c in checks.values())
    body = {"status": "ready" if ready else "not_ready", "upstreams": checks, "models": list(gw.config.models)}
    return Response(dumps(body), status=200 if ready else 503, mimetype="application/json")
