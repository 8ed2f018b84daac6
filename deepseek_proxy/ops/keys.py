"""Client keys: who is calling, and may they.

A key is `dsp-` + 43 characters of `secrets.token_urlsafe(32)` (256 random bits), printed once by
`deepseek-proxy keys add` and never kept: the store holds its SHA-256. A fast hash is the right one here, not a
password hash (argon2, bcrypt): those are slow on purpose to make guessing a *low-entropy* secret expensive; a
256-bit random key cannot be guessed however fast the hash, and a slow hash would cost every request tens of
milliseconds of CPU (and be a denial-of-service lever). It is what GitHub, Stripe and LiteLLM do for API keys.

Keys in the config file (`server.client_keys`) keep working: they are compared in constant time
(hmac.compare_digest) and named `config#1`, `config#2`… in usage rows and logs.

Entry point for the auth hook (one call per request):

    authenticator = Authenticator(config.server.client_keys, store)
    result = authenticator.authenticate(presented_key)   # bytes | str | None
    if isinstance(result, AuthFailure): render result.status / result.code / result.message in the door's format
    else: result is a ClientIdentity (name, limits, models); then `result.may_use(model)` / check_model()

Revocation: a stored key's record is read from the store at most `cache_seconds` (1 s) after the previous read
by the same process, so `keys revoke` takes effect within a second in every worker. Other instances see it
through the shared store: with `[store] url = "redis://…"` every instance reads the same record; with the
default SQLite store, the workers of one machine share the file, but separate machines each have their own
(run N machines on one Redis).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..store import ClientKeyRecord, Store, StoreError

log = logging.getLogger("deepseek_proxy.keys")

KEY_PREFIX = "dsp-"
HINT_LENGTH = len(KEY_PREFIX) + 4  # "dsp-AbCd": enough to tell keys apart in `keys list`, useless to an attacker
CACHE_SECONDS = 1.0
TOUCH_SECONDS = 60.0  # `last used` is written at most this often per key and process
CACHE_LIMIT = 10_000  # entries (one per distinct presented key, good or bad) before the cache starts afresh
ANONYMOUS = "anonymous"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str | bytes) -> str:
    return hashlib.sha256(key.encode("utf-8") if isinstance(key, str) else key).hexdigest()


def key_hint(key: str) -> str:
    return key[:HINT_LENGTH] + "…"


@dataclass(frozen=True)
class ClientIdentity:
    """Who is calling. `source` is "config" (server.client_keys), "store" (`keys add`) or "open" (no keys at all).
    Limits None: the key has none of its own ([limits] key_* apply)."""

    name: str
    source: str
    models: tuple[str, ...] = ()
    budget_usd: float | None = None
    rpm: int | None = None
    concurrency: int | None = None
    spent_usd: float = 0.0

    def may_use(self, model: str) -> bool:
        return not self.models or model in self.models


@dataclass(frozen=True)
class AuthFailure:
    """A refusal. `kind` is one of core.errors.ErrorKind's values (authentication, permission,
    insufficient_balance, upstream_unavailable) so the door renders it like any other error of that kind."""

    status: int
    code: str
    message: str
    kind: str


MISSING = AuthFailure(401, "invalid_api_key", "This proxy needs an API key: send it as `Authorization: Bearer KEY` "
                      "(or `x-api-key`).", "authentication")
INVALID = AuthFailure(401, "invalid_api_key", "Incorrect API key provided for this proxy.", "authentication")
REVOKED = AuthFailure(401, "invalid_api_key", "This API key has been revoked; ask the proxy's operator for a new one.",
                      "authentication")
STORE_DOWN = AuthFailure(503, "service_unavailable", "The proxy cannot check API keys right now (its key store is "
                         "unreachable); try again shortly.", "upstream_unavailable")


def over_budget(identity: ClientIdentity) -> AuthFailure:
    return AuthFailure(429, "insufficient_quota",
                       f"The API key `{identity.name}` has used its budget (${identity.spent_usd:.2f} of "
                       f"${identity.budget_usd:.2f}); ask the proxy's operator to raise it.", "insufficient_balance")


def check_model(identity: ClientIdentity, model: str) -> AuthFailure | None:
    if identity.may_use(model):
        return None
    return AuthFailure(403, "model_not_allowed", f"The API key `{identity.name}` may not use the model `{model}` "
                       f"(it may use: {', '.join(identity.models)}).", "permission")


def check_budget(identity: ClientIdentity) -> AuthFailure | None:
    """The budget refusal for an identity whose spending (as read by authenticate, at most 1 s old) reached it."""
    if identity.budget_usd is not None and identity.spent_usd >= identity.budget_usd:
        return over_budget(identity)
    return None


def _as_bytes(presented: bytes | str | None) -> bytes:
    if presented is None:
        return b""
    if isinstance(presented, bytes):
        return presented.strip()
    # WSGI headers are the raw bytes decoded as latin-1; anything else a caller gives is encoded as UTF-8.
    try:
        return presented.strip().encode("latin-1")
    except UnicodeEncodeError:
        return presented.strip().encode("utf-8")


class Authenticator:
    """Per process. `store` None: config keys only."""

    def __init__(self, config_keys: tuple[str, ...] | list[str], store: Store | None, *,
                 cache_seconds: float = CACHE_SECONDS, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        self._config_keys = [(f"config#{i}", k.encode("utf-8")) for i, k in enumerate(config_keys, 1)]
        self.store = store
        self.cache_seconds = cache_seconds
        self._clock, self._wall = clock, wall_clock
        self._cache: dict[str, tuple[float, ClientKeyRecord | None]] = {}  # sha256 → (read at, record)
        self._touched: dict[str, float] = {}
        self._any_stored: tuple[float, bool] | None = None

    def keys_required(self) -> bool:
        """Whether requests must present a key: config keys exist, or the store holds any key, a revoked one
        included (revoking the last key must not open the proxy to everyone: fail closed, as the README says)."""
        if self._config_keys:
            return True
        if self.store is None:
            return False
        now = self._clock()
        if self._any_stored is None or now - self._any_stored[0] >= self.cache_seconds:
            try:
                live = bool(self.store.list_client_keys())
            except StoreError as exc:
                log.warning("client keys: the store is unreachable (%s); asking for keys meanwhile", exc)
                live = True  # fail closed: a proxy with keys must not open up when its store hiccups
            self._any_stored = (now, live)
        return self._any_stored[1]

    def authenticate(self, presented_key: bytes | str | None) -> ClientIdentity | AuthFailure:
        presented = _as_bytes(presented_key)
        if not presented:
            return MISSING if self.keys_required() else ClientIdentity(ANONYMOUS, "open")
        matched = None
        for name, key in self._config_keys:  # every one compared, in constant time each
            if hmac.compare_digest(presented, key):
                matched = name
        if matched is not None:
            return ClientIdentity(matched, "config")
        if self.store is None:
            return INVALID if self._config_keys else ClientIdentity(ANONYMOUS, "open")
        digest = key_hash(presented)
        try:
            record = self._lookup(digest)
        except StoreError as exc:
            log.warning("client keys: the store is unreachable (%s)", exc)
            return STORE_DOWN
        if record is None:
            return INVALID if self.keys_required() else ClientIdentity(ANONYMOUS, "open")
        if record.revoked_at is not None:
            return REVOKED
        identity = ClientIdentity(record.name, "store", record.models, record.budget_usd, record.rpm,
                                  record.concurrency, record.spent_usd)
        self._touch(record.name)
        return check_budget(identity) or identity

    def _lookup(self, digest: str) -> ClientKeyRecord | None:
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        assert self.store is not None
        record = self.store.find_client_key(digest)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[digest] = (now, record)
        return record

    def _touch(self, name: str) -> None:
        now = self._clock()
        if now - self._touched.get(name, -TOUCH_SECONDS) < TOUCH_SECONDS:
            return
        self._touched[name] = now
        try:
            assert self.store is not None
            self.store.touch_client_key(name, self._wall())
        except StoreError as exc:  # `last used` is worth no failed request
            log.warning("client keys: last use of %s not recorded (%s)", name, exc)


def add_key(store: Store, name: str, *, models: tuple[str, ...] = (), budget_usd: float | None = None,
            rpm: int | None = None, concurrency: int | None = None, now: float | None = None) -> str:
    """Make a key, keep its hash, return the key (shown once). Raises KeyNameTaken, StoreError."""
    key = new_key()
    store.put_client_key(ClientKeyRecord(name=name, key_hash=key_hash(key), created_at=time.time() if now is None
                                         else now, hint=key_hint(key), models=models, budget_usd=budget_usd,
                                         rpm=rpm, concurrency=concurrency))
    return key
