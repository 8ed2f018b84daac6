"""Stored responses and the state the proxy's workers and instances share, behind one interface (base.Store).

    store = open_store(config)          # from `[store]`: SQLite file (default), Redis, or memory
    store.put_response(StoredResponse(...)); store.get_conversation(previous_response_id)
    cache = ReasoningCacheAdapter(store)  # ReasoningCache's get/put, on the store

open_store builds the object without connecting (each gunicorn worker connects on first use, after the fork);
call `store.ping()` to find out now whether the backend answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    ClientKeyRecord,
    InvalidCursor,
    ItemPage,
    KeyNameTaken,
    ReasoningCacheAdapter,
    ResponseTooLarge,
    Store,
    StoredResponse,
    StoreError,
    StoreUnavailable,
    UsageRow,
    paginate,
)

if TYPE_CHECKING:
    from ..config import StoreConfig

__all__ = [
    "ClientKeyRecord",
    "InvalidCursor",
    "ItemPage",
    "KeyNameTaken",
    "ReasoningCacheAdapter",
    "ResponseTooLarge",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoredResponse",
    "UsageRow",
    "open_store",
    "paginate",
    "redacted_url",
]

REDIS_MISSING = ("`store.url` is a Redis URL, but the Redis client library (redis-py) is not installed. Install it "
                 "into the proxy's environment: pip install 'deepseek-proxy[redis]' (pipx: pipx inject "
                 "deepseek-proxy redis), or use the default SQLite store (remove `store.url`).")


def open_store(config: StoreConfig, *, usage_retention_seconds: float | None = None) -> Store:
    """The Store for `[store]` (see config.StoreConfig). Raises ConfigError when the backend cannot be used at
    all (redis-py missing for a redis:// URL); connection problems show on first use as StoreUnavailable."""
    from ..config import ConfigError

    limits: dict[str, Any] = {"ttl_seconds": config.ttl_seconds, "reasoning_ttl_seconds": config.reasoning_ttl_seconds,
              "max_response_bytes": config.max_response_bytes}  # Store.__init__'s keywords
    if usage_retention_seconds is not None:  # [usage] retention_days (config.OpsConfig)
        limits["usage_retention_seconds"] = usage_retention_seconds
    url = config.url
    if url.startswith("sqlite://"):
        from .sqlite import SQLiteStore

        # sqlite:///abs/path (three slashes: an absolute path) or sqlite://relative/path
        return SQLiteStore(url[len("sqlite://"):], **limits)
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            from .redis import RedisStore
        except ImportError:
            raise ConfigError(REDIS_MISSING) from None
        return RedisStore(url, **limits)
    if url.startswith("memory://"):
        from .memory import MemoryStore

        return MemoryStore(**limits)
    raise ConfigError(f"`store.url` has a scheme no store backend serves: {redacted_url(url)}")


def redacted_url(url: str) -> str:
    """The store URL as a log line or `deepseek-proxy config` may show it: a password is replaced by ***."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(not a URL)"
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        credentials, _, host = authority.rpartition("@")
        user = credentials.partition(":")[0]
        authority = f"{user}:***@{host}" if user else f"***@{host}"
    return f"{scheme}://{authority}{slash}{path}"
