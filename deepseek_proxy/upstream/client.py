"""The HTTP client for one Chat Completions upstream: a pooled requests.Session, key resolution, error mapping.

Connections are reused across requests (TLS set-up is paid once per connection, not per request). Response
bodies are read with iter_content(chunk_size=None), which hands over whatever bytes arrived, as they arrive.
"""

from __future__ import annotations

import email.utils
import html
import logging
import math
import os
import re
import ssl
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import requests

# Key sources are resolved in config (the server's master process checks them without importing requests).
from ..config import KeyUnavailable, UpstreamConfig, key_source_fix, resolve_key  # noqa: F401 - re-exported
from ..core.errors import ErrorKind, ProxyError
from ..jsonfast import JSONDecodeError, dumps, loads
from .pool import PooledAdapter
from .profiles import profile_named

log = logging.getLogger("deepseek_proxy.upstream")


# The upstream refused or failed a request before any reply byte: a neutral error each front door renders.
UpstreamError = ProxyError


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
        self.session.headers.update({"Content-Type": "application/json",
                                     "Accept": "application/json, text/event-stream",
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

    def _headers(self, client_key: str | None, api_key: str | None = None) -> dict[str, str]:
        if api_key:  # a key of the upstream's pool, picked for this call (ops/keypool.py)
            return {"Authorization": f"Bearer {api_key}"}
        key = client_key if self.passes_client_key else self._key
        if key is None and not self.passes_client_key and self.config.api_key != "none":
            # 401: no request can succeed until the proxy's operator gives it a key; the message says whose
            # configuration it is, so a client (and its user) does not blame its own key or wait for capacity.
            raise ProxyError(ErrorKind.PROXY_KEY_MISSING,
                             f"deepseek-proxy itself has no API key for its upstream `{self.config.name}` "
                             f"({self.config.base_url}): {self.key_error}. This is the proxy's configuration, "
                             f"not your request or your key. Fix: {key_source_fix(self.config)}.", 401,
                             upstream_code="upstream_key_missing")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def post_chat(self, body: Mapping[str, Any], *, client_key: str | None = None,
                  api_key: str | None = None) -> requests.Response:
        """Send a chat completion request. Returns the open response (status 2xx) or raises ProxyError.

        `api_key`: the upstream key for this call (a key pool's pick); without it, the upstream's configured key
        (or the client's own, for `api_key = "client"`).

        Front doors do not call this: they go through `upstream.chat.open_chat`, which prepares the request and
        reads the reply."""
        stream = bool(body.get("stream"))
        request = self._chat_template.copy()
        request.headers.update(self._headers(client_key, api_key))
        request.prepare_body(dumps(body), None)
        try:
            response = self._adapter.send(request, stream=stream, proxies=self.session.proxies, verify=self.verify,
                                          timeout=(self.config.connect_timeout, self.config.read_timeout))
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise self.transport_error(exc) from None
        if response.status_code >= 400:
            try:
                raise self._error_from(response)
            finally:
                response.close()
        # The sent body (a whole Codex history, up to tens of MB) would otherwise live as long as the stream.
        response.request.body = None
        return response

    def transport_error(self, exc: requests.Timeout | requests.ConnectionError) -> ProxyError:
        """A request that got no answer, as a neutral error (logged without the request): a timeout, an
        untrusted certificate or an unreachable upstream. Every way to this upstream says it the same."""
        if isinstance(exc, requests.Timeout):
            return ProxyError(ErrorKind.TIMEOUT, "the upstream did not answer in time", 504)
        if _certificate_rejected(exc):
            # Reachable, but not trusted: most often a private CA (TLS inspection) the proxy was not told about.
            log.warning("upstream %s: TLS certificate not verified (REQUESTS_CA_BUNDLE names extra CAs)",
                        self.config.name)
            return ProxyError(ErrorKind.UPSTREAM_UNAVAILABLE,
                              f"the upstream's ({self.config.name}) TLS certificate could not be verified; "
                              "a private CA can be named with REQUESTS_CA_BUNDLE", 502,
                              upstream_code="upstream_tls_error")
        log.warning("upstream %s unreachable: %s", self.config.name, exc.__class__.__name__)
        return ProxyError(ErrorKind.UPSTREAM_UNAVAILABLE, f"the upstream ({self.config.name}) is unreachable", 502)

    def list_models(self, *, client_key: str | None = None, api_key: str | None = None) -> dict:
        response = self.session.get(self.models_url, headers=self._headers(client_key, api_key), verify=self.verify,
                                    timeout=(self.config.connect_timeout, 30))
        if response.status_code >= 400:
            raise self._error_from(response)
        return response.json()

    def _error_from(self, response: requests.Response) -> UpstreamError:
        raw = read_error_body(response)
        message, upstream_code, param = readable_error_text(raw, response.status_code, response.reason), None, None
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
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            error.retry_after = retry_after if retry_after is not None else self.retry_after
        log.info("upstream %s answered %s (%s)", self.config.name, status, error.kind.value)
        return error


MAX_ERROR_BODY = 64 * 1024  # an error body is read up to this much: a message, not a download
_ERROR_TEXT_LIMIT = 300  # characters of a non-JSON error body shown to the client
_HTML_TITLE = re.compile(rb"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_HTML_HIDDEN = re.compile(rb"<(script|style|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(rb"<[^>]*>")


def read_error_body(response: requests.Response, limit: int = MAX_ERROR_BODY) -> bytes:
    """At most `limit` bytes of an error reply's body. Streamed replies are read only that far (the caller closes
    the connection); a body that breaks off mid-read gives what arrived."""
    body = bytearray()
    try:
        for piece in response.iter_content(chunk_size=16 * 1024):
            body += piece
            if len(body) >= limit:
                break
    except (requests.RequestException, OSError):
        pass
    return bytes(body[:limit])


def readable_error_text(raw: bytes, status: int, reason: str | None) -> str:
    """An error body that is not an OpenAI error object, as one line a person can read: an HTML page (a corporate
    proxy's or a CDN's) becomes the status and the page's title, never its tags."""
    head = f"The upstream answered HTTP {status}{' ' + reason if reason else ''}"
    text = raw.strip()
    if not text:
        return head
    if text.startswith(b"<") or b"<html" in text[:1024].lower():
        match = _HTML_TITLE.search(text)
        words = match.group(1) if match else _HTML_TAG.sub(b" ", _HTML_HIDDEN.sub(b" ", text))
        line = _one_line(html.unescape(words.decode("utf-8", "replace")))
        return f"{head} (an HTML page{': ' + line if line else ''})"
    return _one_line(text.decode("utf-8", "replace"))


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _ERROR_TEXT_LIMIT else line[:_ERROR_TEXT_LIMIT] + "…"


def parse_retry_after(value: str | None, now: float | None = None) -> int | None:
    """Retry-After in whole seconds: delay-seconds or an HTTP date (RFC 9110 §10.2.3); None when absent or
    unreadable. A date in the past means: now (0)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    when = email.utils.mktime_tz((*parsed[:9], parsed[9] or 0))  # an HTTP date is always GMT
    seconds = when - (time.time() if now is None else now)
    return max(0, math.ceil(seconds))
