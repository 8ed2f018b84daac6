"""GET /v1/codex/models.json: the Codex model catalog, for `model_catalog_url`.

Codex fetches `{model_catalog_url}?client_version=0.169.0` with its bearer key at every start, so the catalog
follows the proxy's config without re-running `codex setup`. It is built from the proxy config at request time
and cached per process (per asking Codex version): building it runs `codex debug models --bundled` once, or reads
the snapshot `codex setup` saved (see catalog.load_bundled).
"""

from __future__ import annotations

import os
import threading

from flask import Blueprint, Response, request

from ..config import Config
from ..frontdoors.common import check_client_key, gateway, openai_error
from ..jsonfast import dumps
from . import catalog as catalog_mod

codex_catalog_bp = Blueprint("codex_catalog", __name__)

_cache: dict[tuple[int, str], bytes] = {}
_lock = threading.Lock()
_MAX_CACHED = 8  # distinct Codex versions asking one process; more is unusual


def catalog_bytes(config: Config, client_version: str | None) -> bytes:
    """The serialized catalog for this config and Codex version (cached; failures are not cached)."""
    key = (id(config), client_version or "")
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    bundled = catalog_mod.load_bundled(os.environ, client_version=client_version)
    body = dumps(catalog_mod.build_catalog(config, bundled.catalog, codex_version=bundled.codex_version))
    with _lock:
        if len(_cache) >= _MAX_CACHED:
            _cache.clear()
        _cache[key] = body
    return body


@codex_catalog_bp.get("/v1/codex/models.json")
@codex_catalog_bp.get("/codex/models.json")
def codex_models() -> Response:
    config = gateway().config
    denied = check_client_key(config)
    if denied is not None:
        return denied
    try:
        body = catalog_bytes(config, request.args.get("client_version"))
    except catalog_mod.CatalogUnavailable as exc:
        # Codex then falls back to its bundled catalog (and warns "Model metadata ... not found").
        return openai_error(503, str(exc), type="server_error", code="codex_catalog_unavailable")
    return Response(body, mimetype="application/json", headers={"Cache-Control": "no-cache"})
