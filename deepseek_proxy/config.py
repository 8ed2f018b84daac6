"""Configuration: built-in defaults < TOML file < environment variables < CLI flags.

Everything the server needs is resolved here, once, into frozen dataclasses. Invalid input fails at start-up with
a ConfigError that names the key and the file, never later in the middle of a request.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .translate.gemini_models import DEFAULT_GEMINI_MODEL_PATTERNS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
DEFAULT_UPSTREAM = "deepseek"
DEFAULT_BASE_URL = "https://api.deepseek.com"
MB = 1024 * 1024

# Codex's reasoning efforts → DeepSeek's. DeepSeek V4 knows thinking on/off and effort low/high/max.
DEFAULT_EFFORT_MAP = {
    "none": "disabled",
    "minimal": "low",
    "low": "low",
    "medium": "high",
    "high": "high",
    "xhigh": "high",  # Codex ≥ 0.169 has "max" for DeepSeek's max; set xhigh = "max" for older clients
    "max": "max",
}
UPSTREAM_EFFORTS = {"disabled", "low", "high", "max"}
PROFILES = {"deepseek", "openai"}
KEY_SOURCE_HINT = 'one of "env:VARIABLE", "pass:ENTRY", "file:/PATH", "client" or "none"'
# Settings whose values are secrets: an error or `deepseek-proxy config` names them, never shows them.
SECRET_SETTINGS = {"server.client_keys", "server.reasoning_secret"}


class ConfigError(Exception):
    """A configuration problem, phrased for the person who has to fix it."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    worker_connections: int = 2000
    max_body_bytes: int = 64 * MB
    log_level: str = "info"
    # Keys the proxy accepts from its own clients; empty means it asks for none (a local, loopback service).
    client_keys: tuple[str, ...] = ()
    # Authenticates the reasoning that rides in `encrypted_content`. Shared by every worker and kept across
    # restarts (see _reasoning_secret), so a conversation survives a redeploy.
    reasoning_secret: bytes = b""
    # Seconds to advertise in `retry-after` when the upstream rate-limits without one (DeepSeek never sends it,
    # and Codex retries a 429 only when the header is there).
    retry_after_seconds: int = 2
    # While the upstream only sends keep-alive comments (a queued DeepSeek request), send the client a
    # `response.in_progress` at most this often: Codex's idle timer ignores SSE comments.
    keepalive_interval: float = 5.0
    # Time limits at the edge, each nginx's default (worker.py enforces them): the whole request head within
    # header_timeout (client_header_timeout 60 s); no wait for the next piece of a body longer than body_timeout
    # (client_body_timeout 60 s), and a body slower than body_min_rate bytes/s once that slack is used up is cut
    # with a 408 (Apache mod_reqtimeout's MinRate=500); an idle keep-alive connection closed after
    # idle_timeout (keepalive_timeout 75 s, longer than nginx's upstream keepalive_timeout of 60 s); a client
    # that takes nothing of a reply for send_timeout is gone (send_timeout 60 s), and its upstream is closed.
    header_timeout: float = 60.0
    body_timeout: float = 60.0
    body_min_rate: int = 500
    idle_timeout: float = 75.0
    send_timeout: float = 60.0
    # Open connections one client address may hold per worker (0: no cap). Generous: Codex with parallel
    # sub-agents holds a few streams and keep-alive connections each; behind nginx every client is one address.
    max_connections_per_address: int = 256
    # SIGTERM: open streams get this long to finish before each is ended with a retryable failure event.
    # 8 s: the whole stop then fits in `docker stop`'s 10 s, the shortest supervisor default (systemd: 90 s,
    # Kubernetes: 30 s), before a SIGKILL would cut streams with no final event.
    shutdown_grace_seconds: float = 8.0
    # An upstream reply past either limit is ended with a failure event (a runaway or stuck stream). Far above any
    # real reply: DeepSeek's 384 K output tokens are ~80 MB of SSE and a few hours at its slowest.
    max_upstream_stream_mb: float = 512.0
    max_upstream_stream_seconds: float = 4 * 3600.0


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    base_url: str
    api_key: str = "env:DEEPSEEK_API_KEY"  # key source, see KEY_SOURCE_HINT
    profile: str = "deepseek"
    connect_timeout: float = 10.0
    read_timeout: float = 900.0  # DeepSeek closes a request that has not started within ~10 min
    pool_size: int = 1000  # idle keep-alive connections kept per upstream; more than that are opened and closed
    # Several keys for one upstream (ops/keypool.py), each a key source like api_key; empty: just api_key.
    api_keys: tuple[str, ...] = ()
    key_strategy: str = "round_robin"  # or "least_busy"
    key_set_aside_seconds: float = 600.0  # a key refused with 401/402 is not tried again for this long

    @property
    def key_sources(self) -> tuple[str, ...]:
        return self.api_keys or (self.api_key,)


@dataclass(frozen=True)
class ModelConfig:
    id: str  # the name clients use
    upstream: str = DEFAULT_UPSTREAM
    upstream_model: str = ""
    thinking: bool = True  # the upstream has a thinking mode (and replays reasoning_content)
    images: bool = False  # the upstream accepts image parts
    stream: bool = True  # the upstream streams; False → one blocking call, replayed as SSE
    context_window: int = 1_000_000
    max_output_tokens: int = 393_216
    effort_map: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_EFFORT_MAP))
    display_name: str = ""
    # How the Messages door (Claude Code) serves this model: "translate" to Chat Completions, or "anthropic":
    # passed through to the upstream's own Anthropic endpoint (DeepSeek's /anthropic) with only the thinking repair.
    messages_upstream: str = "translate"


@dataclass(frozen=True)
class CodexConfig:
    catalog: str = "url"  # "url": Codex fetches the catalog from the proxy; "file": written by `codex setup`


MESSAGES_UPSTREAMS = ("translate", "anthropic")
THINKING_REPAIR_MODES = ("off", "fallback", "always")  # the same as translate.messages_request.REPAIR_MODES


@dataclass(frozen=True)
class ClaudeConfig:
    """The Messages door (Claude Code). `model_map`: (shell pattern, configured model) pairs tried in order after
    the names the config lists (served as themselves) and before the built-in Claude name patterns.
    `thinking_repair`: what a thinking-mode assistant tool-call turn that comes back without its thinking carries."""

    model_map: tuple[tuple[str, str], ...] = ()
    thinking_repair: str = "fallback"


# Gemini CLI's model names → configured models: translate/gemini_models.py.
GEMINI_REPAIR_MODES = THINKING_REPAIR_MODES


@dataclass(frozen=True)
class GeminiConfig:
    """The Gemini door (`[gemini]`): which configured model serves a Gemini model name, and how a thinking-mode turn
    that comes back without its reasoning is repaired."""

    model_patterns: tuple[tuple[str, str, bool], ...] = DEFAULT_GEMINI_MODEL_PATTERNS
    thinking_repair: str = "fallback"
    max_output_tokens: int = 65_536  # sent when the request sets none (Gemini models default to their output limit)


@dataclass(frozen=True)
class StoreConfig:
    """Where stored responses and the shared caches live (deepseek_proxy/store). `url` is "sqlite:///PATH",
    "redis://…" / "rediss://…" / "unix://…" (several instances share one Redis) or "memory://" (one process only)."""

    url: str = ""  # "" until load_config fills in the default: sqlite:///<data dir>/deepseek-proxy/store.db
    ttl_seconds: float = 30 * 86400.0  # stored responses: OpenAI keeps them 30 days
    reasoning_ttl_seconds: float = 7 * 86400.0  # the reasoning fallback cache (keyed by call_id)
    max_response_bytes: int = 16 * MB  # one stored response (Response object + input items), encoded


@dataclass(frozen=True)
class LimitsConfig:
    """Request limits (ops/limits.py). 0 means no limit. Per-key limits set by `keys add --rpm/--concurrency` win
    over key_rpm / key_concurrency."""

    rpm: int = 0  # requests per minute, all clients together
    concurrency: int = 0  # requests in flight (open streams included), all clients together
    key_rpm: int = 0  # per client key
    key_concurrency: int = 0
    queue_ms: int = 2000  # how long a request waits for a concurrency slot before its 429
    slot_ttl_seconds: float = 120.0  # a slot whose holder stopped refreshing it (a killed worker) frees after this


@dataclass(frozen=True)
class OpsConfig:
    """Usage records, prices, metrics and request logs (deepseek_proxy/ops)."""

    usage: bool = True  # keep a usage row per request in the store
    usage_retention_seconds: float = 400 * 86400.0
    # Upstream model → prices in USD per 1M tokens (ops/prices.py PRICES_DEFAULT, dated, unless the file sets them).
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    peak_hours_utc: tuple[tuple[int, int], ...] | None = None  # None: the default list's
    metrics: bool = True  # GET /metrics
    capture_bodies: bool = False  # debugging: keep redacted, size-capped request/response bodies
    capture_dir: str = ""  # default: <state dir>/captures
    capture_max_bytes: int = 64 * 1024
    # Prefix-break detection (ops/prefix.py): each conversation's last upstream prompt is remembered (a fingerprint)
    # and a prompt that stops continuing it is logged and counted. `prefix_memory`: "store" (the [store], seen by
    # every worker) or "process" (each worker's own memory: sees only the turns that worker served).
    detect_prefix_breaks: bool = True
    prefix_memory: str = "store"


PREFIX_MEMORIES = ("store", "process")


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    upstreams: Mapping[str, UpstreamConfig]
    models: Mapping[str, ModelConfig]
    codex: CodexConfig = CodexConfig()
    store: StoreConfig = StoreConfig()
    claude: ClaudeConfig = ClaudeConfig()
    gemini: GeminiConfig = GeminiConfig()
    limits: LimitsConfig = LimitsConfig()
    ops: OpsConfig = OpsConfig()
    path: Path | None = None
    # Where clients reach the proxy when that is not its own bind address (`--proxy-url`, e.g. behind nginx).
    public_url: str | None = None

    def public_base_url(self) -> str:
        if self.public_url:
            return self.public_url
        host = self.server.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.server.port}/v1"

    def model(self, name: str) -> ModelConfig | None:
        return self.models.get(name)

    def listening_at(self, host: str, port: int) -> Config:
        """This config as it applies to a proxy that listens on host:port (not necessarily the configured ones)."""
        return replace(self, server=replace(self.server, host=host, port=port))

    def reached_at(self, proxy_url: str) -> Config:
        """This config for a proxy that clients reach at `proxy_url` (see normalize_proxy_url)."""
        return replace(self, public_url=normalize_proxy_url(proxy_url))


def normalize_proxy_url(url: str) -> str:
    """The proxy's public base URL (ending in /v1) from what a user types: its root (`https://host/deepseek`,
    where nginx forwards to the proxy's `/`) or its /v1 URL."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
        raise ConfigError(f"--proxy-url must be an http:// or https:// URL (the proxy's root or its /v1 URL), "
                          f"got {url!r}")
    return url if url.endswith("/v1") else url + "/v1"


def is_secret_setting(key: str) -> bool:
    return key in SECRET_SETTINGS or (key.startswith("upstreams.") and key.endswith((".api_key", ".api_keys")))


def masked(value: Any) -> str:
    """A secret, described without its value (an `sk-` prefix and the length help tell two keys apart)."""
    if isinstance(value, str):
        if not value:
            return '""'
        return f'"{"sk-" if value.startswith("sk-") else ""}…" (hidden, {len(value)} characters)'
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} (hidden)"
    return "(hidden)"


class KeyUnavailable(Exception):
    """The configured key source gave no key."""


def resolve_key(source: str, env: Mapping[str, str] = os.environ) -> str | None:
    """The upstream key for a key source; None for "client" (the caller's own) and "none"."""
    kind, _, arg = source.partition(":")
    if kind == "env":
        value = env.get(arg, "").strip()
        if not value:
            raise KeyUnavailable(f"environment variable {arg} is not set")
        return value
    if kind == "pass":
        try:
            result = subprocess.run(["pass", "show", arg], capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KeyUnavailable(f"`pass show {arg}` could not run: {exc}") from None
        first_line = result.stdout.splitlines()[0].strip() if result.stdout else ""
        if result.returncode != 0 or not first_line:
            raise KeyUnavailable(f"`pass show {arg}` gave no key (exit {result.returncode})")
        return first_line
    if kind == "file":
        try:
            lines = Path(arg).expanduser().read_text().strip().splitlines()
        except OSError as exc:
            raise KeyUnavailable(f"the key file {arg} cannot be read: {exc.strerror or exc}") from None
        if not lines or not lines[0].strip():
            raise KeyUnavailable(f"the key file {arg} is empty")
        return lines[0].strip()
    return None


def key_source_fix(upstream: UpstreamConfig, *, restart: str = "deepseek-proxy serve") -> str:
    """How to give the proxy the key for an upstream whose key source gave none: the exact command."""
    kind, _, arg = upstream.api_key.partition(":")
    if kind == "env":
        return (f"export {arg}=<your key for {upstream.base_url}> in the shell (or service) that runs "
                f"`{restart}`, then restart it")
    if kind == "pass":
        return f"pass insert {arg}  (the key on its first line), then restart `{restart}`"
    if kind == "file":
        return f"put the key on the first line of {arg} (readable by the proxy), then restart `{restart}`"
    return f"set upstreams.{upstream.name}.api_key in the proxy config ({KEY_SOURCE_HINT})"


def default_models() -> dict[str, ModelConfig]:
    return {
        "deepseek-v4-pro": ModelConfig(
            id="deepseek-v4-pro", upstream_model="deepseek-v4-pro", display_name="DeepSeek V4 Pro"
        ),
        "deepseek-v4-flash": ModelConfig(
            id="deepseek-v4-flash", upstream_model="deepseek-v4-flash", display_name="DeepSeek V4 Flash"
        ),
    }


def default_config_path(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "deepseek-proxy" / "config.toml"


def default_state_dir(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "state")
    return Path(base) / "deepseek-proxy"


def default_data_dir(env: Mapping[str, str] = os.environ) -> Path:
    """The user data dir (XDG_DATA_HOME, what platformdirs' user_data_dir gives on Linux): the response store."""
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "share")
    return Path(base) / "deepseek-proxy"


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the Config. `path` None means $DEEPSEEK_PROXY_CONFIG or the default file, either optional.

    `overrides` are the CLI flags: {"host": ..., "port": ..., "workers": ..., "log_level": ...}.
    """
    explicit = path is not None or bool(env.get("DEEPSEEK_PROXY_CONFIG"))
    file_path = Path(path if path is not None else env.get("DEEPSEEK_PROXY_CONFIG") or default_config_path(env))
    raw = _read_toml(file_path, required=explicit)
    where = str(file_path) if raw is not None else "built-in defaults"
    reader = _Reader(raw or {}, where)
    reader.only_keys("", {"server", "upstreams", "models", "codex", "store", "claude", "gemini", "limits", "usage",
                          "pricing", "metrics", "logs", "cache"})

    server = _server_from(reader, env, overrides or {})
    upstreams = _upstreams_from(reader, env)
    models = _models_from(reader, upstreams)
    codex = _codex_from(reader)
    return Config(
        server=server,
        upstreams=upstreams,
        models=models,
        codex=codex,
        store=_store_from(reader, env),
        claude=_claude_from(reader, models),
        gemini=_gemini_from(reader, models),
        limits=_limits_from(reader),
        ops=_ops_from(reader),
        path=file_path if raw is not None else None,
    )


def _read_toml(path: Path, *, required: bool) -> dict | None:
    if str(path) == os.devnull:
        return {}
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist") from None
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


class _Reader:
    """Typed access to the parsed TOML that names the offending key and file in every error."""

    def __init__(self, data: Mapping[str, Any], where: str):
        self.data = data
        self.where = where

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}: `{key}` {problem}")

    def table(self, key: str) -> Mapping[str, Any]:
        node: Any = self.data
        for part in key.split(".") if key else []:
            node = node.get(part, {}) if isinstance(node, Mapping) else None
            if not isinstance(node, Mapping):
                raise self.fail(key, "must be a table")
        return node

    def only_keys(self, key: str, allowed: set[str]) -> None:
        unknown = sorted(set(self.table(key)) - allowed)
        if unknown:
            dotted = f"{key}.{unknown[0]}" if key else unknown[0]
            raise self.fail(dotted, f"is not a known setting (known here: {', '.join(sorted(allowed))})")

    def get(self, table: str, name: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = self.table(table).get(name, default)
        if value is default:
            return value
        kinds = kind if isinstance(kind, tuple) else (kind,)
        key = f"{table}.{name}"
        # bool is an int in Python; a port of `true` is a mistake, not 1.
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"must be {_kind_name(kinds)}, not a boolean")
        if not isinstance(value, kinds):
            raise self.fail(key, f"must be {_kind_name(kinds)}, got {shown(key, value)}")
        return value


def shown(key: str, value: Any) -> str:
    """A setting's value as an error message may show it: secrets masked."""
    return masked(value) if is_secret_setting(key) else repr(value)


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


class _Origins:
    """Where each server setting's value came from, so an invalid value is blamed on what set it: the file's key,
    the environment variable or the command-line flag (never on "built-in defaults")."""

    def __init__(self, reader: _Reader):
        self.reader = reader
        self.labels: dict[str, str] = {}

    def fail(self, name: str, problem: str) -> ConfigError:
        label = self.labels.get(name)
        if label is None:
            return self.reader.fail(f"server.{name}", problem)
        return ConfigError(f"{label} {problem}")


FLAGS = {"host": "--host", "port": "--port", "workers": "--workers", "log_level": "--log-level"}
SERVER_ENV = {"host": "DEEPSEEK_PROXY_HOST", "port": "DEEPSEEK_PROXY_PORT", "workers": "DEEPSEEK_PROXY_WORKERS",
              "log_level": "DEEPSEEK_PROXY_LOG_LEVEL"}


def _server_from(reader: _Reader, env: Mapping[str, str], overrides: Mapping[str, Any]) -> ServerConfig:
    t = "server"
    reader.only_keys(
        t,
        {"host", "port", "workers", "worker_connections", "max_body_mb", "log_level", "client_keys",
         "reasoning_secret", "retry_after_seconds", "keepalive_interval", "header_timeout", "body_timeout",
         "body_min_rate", "idle_timeout", "send_timeout", "max_connections_per_address", "shutdown_grace_seconds",
         "max_upstream_stream_mb", "max_upstream_stream_seconds"},
    )
    d = ServerConfig()
    origins = _Origins(reader)
    values: dict[str, Any] = {
        "host": reader.get(t, "host", str, d.host),
        "port": reader.get(t, "port", int, d.port),
        "workers": reader.get(t, "workers", int, d.workers),
        "log_level": reader.get(t, "log_level", str, d.log_level),
    }
    max_body_mb = reader.get(t, "max_body_mb", (int, float), d.max_body_bytes / MB)
    client_keys = reader.get(t, "client_keys", list, list(d.client_keys))
    if not all(isinstance(k, str) and k for k in client_keys):
        raise reader.fail("server.client_keys", "must be a list of non-empty strings")
    secret = reader.get(t, "reasoning_secret", str, "")

    # Environment, then CLI flags; each remembers that it set the value.
    for name, variable in SERVER_ENV.items():
        if variable in env:
            values[name] = _int_from_env(env, variable, 0) if name in ("port", "workers") else env[variable]
            origins.labels[name] = f"environment variable {variable}"
    secret = env.get("DEEPSEEK_PROXY_SECRET", secret)
    if env.get("DEEPSEEK_PROXY_CLIENT_KEYS"):
        client_keys = [k.strip() for k in env["DEEPSEEK_PROXY_CLIENT_KEYS"].split(",") if k.strip()]
    for name, flag in FLAGS.items():
        if overrides.get(name) is not None:
            values[name] = overrides[name]
            origins.labels[name] = flag
    host, port, workers, log_level = values["host"], values["port"], values["workers"], values["log_level"]

    if not host:
        raise origins.fail("host", "must not be empty")
    if not 0 <= port <= 65535:
        raise origins.fail("port", f"must be between 0 and 65535, got {port}")
    if workers < 1:
        raise origins.fail("workers", f"must be at least 1, got {workers}")
    if max_body_mb <= 0:
        raise reader.fail("server.max_body_mb", "must be positive")
    if log_level.lower() not in {"debug", "info", "warning", "error", "critical"}:
        raise origins.fail("log_level", f"must be debug, info, warning, error or critical, got {log_level!r}")
    return ServerConfig(
        host=host,
        port=port,
        workers=workers,
        worker_connections=reader.get(t, "worker_connections", int, d.worker_connections),
        max_body_bytes=int(max_body_mb * MB),
        log_level=log_level.lower(),
        client_keys=tuple(client_keys),
        reasoning_secret=secret.encode() if secret else _reasoning_secret(env),
        retry_after_seconds=reader.get(t, "retry_after_seconds", int, d.retry_after_seconds),
        keepalive_interval=float(reader.get(t, "keepalive_interval", (int, float), d.keepalive_interval)),
        max_upstream_stream_mb=_positive(reader, t, "max_upstream_stream_mb", d.max_upstream_stream_mb),
        max_upstream_stream_seconds=_positive(reader, t, "max_upstream_stream_seconds", d.max_upstream_stream_seconds),
        **_edge_limits_from(reader, d),
    )


def _positive(reader: _Reader, table: str, name: str, default: float) -> float:
    value = float(reader.get(table, name, (int, float), default))
    if value <= 0:
        raise reader.fail(f"{table}.{name}", "must be positive")
    return value


def _edge_limits_from(reader: _Reader, d: ServerConfig) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    for name in ("header_timeout", "body_timeout", "idle_timeout", "send_timeout", "shutdown_grace_seconds"):
        value = float(reader.get("server", name, (int, float), getattr(d, name)))
        if value < 0 or (value == 0 and name != "shutdown_grace_seconds"):  # a grace of 0 ends streams at once
            raise reader.fail(f"server.{name}", f"must be a positive number of seconds, got {value:g}")
        limits[name] = value
    for name in ("body_min_rate", "max_connections_per_address"):
        value = reader.get("server", name, int, getattr(d, name))
        if value < 0:
            raise reader.fail(f"server.{name}", f"must be 0 or more, got {value}")
        limits[name] = value
    return limits


def _int_from_env(env: Mapping[str, str], name: str, default: int) -> int:
    if name not in env:
        return default
    try:
        return int(env[name])
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {env[name]!r}") from None


def _reasoning_secret(env: Mapping[str, str]) -> bytes:
    """A per-installation secret kept in the state directory, created once (O_EXCL, so concurrent workers agree)."""
    path = default_state_dir(env) / "reasoning.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        raise ConfigError(f"{path} is not a readable hex secret; delete it to have a new one made") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker won the race: use its secret
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as fh:
        key = secrets.token_bytes(32)
        fh.write(key.hex())
    return key


def _upstreams_from(reader: _Reader, env: Mapping[str, str]) -> dict[str, UpstreamConfig]:
    upstreams = {DEFAULT_UPSTREAM: UpstreamConfig(name=DEFAULT_UPSTREAM, base_url=DEFAULT_BASE_URL)}
    for name in reader.table("upstreams"):
        t = f"upstreams.{name}"
        reader.table(t)
        reader.only_keys(t, {"base_url", "api_key", "profile", "connect_timeout", "read_timeout", "pool_size",
                             "api_keys", "key_strategy", "key_set_aside_seconds"})
        base = upstreams.get(name) or UpstreamConfig(name=name, base_url="", profile="openai", api_key="none")
        api_keys = reader.get(t, "api_keys", list, list(base.api_keys))
        if not all(isinstance(k, str) and k for k in api_keys):
            raise reader.fail(f"{t}.api_keys", "must be a list of key sources (strings)")
        key_strategy = reader.get(t, "key_strategy", str, base.key_strategy)
        if key_strategy not in ("round_robin", "least_busy"):
            raise reader.fail(f"{t}.key_strategy", f'must be "round_robin" or "least_busy", got {key_strategy!r}')
        base_url = reader.get(t, "base_url", str, base.base_url)
        if not base_url:
            raise reader.fail(f"{t}.base_url", "is required")
        upstreams[name] = UpstreamConfig(
            name=name,
            base_url=base_url,
            api_key=reader.get(t, "api_key", str, base.api_key),
            profile=reader.get(t, "profile", str, base.profile),
            connect_timeout=float(reader.get(t, "connect_timeout", (int, float), base.connect_timeout)),
            read_timeout=float(reader.get(t, "read_timeout", (int, float), base.read_timeout)),
            pool_size=reader.get(t, "pool_size", int, base.pool_size),
            api_keys=tuple(api_keys),
            key_strategy=key_strategy,
            key_set_aside_seconds=float(reader.get(t, "key_set_aside_seconds", (int, float),
                                                   base.key_set_aside_seconds)),
        )
    if env.get("DEEPSEEK_BASE_URL"):
        d = upstreams[DEFAULT_UPSTREAM]
        upstreams[DEFAULT_UPSTREAM] = replace(d, base_url=env["DEEPSEEK_BASE_URL"])

    for name, up in upstreams.items():
        where = f"upstreams.{name}"
        if not up.base_url.startswith(("http://", "https://")):
            problem = f"must start with http:// or https://, got {up.base_url!r}"
            if name == DEFAULT_UPSTREAM and env.get("DEEPSEEK_BASE_URL"):
                raise ConfigError(f"environment variable DEEPSEEK_BASE_URL (sets `{where}.base_url`) {problem}")
            raise reader.fail(f"{where}.base_url", problem)
        if up.profile not in PROFILES:
            raise reader.fail(f"{where}.profile", f"must be one of {', '.join(sorted(PROFILES))}, got {up.profile!r}")
        for index, source in enumerate(up.api_keys or (up.api_key,)):
            kind, _, arg = source.partition(":")
            pooled = bool(up.api_keys)
            if not ((kind in ("env", "pass", "file") and arg) or (source in ("client", "none") and not pooled)):
                setting = f"{where}.api_keys[{index}]" if pooled else f"{where}.api_key"
                hint = 'one of "env:VARIABLE", "pass:ENTRY" or "file:/PATH"' if pooled else KEY_SOURCE_HINT
                raise reader.fail(setting, f"must be {hint}, got {_key_source_shown(source)}. "
                                  f"A key itself does not belong in the file: export it, e.g. DEEPSEEK_API_KEY=…, and "
                                  f'write {"" if pooled else "api_key = "}"env:DEEPSEEK_API_KEY" (or "pass:ENTRY" for '
                                  f'a pass entry)')
    return upstreams


def _key_source_shown(value: str) -> str:
    """An invalid key source as an error may show it: only a source-like prefix (`evn:`), never what may be a
    literal key."""
    prefix, colon, rest = value.partition(":")
    if colon and prefix.isalpha() and len(prefix) <= 8:
        return f'"{prefix}:…" (the rest hidden)' if rest else f'"{prefix}:"'
    return masked(value)


def _models_from(reader: _Reader, upstreams: Mapping[str, UpstreamConfig]) -> dict[str, ModelConfig]:
    table = reader.table("models")
    if not table:
        return default_models()
    models = {}
    defaults = default_models()
    for model_id in table:
        t = f"models.{model_id}"
        reader.table(t)
        reader.only_keys(
            t,
            {"upstream", "upstream_model", "thinking", "images", "stream", "context_window", "max_output_tokens",
             "effort_map", "display_name", "messages_upstream"},
        )
        # A model of our own defaults keeps them; any other starts without a thinking mode, since a plain
        # Chat Completions upstream may reject `reasoning_content` on assistant messages.
        base = defaults.get(model_id) or ModelConfig(id=model_id, upstream_model=model_id, thinking=False)
        effort_map = dict(base.effort_map)
        for effort, target in reader.table(f"{t}.effort_map").items():
            if not isinstance(target, str) or target not in UPSTREAM_EFFORTS:
                raise reader.fail(
                    f"{t}.effort_map.{effort}", f"must be one of {', '.join(sorted(UPSTREAM_EFFORTS))}"
                )
            effort_map[effort] = target
        upstream = reader.get(t, "upstream", str, base.upstream)
        if upstream not in upstreams:
            raise reader.fail(f"{t}.upstream", f"names no configured upstream ({', '.join(upstreams)})")
        models[model_id] = ModelConfig(
            id=model_id,
            upstream=upstream,
            upstream_model=reader.get(t, "upstream_model", str, base.upstream_model),
            thinking=reader.get(t, "thinking", bool, base.thinking),
            images=reader.get(t, "images", bool, base.images),
            stream=reader.get(t, "stream", bool, base.stream),
            context_window=reader.get(t, "context_window", int, base.context_window),
            max_output_tokens=reader.get(t, "max_output_tokens", int, base.max_output_tokens),
            effort_map=effort_map,
            display_name=reader.get(t, "display_name", str, base.display_name or model_id),
            messages_upstream=_one_of(reader, t, "messages_upstream", MESSAGES_UPSTREAMS, base.messages_upstream),
        )
    return models


def _one_of(reader: _Reader, table: str, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = reader.get(table, name, str, default)
    if value not in allowed:
        raise reader.fail(f"{table}.{name}", f"must be {' or '.join(repr(a) for a in allowed)}, got {value!r}")
    return value


def _claude_from(reader: _Reader, models: Mapping[str, ModelConfig]) -> ClaudeConfig:
    reader.only_keys("claude", {"model_map", "thinking_repair"})
    model_map = []
    for pattern, target in reader.table("claude.model_map").items():
        if not isinstance(target, str) or target not in models:
            raise reader.fail(f"claude.model_map.{pattern}",
                              f"must name a configured model ({', '.join(models)}), got {target!r}")
        model_map.append((pattern, target))
    repair = _one_of(reader, "claude", "thinking_repair", THINKING_REPAIR_MODES, ClaudeConfig.thinking_repair)
    return ClaudeConfig(model_map=tuple(model_map), thinking_repair=repair)


def _codex_from(reader: _Reader) -> CodexConfig:
    reader.only_keys("codex", {"catalog"})
    catalog = reader.get("codex", "catalog", str, CodexConfig.catalog)
    if catalog not in ("url", "file"):
        raise reader.fail("codex.catalog", f'must be "url" or "file", got {catalog!r}')
    return CodexConfig(catalog=catalog)


STORE_SCHEMES = ("sqlite://", "redis://", "rediss://", "unix://", "memory://")


def _store_from(reader: _Reader, env: Mapping[str, str]) -> StoreConfig:
    t = "store"
    reader.only_keys(t, {"url", "ttl_days", "reasoning_ttl_days", "max_response_mb"})
    d = StoreConfig()
    url = reader.get(t, "url", str, "")
    origin = None
    if env.get("DEEPSEEK_PROXY_STORE_URL"):
        url, origin = env["DEEPSEEK_PROXY_STORE_URL"], "environment variable DEEPSEEK_PROXY_STORE_URL"
    if not url:
        url = f"sqlite:///{default_data_dir(env) / 'store.db'}"
    # Only the scheme is shown: a Redis URL may carry a password.
    if not url.startswith(STORE_SCHEMES) or (url.startswith("sqlite://") and not url[len("sqlite://"):].strip("/")):
        problem = (f"must be sqlite:///PATH, redis://HOST:PORT/DB (rediss://, unix:// too) or memory://, "
                   f"got one starting {url.split(':', 1)[0][:10]!r}:")
        raise ConfigError(f"{origin} (sets `store.url`) {problem}") if origin else reader.fail("store.url", problem)
    values = {}
    for name, default in (("ttl_days", d.ttl_seconds / 86400), ("reasoning_ttl_days", d.reasoning_ttl_seconds / 86400),
                          ("max_response_mb", d.max_response_bytes / MB)):
        value = reader.get(t, name, (int, float), default)
        if value <= 0:
            raise reader.fail(f"store.{name}", f"must be a positive number, got {value:g}")
        values[name] = value
    return StoreConfig(
        url=url,
        ttl_seconds=float(values["ttl_days"]) * 86400,
        reasoning_ttl_seconds=float(values["reasoning_ttl_days"]) * 86400,
        max_response_bytes=int(values["max_response_mb"] * MB),
    )


def _gemini_from(reader: _Reader, models: Mapping[str, ModelConfig]) -> GeminiConfig:
    """`[gemini]`: `models = [{pattern = "gemini-*-pro*", model = "deepseek-v4-pro", thinking = true}, ...]` (first
    match wins; replaces the defaults), `thinking_repair`, `max_output_tokens` (0: the upstream's default)."""
    t = "gemini"
    reader.only_keys(t, {"models", "thinking_repair", "max_output_tokens"})
    d = GeminiConfig()
    repair = reader.get(t, "thinking_repair", str, d.thinking_repair)
    if repair not in GEMINI_REPAIR_MODES:
        raise reader.fail("gemini.thinking_repair", f"must be one of {', '.join(GEMINI_REPAIR_MODES)}, got {repair!r}")
    max_tokens = reader.get(t, "max_output_tokens", int, d.max_output_tokens)
    if max_tokens < 0:
        raise reader.fail("gemini.max_output_tokens", f"must be 0 or more, got {max_tokens}")
    entries = reader.get(t, "models", list, None)
    patterns = d.model_patterns
    if entries is not None:
        built = []
        for i, entry in enumerate(entries):
            key = f"gemini.models[{i}]"
            if not isinstance(entry, Mapping) or set(entry) - {"pattern", "model", "thinking"}:
                raise reader.fail(key, "must be a table {pattern = \"gemini-*\", model = \"NAME\", thinking = true}")
            pattern, model, thinking = entry.get("pattern"), entry.get("model"), entry.get("thinking", True)
            if not isinstance(pattern, str) or not pattern:
                raise reader.fail(f"{key}.pattern", "must be a non-empty string")
            if not isinstance(model, str) or model not in models:
                raise reader.fail(f"{key}.model", f"must name a configured model ({', '.join(models)}), "
                                                   f"got {model!r}")
            if not isinstance(thinking, bool):
                raise reader.fail(f"{key}.thinking", "must be a boolean")
            built.append((pattern, model, thinking))
        patterns = tuple(built)
    return GeminiConfig(model_patterns=patterns, thinking_repair=repair, max_output_tokens=max_tokens)


def _limits_from(reader: _Reader) -> LimitsConfig:
    t = "limits"
    d = LimitsConfig()
    reader.only_keys(t, {"rpm", "concurrency", "key_rpm", "key_concurrency", "queue_ms", "slot_ttl_seconds"})
    values: dict[str, Any] = {}
    for name in ("rpm", "concurrency", "key_rpm", "key_concurrency", "queue_ms"):
        value = reader.get(t, name, int, getattr(d, name))
        if value < 0:
            raise reader.fail(f"{t}.{name}", f"must be 0 (no limit) or more, got {value}")
        values[name] = value
    ttl = float(reader.get(t, "slot_ttl_seconds", (int, float), d.slot_ttl_seconds))
    if ttl < 5:
        raise reader.fail(f"{t}.slot_ttl_seconds", f"must be at least 5 seconds, got {ttl:g}")
    return LimitsConfig(slot_ttl_seconds=ttl, **values)


PRICE_FIELDS = ("cache_hit", "cache_miss", "output", "peak_cache_hit", "peak_cache_miss", "peak_output")


def _ops_from(reader: _Reader) -> OpsConfig:
    d = OpsConfig()
    reader.only_keys("usage", {"enabled", "retention_days"})
    reader.only_keys("metrics", {"enabled"})
    reader.only_keys("logs", {"capture_bodies", "capture_dir", "capture_max_kb"})
    reader.only_keys("pricing", {"peak_hours_utc", "models"})
    reader.only_keys("cache", {"detect_prefix_breaks", "prefix_memory"})
    prefix_memory = reader.get("cache", "prefix_memory", str, d.prefix_memory)
    if prefix_memory not in PREFIX_MEMORIES:
        raise reader.fail("cache.prefix_memory", f"must be one of {', '.join(PREFIX_MEMORIES)}, got {prefix_memory!r}")
    retention = reader.get("usage", "retention_days", (int, float), d.usage_retention_seconds / 86400)
    if retention <= 0:
        raise reader.fail("usage.retention_days", f"must be a positive number, got {retention:g}")
    prices: dict[str, dict[str, float]] = {}
    for model in reader.table("pricing.models"):
        t = f"pricing.models.{model}"
        reader.table(t)
        reader.only_keys(t, set(PRICE_FIELDS))
        entry = {}
        for name in PRICE_FIELDS:
            value = reader.get(t, name, (int, float), None)
            if value is not None:
                if value < 0:
                    raise reader.fail(f"{t}.{name}", "must be 0 or more (USD per 1M tokens)")
                entry[name] = float(value)
        missing = [n for n in ("cache_hit", "cache_miss", "output") if n not in entry]
        if missing:
            raise reader.fail(f"{t}.{missing[0]}", "is required (USD per 1M tokens)")
        prices[model] = entry
    peak = reader.get("pricing", "peak_hours_utc", list, None)
    peak_hours = None
    if peak is not None:
        if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(h, int) and 0 <= h <= 24 for h in p)
                   and p[0] < p[1] for p in peak):
            raise reader.fail("pricing.peak_hours_utc", "must be a list of [start, end] hours (UTC, 0-24), "
                              "e.g. [[1, 4], [6, 10]]; [] for no peak hours")
        peak_hours = tuple((p[0], p[1]) for p in peak)
    capture_kb = reader.get("logs", "capture_max_kb", (int, float), d.capture_max_bytes / 1024)
    if capture_kb <= 0:
        raise reader.fail("logs.capture_max_kb", "must be positive")
    return OpsConfig(
        usage=reader.get("usage", "enabled", bool, d.usage),
        usage_retention_seconds=float(retention) * 86400,
        prices=prices,
        peak_hours_utc=peak_hours,
        metrics=reader.get("metrics", "enabled", bool, d.metrics),
        capture_bodies=reader.get("logs", "capture_bodies", bool, d.capture_bodies),
        capture_dir=reader.get("logs", "capture_dir", str, d.capture_dir),
        capture_max_bytes=int(capture_kb * 1024),
        detect_prefix_breaks=reader.get("cache", "detect_prefix_breaks", bool, d.detect_prefix_breaks),
        prefix_memory=prefix_memory,
    )
