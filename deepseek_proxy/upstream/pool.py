"""requests' pooled adapter, with a cheaper check of a pooled connection before it is reused.

Before reusing a pooled connection, urllib3 asks whether the server has closed it meanwhile: a poll with a zero
timeout. Under gevent the patched poll goes through the hub (new watchers, a Timeout, a switch there and back)
on every upstream request: about 5% of the proxy's CPU per non-streamed request, and one more hub round trip
before the upstream sees the request. A zero-timeout poll never blocks, so the original system call answers the
same question in place, with the same meaning: a readable idle connection is closed or broken, never reusable.
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


class _Connection(_CheapLivenessCheck, HTTPConnection):
    pass


class _TLSConnection(_CheapLivenessCheck, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


class PooledAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}
