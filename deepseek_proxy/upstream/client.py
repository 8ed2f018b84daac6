"""The HTTP client for one Chat Completions upstream: a pooled requests.Session, key resolution, error mapping.

Connections are reused across requests (TLS set-up is paid once per connection, not per request). Response
bodies are read with iter_content(chunk_size=None), which hands over whatever bytes arrived, as they arrive.
"""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
from typing import Any, Mapping

from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import requests

from ..config import UpstreamConfig
from ..core.errors import ErrorKind, ProxyError
from ..jsonfast import JSONDecodeError, dumps, loads
from .pool import PooledAdapter
from .profiles import profile_named

log = logging.getLogger("deepseek_proxy.upstream")


class KeyUnavailable(Exception):
    """The configured key source gave no key."""


# The upstream refused or failed a request before any reply byte: a neutral error each front door renders.
UpstreamError = ProxyError


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
    return None


def _certificate_rejected(exc: BaseException) -> bool:
    """Whether a failed request failed on the upstream's certificate (not on a dropped handshake, a plain-HTTP
    port or a timeout, which requests also reports as SSLError or ConnectionError). The cause sits a few
    wrappers down: requests → urllib3's MaxRetryError.reason → urllib3's SSLError → ssl's exception."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        error = todo.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, ssl.SSLCertVerificationError):
            return True
        todo += [e for e in (*error.args, getattr(error, "reason", None), error.__cause__, error.__context__)
                 if isinstance(e, BaseException)]
    return False


class UpstreamClient:
    def __init__(self, config: UpstreamConfig, *, env: Mapping[str, str] = os.environ, retry_after: int = 2):
        self.config = config
        self.profile = profile_named(config.profile)
        self.chat_url = config.base_url.rstrip("/") + "/chat/completions"
        self.models_url = config.base_url.rstrip("/") + "/models"
        self.retry_after = retry_after
        self.session = requests.Session()
        # Proxy settings (HTTPS_PROXY, NO_PROXY) are read from the environment once, here, instead of on every
        # request together with a ~/.netrc look-up: that is most of what requests costs per call.
        self.session.proxies = {k: v for k, v in getproxies().items() if k in ("http", "https")}
        if self.session.proxies and proxy_bypass(urlsplit(config.base_url).hostname or ""):
            self.session.proxies = {}
        self.session.trust_env = False
        # A private CA (corporate TLS inspection) is named the way requests users expect; read once, like proxies.
        self.verify: str | bool = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or True
        adapter = PooledAdapter(pool_connections=4, pool_maxsize=config.pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # identity: a compressed event stream would be held back by the compressor, and read through urllib3.
        self.session.headers.update({"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                                     "Accept-Encoding": "identity"})
        # The chat request is prepared once (URL, session headers) and copied per call, then sent through the
        # Session's pooled adapter: Session.request would merge settings, cookies and hooks again on every call,
        # a third of the proxy's CPU per request. A POST is never redirected, so nothing else is lost.
        self._chat_template = self.session.prepare_request(requests.Request("POST", self.chat_url))
        self._adapter = self.session.get_adapter(self.chat_url)
        self.key_error: str | None = None
        try:
            self._key = resolve_key(config.api_key, env)
        except KeyUnavailable as exc:
            self._key, self.key_error = None, str(exc)

    @property
    def passes_client_key(self) -> bool:
        return self.config.api_key == "client"

    def _headers(self, client_key: str | None) -> dict[str, str]:
        key = client_key if self.passes_client_key else self._key
        if key is None and not self.passes_client_key and self.config.api_key != "none":
            raise ProxyError(ErrorKind.PROXY_KEY_MISSING, f"no upstream API key: {self.key_error}", 500)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def post_chat(self, body: Mapping[str, Any], *, client_key: str | None = None) -> requests.Response:
        """Send a chat completion request. Returns the open response (status 2xx) or raises ProxyError.

        Front doors do not call this: they go through `upstream.chat.open_chat`, which prepares the request and
        reads the reply."""
        stream = bool(body.get("stream"))
        request = self._chat_template.copy()
        request.headers.update(self._headers(client_key))
        request.prepare_body(dumps(body), None)
        try:
            response = self._adapter.send(request, stream=stream, proxies=self.session.proxies, verify=self.verify,
                                          timeout=(self.config.connect_timeout, self.config.read_timeout))
        except requests.Timeout:
            raise ProxyError(ErrorKind.TIMEOUT, "the upstream did not answer in time", 504) from None
        except requests.ConnectionError as exc:
            if _certificate_rejected(exc):
                # Reachable, but not trusted: most often a private CA (TLS inspection) the proxy was not told about.
                log.warning("upstream %s: TLS certificate not verified (REQUESTS_CA_BUNDLE names extra CAs)",
                            self.config.name)
                raise ProxyError(ErrorKind.UPSTREAM_UNAVAILABLE,
                                 f"the upstream's ({self.config.name}) TLS certificate could not be verified; "
                                 "a private CA can be named with REQUESTS_CA_BUNDLE", 502,
                                 upstream_code="upstream_tls_error") from None
            log.warning("upstream %s unreachable: %s", self.config.name, exc.__class__.__name__)
            raise ProxyError(ErrorKind.UPSTREAM_UNAVAILABLE, f"the upstream ({self.config.name}) is unreachable",
                             502) from None
        if response.status_code >= 400:
            try:
                raise self._error_from(response)
            finally:
                response.close()
        # The sent body (a whole Codex history, up to tens of MB) would otherwise live as long as the stream.
        response.request.body = None
        return response

    def list_models(self, *, client_key: str | None = None) -> dict:
        response = self.session.get(self.models_url, headers=self._headers(client_key), verify=self.verify,
                                    timeout=(self.config.connect_timeout, 30))
        if response.status_code >= 400:
            raise self._error_from(response)
        return response.json()

    def _error_from(self, response: requests.Response) -> UpstreamError:
        raw = response.content[:65536]
        message, upstream_code, param = raw.decode("utf-8", "replace").strip() or response.reason, None, None
        try:
            error = loads(raw).get("error")
            if isinstance(error, dict):
                message = error.get("message") or message
                upstream_code = error.get("code") if isinstance(error.get("code"), str) else None
                param = error.get("param")
            elif isinstance(error, str):
                message = error
        except (JSONDecodeError, AttributeError):
            pass
        status = response.status_code
        error = self.profile.classify_error(status, message, upstream_code, param=param)
        if status == 429 or status == 503:
            header = response.headers.get("retry-after")
            error.retry_after = int(header) if header and header.isdigit() else self.retry_after
        log.info("upstream %s answered %s (%s)", self.config.name, status, error.kind.value)
        return error
