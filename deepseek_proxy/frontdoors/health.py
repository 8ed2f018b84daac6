"""Liveness and readiness.

/healthz: the process answers. /readyz: every upstream a model uses has a key; with ?deep=1 each upstream is
also asked for its model list, which proves it is reachable and accepts the key (used by `deepseek-proxy doctor`).
A deep check costs upstream calls, so it asks for a client key when the proxy has client keys, and its answer is
reused for DEEP_CHECK_SECONDS.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

from flask import Blueprint, Response, current_app, request

from ..jsonfast import dumps
from ..ops import ops_for
from ..upstream.client import UpstreamClient, UpstreamError
from .common import bearer_token, check_client_key, gateway

bp = Blueprint("health", __name__)

# Long enough that a probe hammering /readyz?deep=1 costs the upstream one call per upstream per 5 s, short enough
# that `doctor` run right after fixing a key sees the fix.
DEEP_CHECK_SECONDS = 5.0
_deep_checks: dict[tuple, tuple[float, dict]] = {}  # (upstream, client key digest) → (expires, result)
_deep_lock = threading.Lock()  # one upstream call at a time per worker; the others then read the cache


@bp.get("/healthz")
def healthz() -> Response:
    return Response(b'{"status":"ok"}', mimetype="application/json")


@bp.get("/readyz")
def readyz() -> Response:
    gw = gateway()
    deep = request.args.get("deep") in ("1", "true", "yes")
    if deep:
        denied = check_client_key(gw.config)
        if denied is not None:
            return denied
    checks = {}
    ops = ops_for(current_app)
    for name in sorted({m.upstream for m in gw.config.models.values()}):
        client = gw.upstreams[name]
        check: dict[str, Any] = {"base_url": client.config.base_url, "key": "client" if client.passes_client_key else
                 ("missing" if client.key_error else "configured")}
        ok = client.key_error is None
        pool_key: str | None = None
        if client.config.api_keys:  # a key pool (ops/keypool.py): ready when one of its keys is usable
            pool = ops.pool(name)
            check["keys"] = pool.describe()  # masked: source, `sk-…abcd`, state, until when and why
            usable = [k for k in pool.keys if k.key and k.state == "ok"]
            ok, check["key"] = bool(usable), "pool"
            pool_key = usable[0].key if usable else None
            if not ok:
                check["error"] = "no key of the pool is usable: " + "; ".join(
                    f"{k['source']} {k['state']}{': ' + k['reason'] if k.get('reason') else ''}" for k in check["keys"])
        elif not ok:
            check["error"] = client.key_error
        if ok and deep:
            reached = _deep_check(name, client, pool_key)
            ok = "error" not in reached
            check.update(reached)
        check["ok"] = ok
        checks[name] = check
    ready = all(c["ok"] for c in checks.values())
    body = {"status": "ready" if ready else "not_ready", "upstreams": checks, "models": list(gw.config.models)}
    return Response(dumps(body), status=200 if ready else 503, mimetype="application/json")


def _deep_check(name: str, client: UpstreamClient, api_key: str | None = None) -> dict:
    """{"reachable": bool, "error"?: str}, from the cache when a check of the same upstream (and, for an upstream
    that takes the client's key, the same key) is younger than DEEP_CHECK_SECONDS."""
    client_key = bearer_token()
    digest = hashlib.sha256(client_key.encode()).hexdigest() if client.passes_client_key and client_key else None
    cache_key = (name, digest)
    with _deep_lock:
        cached = _deep_checks.get(cache_key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            client.list_models(client_key=client_key, api_key=api_key)
            result: dict = {"reachable": True}
        except UpstreamError as exc:
            result = {"reachable": exc.status not in (502, 504), "error": f"{exc.status}: {exc.message}"}
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported in words
            result = {"reachable": False, "error": f"{exc.__class__.__name__}: {exc}"}
        _deep_checks[cache_key] = (time.monotonic() + DEEP_CHECK_SECONDS, result)
        return result
