"""Running the proxy for a team (issue 12): client keys, the upstream key pool, limits, usage and cost, metrics,
request logs. Each module is usable on its own; `Ops` holds one of each per worker process, built from the
config on first use (after gunicorn's fork, like the store's connection):

    ops = ops_for(current_app)                  # the app's Ops (created on first call)
    identity = ops.authenticator.authenticate(bearer)          # keys.py: ClientIdentity | AuthFailure
    admission = ops.limiter.admit(identity)                    # limits.py: raises RateLimited
    reply, lease = with_failover(send, ops.pool(model.upstream))   # keypool.py
    ops.usage.record_usage(key_name=..., model=..., ...)       # usage.py
    RequestMetrics(door=..., model=..., stream=...)            # metrics.py
    request_log(request_id=..., ...)                           # logs.py
    ops.prefix.after_reply(scope)                              # prefix.py: prefix-break detection (RequestScope)
"""

from __future__ import annotations

import threading
from typing import Any

from ..config import Config, default_state_dir
from ..store import Store, open_store
from .keypool import KeyPool
from .keys import Authenticator
from .limits import Limiter
from .logs import BodyCapture
from .prefix import PrefixWatch
from .prices import Prices
from .usage import UsageRecorder

EXTENSION = "deepseek_proxy.ops"


class Ops:
    def __init__(self, config: Config, *, store: Store | None = None, env: Any = None):
        import os

        self.config = config
        self.env = os.environ if env is None else env
        self.store = store if store is not None else open_store(
            config.store, usage_retention_seconds=config.ops.usage_retention_seconds)
        self.authenticator = Authenticator(config.server.client_keys, self.store)
        self.limiter = Limiter(config.limits, self.store)
        self.prices = Prices(config.ops.prices, config.ops.peak_hours_utc)
        self.usage = UsageRecorder(self.store, self.prices, enabled=config.ops.usage)
        capture_dir = config.ops.capture_dir or str(default_state_dir(self.env) / "captures")
        self.capture = BodyCapture(capture_dir, max_bytes=config.ops.capture_max_bytes,  # type: ignore[arg-type]
                                   enabled=config.ops.capture_bodies)
        # One detector per app (per worker): its memory is the store's unless `[cache] prefix_memory = "process"`.
        self.prefix = PrefixWatch.from_config(config.ops, self.store)
        self._pools: dict[str, KeyPool] = {}
        self._lock = threading.Lock()

    def pool(self, upstream: str) -> KeyPool:
        """The key pool of a configured upstream (keys resolved on first use)."""
        with self._lock:
            pool = self._pools.get(upstream)
            if pool is None:
                pool = self._pools[upstream] = KeyPool.from_config(self.config.upstreams[upstream], store=self.store,
                                                                   env=self.env)
            return pool

    def pools_in_use(self) -> dict[str, KeyPool]:
        """The pools of the upstreams a model uses whose keys the proxy holds (not "client" / "none")."""
        used = dict.fromkeys(m.upstream for m in self.config.models.values())
        upstreams = self.config.upstreams
        return {name: self.pool(name) for name in used
                if upstreams[name].api_key not in ("client", "none") or upstreams[name].api_keys}


def ops_for(app: Any) -> Ops:
    """The Ops of a Flask app (built from its Gateway's config on first use)."""
    ops = app.extensions.get(EXTENSION)
    if ops is None:
        from ..frontdoors.common import EXTENSION as GATEWAY

        ops = app.extensions.setdefault(EXTENSION, Ops(app.extensions[GATEWAY].config))
    return ops
