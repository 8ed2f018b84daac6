"""The gunicorn worker: gunicorn's gevent worker running gevent's WSGI server, with time limits at the edge, a
graceful stop, and a leaner write path.

**Time limits.** gevent.pywsgi waits forever for a request head, a body, or the next request on a keep-alive
connection: 60 sockets that send nothing locked every client out of a worker with 50 connections. Every read from
a client goes through `_ClientReader`, which gives the socket a timeout (a public gevent/socket seam) computed
from the phase the connection is in: waiting for a request (idle_timeout; header_timeout for the first one),
reading its head (the whole head within header_timeout, so a client dripping one byte at a time gains nothing),
reading its body (never a wait longer than body_timeout for the next piece, and no slower than body_min_rate
bytes/s once body_timeout of slack is used up: a 408 in the client's error format), or draining an unread body
after the response (nginx's lingering close: 30 s at most, 5 s per read). A write waits at most send_timeout for
room in the socket: a client that stops reading a stream is dropped and its upstream closed. A connection over
max_connections_per_address from one address is refused with a 503 at once, before it can hold a slot.

**Graceful stop.** SIGTERM: stop accepting, close idle keep-alive connections, let requests in progress finish
for shutdown_grace_seconds, then raise deepseek_proxy.shutdown.ServerShuttingDown inside each one still open (the
relay ends its stream with a retryable failure event) and exit 0.

**Write path.** A streamed reply is many small writes (one per upstream read, usually one event of ~200 bytes).
gevent's WSGI handler frames each as an HTTP chunk by copying it twice into a bytearray, then hands it to gevent's
`sendall`, which asks the kernel for the socket's send-buffer size (a `getsockopt` system call) and goes through
four Python frames before the one `send` that does the work. Here a chunk is framed with one copy and sent with
one cooperative `send`; only what a full socket buffer leaves over goes through `sendall`, which waits for room.
At 200 streams of 100 tokens/s: 54 → 51 µs of proxy CPU per event (median of 3 interleaved runs).

`_write`/`_sendall` are internal to gevent.pywsgi.WSGIHandler; the integration tests drive every response shape
through them on the installed gevent, and tests/unit/test_worker.py checks framing, short sends and a client gone
mid-write. Everything else overrides documented methods (handle, handle_one_request, get_environ,
run_application, start_response, handle_error) and passes the handler its own `rfile`.
"""

from __future__ import annotations

import io
import logging
import socket
import time
from collections import Counter
from dataclasses import dataclass

import gevent
from gevent.pool import Pool
from gunicorn.http.wsgi import base_environ
from gunicorn.sock import ssl_context
from gunicorn.workers.ggevent import (
    VERSION,
    GeventPyWSGIWorker,
    PyWSGIHandler,
    PyWSGIServer,
)
from werkzeug.exceptions import RequestTimeout

from . import faults
from .config import ServerConfig
from .shutdown import ServerShuttingDown

log = logging.getLogger("deepseek_proxy.edge")

# nginx's lingering close (lingering_time 30 s, lingering_timeout 5 s): how long an unread request body is drained
# after the response so the client sees the response rather than a reset, before the connection is closed instead.
DRAIN_SECONDS = 30.0
DRAIN_READ_SECONDS = 5.0
# After the grace period, how long streams get to write their final event before the worker exits anyway.
FINAL_EVENT_SECONDS = 3.0

# The environ key of a callable saying whether the server is stopping (read by frontdoors/responses_ws.py).
STOPPING_KEY = "deepseek_proxy.stopping"

# Connection phases: what the next read from the client is for.
IDLE, HEAD, BODY, DRAIN = "idle", "head", "body", "drain"


@dataclass(frozen=True)
class EdgeLimits:
    header_timeout: float
    body_timeout: float
    body_min_rate: int
    idle_timeout: float
    send_timeout: float
    max_connections_per_address: int
    shutdown_grace_seconds: float

    @classmethod
    def of(cls, server: ServerConfig) -> EdgeLimits:
        return cls(**{name: getattr(server, name) for name in cls.__dataclass_fields__})


class BodyTooSlow(RequestTimeout):
    """Raised into the app from a body read: the app's error handler answers 408 in the front door's format."""

    description = ("The request body arrived too slowly; the proxy stopped waiting for it "
                   "(server.body_timeout and server.body_min_rate in the proxy's config).")


class _ClientReader(io.RawIOBase):
    """The raw side of the handler's `rfile`: each read waits at most what the connection's phase allows."""

    def __init__(self, sock, handler: StreamingHandler):
        self._sock = sock
        self._handler = handler
        self._resting_timeout = handler.server.limits.send_timeout

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        handler = self._handler
        wait = handler.read_allowance()
        sock = self._sock
        if wait <= 0:
            raise handler.timed_out()
        sock.settimeout(wait)
        try:
            received = sock.recv_into(buffer)
        except TimeoutError:
            raise handler.timed_out() from None
        finally:
            sock.settimeout(self._resting_timeout)  # what writes wait at most for room (see _sendall)
        handler.received(received)
        return received


class EdgeServer(PyWSGIServer):
    """gevent's WSGI server plus what the edge needs across connections: limits, the open connections, and the
    count per client address."""

    def __init__(self, *args, limits: EdgeLimits, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.connections: set[StreamingHandler] = set()
        self.per_address: Counter[str] = Counter()
        self.draining = False
        self._refusals_logged: dict[str, float] = {}

    def log_refusal(self, address: str) -> None:
        """One line per address per minute: a flood of refused connections must not flood the log."""
        now = time.monotonic()
        if now - self._refusals_logged.get(address, -60.0) >= 60.0:
            if len(self._refusals_logged) > 1000:  # many addresses (an IPv6 range): forget, rather than grow
                self._refusals_logged.clear()
            self._refusals_logged[address] = now
            log.warning("refused connections from %s: more than %d open (server.max_connections_per_address)",
                        address, self.limits.max_connections_per_address)


class StreamingHandler(PyWSGIHandler):
    server: EdgeServer
    # Set by gevent's handler (untyped): the response status, negated after a socket error as gevent does; and the
    # request stream, which __init__ replaces with our time-limited reader.
    code: int
    rfile: io.BufferedIOBase
    phase = IDLE
    deadline = 0.0  # time.monotonic() by which the current phase's reads must be done
    body_started = 0.0
    body_bytes = 0
    requests_done = 0
    timed_out_in: str | None = None
    request_id = ""
    greenlet = None

    def __init__(self, sock, address, server, rfile=None):
        super().__init__(sock, address, server, rfile)
        if rfile is None:
            self.rfile.close()  # gevent's own makefile(); ours has the time limits
            self.rfile = io.BufferedReader(_ClientReader(sock, self))

    # --- connection ---------------------------------------------------------------------------------------------

    def handle(self) -> None:
        server = self.server
        address = self.client_address[0] if isinstance(self.client_address, tuple) else ""
        cap = server.limits.max_connections_per_address
        if cap and server.per_address[address] >= cap:
            server.log_refusal(address)
            self._refuse(503, "Too many open connections from this address; try again shortly.",
                         "too_many_connections", extra=b"Retry-After: 1\r\n")
            return
        server.per_address[address] += 1
        server.connections.add(self)
        self.greenlet = gevent.getcurrent()
        self.deadline = time.monotonic() + server.limits.header_timeout
        self.socket.settimeout(server.limits.send_timeout)
        try:
            super().handle()
        finally:
            server.connections.discard(self)
            server.per_address[address] -= 1
            if not server.per_address[address]:
                del server.per_address[address]

    def _refuse(self, status: int, message: str, code: str, extra: bytes = b"") -> None:
        """Answer without reading the request (the request may not even have arrived) and close."""
        sock = self.socket
        try:
            sock.settimeout(1.0)
            sock.sendall(self._error_response(status, message, code, "/", faults.new_request_id(), extra))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            self.rfile.close()
            sock.close()

    def _error_response(self, status: int, message: str, code: str, path: str, request_id: str,
                        extra: bytes = b"") -> bytes:
        body = faults.error_body(path, status, message, code=code, request_id=request_id)
        reason = {400: b"Bad Request", 408: b"Request Timeout", 414: b"URI Too Long",
                  503: b"Service Unavailable"}.get(status, b"Error")
        return (b"HTTP/1.1 %d %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"x-request-id: %b\r\n%bConnection: close\r\n\r\n%b"
                % (status, reason, len(body), request_id.encode(), extra, body))

    # --- requests -----------------------------------------------------------------------------------------------

    def handle_one_request(self):
        limits = self.server.limits
        if self.requests_done:
            if self.server.draining:
                return None  # stopping: no new request on an old connection
            self.deadline = time.monotonic() + limits.idle_timeout
        self.phase = IDLE
        self.timed_out_in = None
        result = super().handle_one_request()
        self.requests_done += 1
        if self.timed_out_in == HEAD:
            # Part of a head came, then not the rest in time: say so (Apache mod_reqtimeout's 408) and close.
            log.info("closed a connection from %s: request head not complete within %gs",
                     self.client_address[0], limits.header_timeout)
            return "408", self._error_response(408, "The request head did not arrive in time.", "request_timeout",
                                               "/", faults.new_request_id())
        if self.timed_out_in is not None:
            return None  # idle (nothing sent: close quietly, as every server does) or a body/drain cut-off
        if isinstance(result, tuple):
            # gevent refused the head itself (malformed, or a request line over 8 KiB): its plain-text answer,
            # in the client's format with a request id instead.
            status = int(result[0])
            message = ("The request line is too long." if status == 414
                       else "The request is not valid HTTP/1.1.")
            return result[0], self._error_response(status, message, "invalid_request", self.path or "/",
                                                   faults.new_request_id())
        return result

    def read_allowance(self) -> float:
        """Seconds the next read may wait; called by _ClientReader before every read."""
        now = time.monotonic()
        phase = self.phase
        if phase == BODY:
            limits = self.server.limits
            wait = limits.body_timeout
            if limits.body_min_rate:
                wait = min(wait, self.body_started + limits.body_timeout
                           + self.body_bytes / limits.body_min_rate - now)
            return wait
        if phase == DRAIN:
            return min(DRAIN_READ_SECONDS, self.deadline - now)
        return self.deadline - now

    def received(self, count: int) -> None:
        if self.phase == IDLE and count:
            self.phase = HEAD
            if self.requests_done:  # a keep-alive connection: the head's clock starts with its first byte
                self.deadline = time.monotonic() + self.server.limits.header_timeout
        elif self.phase == BODY:
            self.body_bytes += count

    def timed_out(self) -> Exception:
        """The exception a read raises when its time is up: one the code above that read knows what to do with."""
        phase = self.phase
        self.timed_out_in = phase
        self.close_connection = True  # the stream is at an unknown point: no further request on it
        self.deadline = 0.0  # every later read on this connection fails at once
        if phase == BODY:
            self.phase = DRAIN
            log.info("request %s: body too slow from %s (%d bytes in %.1fs); answering 408", self.request_id,
                     self.client_address[0], self.body_bytes, time.monotonic() - self.body_started)
            return BodyTooSlow()
        return TimeoutError("timed out")  # gevent treats it as a connection error: closes the connection

    def get_environ(self):
        env = super().get_environ()
        self.request_id = env[faults.ENVIRON_KEY] = faults.new_request_id()
        env[STOPPING_KEY] = self._server_stopping  # a WebSocket, idle between turns, closes itself at the stop
        self.phase = BODY
        self.body_started = time.monotonic()
        self.body_bytes = 0
        return env

    def run_application(self) -> None:
        try:
            super().run_application()
        finally:
            if self.phase == BODY:
                self.phase = DRAIN
                self.deadline = time.monotonic() + DRAIN_SECONDS

    def _server_stopping(self) -> bool:
        return self.server.draining

    def start_response(self, status, headers, exc_info=None):
        if status[:3] == "101":
            # The connection now speaks another protocol (frontdoors/responses_ws.py): the app's body iterable is
            # its whole life, and no HTTP request follows on it.
            self.close_connection = True
            return super().start_response(status, headers, exc_info)
        if self.server.draining or self.close_connection:
            # Tell the client this connection ends with this response (gevent says so only to HTTP/1.0 clients).
            if not any(name.lower() == "connection" for name, _ in headers):
                headers = [*headers, ("Connection", "close")]
            self.close_connection = True
        return super().start_response(status, headers, exc_info)

    def handle_error(self, t, v, tb) -> None:
        """An exception escaped the app (a streamed body fails only once it is being sent): answer in the client's
        format with the request id, or, with the response under way, end the connection."""
        path = (self.environ or {}).get("PATH_INFO", "/")
        if isinstance(v, gevent.GreenletExit):  # killed by the stop: nothing to report, nothing more to send
            self.close_connection = True
            return
        if isinstance(v, TimeoutError) and self.headers_sent:
            log.info("request %s: the client took nothing for %gs; closing", self.request_id,
                     self.server.limits.send_timeout)
            self.close_connection = True
            return
        if isinstance(v, ServerShuttingDown):
            log.info("request %s: ended by the shutdown after the grace period", self.request_id)
        else:
            log.error("request %s: unhandled error in %s %s", self.request_id, self.command, path,
                      exc_info=(t, v, tb))
        if self.response_length or self.headers_sent:
            self.close_connection = True
            return
        fault = faults.input_fault(v)
        if fault is not None:
            status, message, code = fault[0], fault[1], "invalid_request_error"
        elif isinstance(v, ServerShuttingDown):
            status, message, code = 503, "The proxy is restarting; try again.", "server_shutting_down"
        else:
            status, message, code = 500, faults.unexpected_message(self.request_id), "server_error"
        body = faults.error_body(path, status, message, code=code, request_id=self.request_id)
        self.close_connection = True
        try:
            self.start_response(f"{status} {'Bad Request' if status == 400 else 'Error'}",
                                [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                 (faults.HEADER, self.request_id)])
            self.write(body)
        except OSError:
            pass

    # --- write path ---------------------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if not data:
            return  # an app may yield b""; in chunked coding an empty chunk would end the body
        if self.response_use_chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        self._sendall(data)

    def _sendall(self, data: bytes) -> None:
        sock = self.socket
        try:
            sent = sock.send(data)
            if sent < len(data):
                # The socket buffer is full. Each send waits at most the socket's timeout (send_timeout) for room,
                # as nginx's send_timeout: a client that takes nothing for that long is gone (socket.timeout, and
                # the relay closes the upstream). gevent's sendall would bound the whole write instead.
                view = memoryview(data)
                while sent < len(data):
                    sent += sock.send(view[sent:])
        except OSError as ex:
            # What gevent's own _sendall records: the request is logged as a socket error, not a success.
            self.status = f"socket error: {ex}"
            if self.code > 0:
                self.code = -self.code
            raise
        self.response_length += len(data)


class StreamingWorker(GeventPyWSGIWorker):
    wsgi_handler = StreamingHandler
    quick_stop = False

    def handle_quit(self, sig, frame) -> None:
        # SIGQUIT, which the arbiter sends on Ctrl-C: the quick stop. Stop accepting and let gunicorn's own quit
        # handler end the process (after its 0.1 s): open streams are cut, quietly; the terminal shows one
        # "deepseek-proxy stopped". SIGTERM is the graceful stop.
        self.quick_stop = True
        super().handle_quit(sig, frame)

    def run(self) -> None:
        limits = EdgeLimits.of(_server_config(self.wsgi))
        ssl_args = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        servers: list[EdgeServer] = []
        for listener in self.sockets:
            listener.setblocking(1)
            environ = base_environ(self.cfg)
            environ.update({"wsgi.multithread": True, "SERVER_SOFTWARE": VERSION})
            server = EdgeServer(listener, application=self.wsgi, spawn=Pool(self.worker_connections), log=self.log,
                                handler_class=self.wsgi_handler, environ=environ, limits=limits, **ssl_args)
            server.start()
            servers.append(server)

        while self.alive:
            self.notify()
            for _ in range(10):  # notice SIGTERM within 0.1 s, tell the arbiter we live once a second
                if not self.alive:
                    break
                gevent.sleep(0.1)
        try:
            if self.quick_stop:
                for server in servers:
                    server.close()
            else:
                self._stop(servers, limits.shutdown_grace_seconds)
        except Exception:
            log.exception("stopping: the graceful stop failed")

    def _stop(self, servers: list[EdgeServer], grace: float) -> None:
        started = time.monotonic()
        for server in servers:
            server.close()  # stop accepting; the arbiter has closed its copy of the listening socket already
            server.draining = True
            for handler in list(server.connections):
                if handler.phase == IDLE and handler.greenlet is not None:
                    handler.greenlet.kill(block=False)  # an idle keep-alive connection: nothing to wait for
        busy = sum(len(server.connections) for server in servers)
        if busy:
            log.info("stopping: %d requests in progress get up to %gs to finish", busy, grace)
        if self._wait_idle(servers, started + grace):
            return
        remaining = [h for server in servers for h in server.connections]
        log.warning("stopping: %d requests still open after %gs; ending them", len(remaining), grace)
        for handler in remaining:
            if handler.greenlet is None:
                continue
            if handler.phase == BODY:  # the app is running: its stream ends with a retryable failure event
                handler.greenlet.kill(ServerShuttingDown("the server is stopping"), block=False)
            else:
                handler.greenlet.kill(block=False)
        self._wait_idle(servers, time.monotonic() + FINAL_EVENT_SECONDS)

    def _wait_idle(self, servers: list[EdgeServer], deadline: float) -> bool:
        for server in servers:
            if not server.pool.join(timeout=max(0.0, deadline - time.monotonic())):
                return False
        return True


def _server_config(app) -> ServerConfig:
    """The app's [server] settings, or the defaults for an app that is not the proxy (e.g. the benchmark's)."""
    gateway = getattr(app, "extensions", {}).get("deepseek_proxy")  # frontdoors.common.EXTENSION
    return gateway.config.server if gateway is not None else ServerConfig()
