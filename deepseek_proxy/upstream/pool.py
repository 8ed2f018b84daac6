"""requests' pooled adapter, with a cheaper check of a pooled connection before it is reused, the connection pool
of a URL looked up once rather than on every request, and a request's head and body sent in one `send`.

Before reusing a pooled connection, urllib3 asks whether the server has closed it meanwhile: a poll with a zero
timeout. Under gevent the patched poll goes through the hub (new watchers, a Timeout, a switch there and back)
on every upstream request: about 5% of the proxy's CPU per non-streamed request, and one more hub round trip
before the upstream sees the request. A zero-timeout poll never blocks, so the original system call answers the
same question in place, with the same meaning: a readable idle connection is closed or broken, never reusable.

Which pool serves a request is the same answer every time for the same URL and TLS settings, but requests works
it out again per request (`get_connection_with_tls_context`: the URL parsed, the pool key built and normalised,
and with a CA bundle named in REQUESTS_CA_BUNDLE a `stat` of it): 35-70 µs before the upstream sees the request.
The adapter keeps the answer per (URL, verify, cert), through that method, which requests documents as the one
to override. Closing the adapter forgets them, and a pool that was closed is looked up afresh; requests sent
through a proxy are left to requests each time.

urllib3 sends a request's head (`endheaders()`) and then its body (`send(body)`): two system calls, two TCP
segments, and the upstream is woken by a head it cannot act on yet. On the 2-core benchmark machine the upstream
then often runs before the body leaves: the body went out ~200 µs after the head (perf trace of the worker,
bench (a)). Here the head waits for the body's first piece and leaves with it in one `send`, when that piece
is small enough that copying it costs less than a system call (a multi-MB Codex history still goes as head,
then body, as before). Only documented http.client methods are overridden (`endheaders`, `send`, `getresponse`,
`close`): whatever the caller does after `endheaders()` (send a body, send nothing, read the response), a held
head is sent first, so the bytes on the wire are the same in every case.
"""

from __future__ import annotations

import select
import socket

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

try:
    from gevent.monkey import get_original

    _poll = get_original("select", "poll")  # the unpatched one, also after gevent's monkey-patching
except ImportError:  # pragma: no cover - gevent is a dependency; kept for use outside the server
    _poll = select.poll


def readable_now(sock) -> bool:
    poller = _poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


class _CheapLivenessCheck:
    sock: socket.socket | None  # the urllib3 connection's; this mixin only precedes HTTP(S)Connection

    @property
    def is_connected(self) -> bool:
        return self.sock is not None and not readable_now(self.sock)


COALESCE_LIMIT = 64 * 1024  # a body up to this size is copied behind the head (one send); a larger one follows it


class _HeadWithBody:
    """The request head is held by `endheaders()` and sent with the body's first piece (module docstring)."""

    _holding = False
    _held: bytes | None = None

    def endheaders(self, message_body=None, *, encode_chunked=False) -> None:
        self._holding = message_body is None  # with a body, http.client sends both in one call itself
        try:
            super().endheaders(message_body, encode_chunked=encode_chunked)  # type: ignore[misc]
        finally:
            self._holding = False

    def send(self, data) -> None:
        if self._holding and type(data) is bytes:
            self._held = data
            return
        head, self._held = self._held, None  # taken first: a connect() inside send() starts with nothing held
        if head is not None:
            if type(data) is bytes and len(data) <= COALESCE_LIMIT:
                data = head + data
            else:
                super().send(head)  # type: ignore[misc]
        super().send(data)  # type: ignore[misc]

    def getresponse(self, *args, **kwargs):
        head, self._held = self._held, None
        if head is not None:  # a request without a body: its head alone
            super().send(head)  # type: ignore[misc]
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]

    def close(self) -> None:
        self._held = None
        super().close()  # type: ignore[misc]


class _Connection(_HeadWithBody, _CheapLivenessCheck, HTTPConnection):
    pass


class _TLSConnection(_HeadWithBody, _CheapLivenessCheck, HTTPSConnection):
    pass


class _Disposable:
    disposed = False  # closed by the pool manager: never handed out again

    def close(self) -> None:
        self.disposed = True
        super().close()  # type: ignore[misc]


class _Pool(_Disposable, HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(_Disposable, HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


MAX_KNOWN_POOLS = 64  # distinct (URL, verify, cert) remembered; an upstream client uses one or two


class PooledAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}
        self._known_pools: dict[tuple, HTTPConnectionPool] = {}

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None) -> HTTPConnectionPool:
        if proxies:
            return super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        key = (request.url, verify, cert)
        pool = self._known_pools.get(key)
        if pool is None or getattr(pool, "disposed", False):
            pool = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
            if len(self._known_pools) >= MAX_KNOWN_POOLS:
                self._known_pools.clear()
            self._known_pools[key] = pool
        return pool

    def close(self) -> None:
        self._known_pools.clear()  # what requests would use next comes from the (cleared) pool manager again
        super().close()
