"""A cheap load client: raw non-blocking sockets on one epoll loop, no HTTP library.

Why not requests/httpx/aiohttp: the client runs on the same two cores as the proxy and the fake upstream. At
1,000 streams x 100 tokens/s it receives ~100 k events per second, so its per-event cost must be a couple of
microseconds. Here each ``recv`` costs one syscall plus a few C-level byte searches: we never JSON-decode
streamed events, we count marker substrings in whole lines (a JSON string value like
``"response.output_text.delta"`` can only appear, quoted, as an event's ``type``; raw newlines never occur inside
an SSE data line, so counting on complete lines is exact).

Two protocols (``Kind``):
* ``RESPONSES``: ``POST {base}/v1/responses``; first-token = first ``response.output_text.delta``;
  done = ``response.completed``; ``response.failed`` / ``response.incomplete`` / ``error`` events are errors.
* ``CHAT``: ``POST {upstream}/chat/completions`` straight to the fake upstream (the limit);
  first-token = first ``"delta":{"content":"`` (the fake writes content chunks exactly so); done = ``[DONE]``.

Per request we record: start, first-token time, done time, number of delta events, the gaps between delta
arrivals (several deltas in one ``recv`` arrive together: one real gap and zeros), status and error.
"""

from __future__ import annotations

import argparse
import errno
import json
import re
import select
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Kind:
    name: str
    path: str
    delta: bytes                   # counted with bytes.count on complete lines
    done: bytes
    fail: tuple[bytes, ...]        # any of these in a stream = error
    fail_re: re.Pattern | None = None


RESPONSES = Kind("responses", "/v1/responses", b'"response.output_text.delta"', b'"response.completed"',
                 (b'"response.failed"', b'"response.incomplete"'), re.compile(rb'"type": ?"error"'))
CHAT = Kind("chat", "/chat/completions", b'"delta":{"content":"', b"data: [DONE]", ())
# The Messages door (Claude Code): first token = first text_delta; done = message_stop; an `error` event fails.
MESSAGES = Kind("messages", "/v1/messages", b'"text_delta"', b'"message_stop"', (b"event: error",))
# The Gemini door (`?alt=sse`): every text part is `"text":"…"` (thought parts only with includeThoughts, which the
# bench does not ask for); the last object carries finishReason; a failure is a bare `{"error":…}` line.
GEMINI = Kind("gemini", "/v1beta/models/deepseek-v4-pro:streamGenerateContent?alt=sse", b'{"text":"',
              b'"finishReason"', (b'{"error":',))


def gemini_path(stream: bool, model: str = "deepseek-v4-pro") -> str:
    return f"/v1beta/models/{model}:" + ("streamGenerateContent?alt=sse" if stream else "generateContent")


def gemini_body(text: str = "hi") -> bytes:
    return json.dumps({"contents": [{"role": "user", "parts": [{"text": text}]}]}).encode()


def responses_body(stream: bool = True, text: str = "hi", model: str = "deepseek-v4-pro",
                   store: bool | None = False) -> bytes:
    """A small Codex-like Responses request: `store: false`, as Codex sends it (None leaves `store` out: the
    API's default, stored)."""
    body: dict = {"model": model, "stream": stream,
                  "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]}
    if store is not None:
        body["store"] = store
    return json.dumps(body).encode()


def messages_body(stream: bool = True, text: str = "hi", model: str = "deepseek-v4-pro") -> bytes:
    """A small Claude Code-like Messages request (about the size of responses_body's)."""
    return json.dumps({"model": model, "max_tokens": 32000, "stream": stream,
                       "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]}).encode()


def body_for(kind: Kind, stream: bool = True, text: str = "hi", model: str = "deepseek-v4-pro") -> bytes:
    """The small request body of `kind`'s protocol."""
    make = {"responses": responses_body, "messages": messages_body}.get(kind.name, chat_body)
    return make(stream, text=text, model=model)


def chat_body(stream: bool = True, text: str = "hi", model: str = "deepseek-v4-pro") -> bytes:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


@dataclass
class Result:
    start: float
    first: float | None = None     # first delta (stream) - absolute perf_counter time
    done: float | None = None      # response complete
    deltas: int = 0
    gaps: list = field(default_factory=list)
    status: int = 0
    error: str | None = None
    body_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and self.done is not None

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.start

    @property
    def latency(self) -> float | None:
        return None if self.done is None else self.done - self.start


_HEAD, _CHUNKED, _LENGTH, _CLOSE = range(4)


class Conn:
    """One keep-alive connection running requests back to back."""

    def __init__(self, client: Client):
        self.c = client
        self.sock: socket.socket | None = None
        self.res: Result | None = None

    # -- connection / request -------------------------------------------------------------------------------
    def open(self, now: float) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.fd = s, s.fileno()
        self.connected = False
        self.c.conns[self.fd] = self
        err = s.connect_ex(self.c.addr)
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, "connect")
        self.c.ep.register(self.fd, select.EPOLLOUT)
        self._begin(now)

    def _begin(self, now: float) -> None:
        self.res = Result(start=now)
        self.out = self.c.request
        self.state, self.raw, self.lines = _HEAD, b"", b""
        self.chunk_left, self.need_crlf, self.body_left = 0, False, 0
        self.last_delta = 0.0
        self.finished_events = False  # saw done marker

    def on_writable(self, now: float) -> None:
        if not self.connected:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                return self._fail(now, f"connect: {errno.errorcode.get(err, err)}")
            self.connected = True
        try:
            n = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError as e:
            return self._fail(now, f"send: {e}")
        self.out = self.out[n:]
        if not self.out:
            self.c.ep.modify(self.fd, select.EPOLLIN)

    # -- response -------------------------------------------------------------------------------------------
    def on_readable(self, now: float) -> None:
        try:
            n = self.sock.recv_into(self.c.rbuf)
            data = self.c.rbuf[:n].tobytes()
        except BlockingIOError:
            return
        except OSError as e:
            return self._fail(now, f"recv: {e}")
        if not data:
            if self.state == _CLOSE:
                return self._complete(now, reuse=False)
            return self._fail(now, "connection closed early")
        self.res.body_bytes += len(data)
        if self.state == _HEAD:
            data = self.raw + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.raw = data
                return
            self._parse_head(data[:end])
            data = data[end + 4:]
            self.raw = b""
            if self.res.status != 200:
                self.res.error = f"HTTP {self.res.status}"
        if self.state == _CHUNKED:
            self._dechunk(data, now)
        elif self.state == _LENGTH:
            self.body_left -= len(data)
            self._payload(data, now)
            if self.body_left <= 0:
                self._complete(now, reuse=True)
        else:
            self._payload(data, now)

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self.res.status = int(lines[0].split(b" ", 2)[1])
        self.state, self.keep = _CLOSE, True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip().lower()
            if name == b"transfer-encoding" and b"chunked" in value:
                self.state = _CHUNKED
            elif name == b"content-length" and self.state != _CHUNKED:
                self.state, self.body_left = _LENGTH, int(value)
            elif name == b"connection" and value == b"close":
                self.keep = False

    def _dechunk(self, data: bytes, now: float) -> None:
        buf = self.raw + data if self.raw else data
        pos, n = 0, len(buf)
        parts = []
        while pos < n:
            if self.chunk_left:
                take = min(self.chunk_left, n - pos)
                parts.append(buf[pos:pos + take])
                pos += take
                self.chunk_left -= take
                if not self.chunk_left:
                    self.need_crlf = True
            elif self.need_crlf:
                if n - pos < 2:
                    break
                pos += 2
                self.need_crlf = False
            else:
                i = buf.find(b"\r\n", pos)
                if i < 0:
                    break
                size = int(buf[pos:i].split(b";", 1)[0], 16)
                if size == 0:
                    # last chunk; we send no trailers, and neither do the servers here
                    self.raw = b""
                    if parts:
                        self._payload(b"".join(parts), now)
                    return self._complete(now, reuse=self.keep)
                self.chunk_left = size
                pos = i + 2
        self.raw = buf[pos:]
        if parts:
            self._payload(parts[0] if len(parts) == 1 else b"".join(parts), now)

    def _payload(self, data: bytes, now: float) -> None:
        c, res = self.c, self.res
        if not c.stream:
            return  # non-stream: we only need the end of the body (and the status)
        # Count markers only on complete lines; keep the partial last line for the next recv.
        buf = self.lines + data if self.lines else data
        cut = buf.rfind(b"\n") + 1
        if cut == 0:
            self.lines = buf
            return
        whole, self.lines = buf[:cut], buf[cut:]
        kind = c.kind
        n = whole.count(kind.delta)
        if n:
            if res.first is None:
                res.first = now
                n -= 1
            else:
                res.gaps.append(now - self.last_delta)
                n -= 1
            if n:
                res.gaps.extend([0.0] * n)
                n = 0
            self.last_delta = now
            res.deltas = len(res.gaps) + 1
        if kind.fail and (any(f in whole for f in kind.fail) or (kind.fail_re and kind.fail_re.search(whole))):
            res.error = res.error or "failed event: " + whole[:200].decode("utf-8", "replace")
        if kind.done in whole:
            self.finished_events = True

    def _complete(self, now: float, reuse: bool) -> None:
        res = self.res
        if self.c.stream and not self.finished_events and res.error is None:
            res.error = "stream ended without completion event"
        res.done = now
        self.c.finish(self, res, now, reuse)

    def _fail(self, now: float, msg: str) -> None:
        self.res.error = msg
        self.c.finish(self, self.res, now, reuse=False)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.c.ep.unregister(self.fd)
            except (OSError, ValueError):
                pass
            self.c.conns.pop(self.fd, None)
            self.sock.close()
            self.sock = None


def http_request(url: str, kind: Kind, body: bytes, stream: bool, path: str | None = None) -> tuple[tuple, bytes]:
    """(address, the whole POST as bytes) for a request of `kind` to `url` (loopback only)."""
    u = urlsplit(url)
    host = u.hostname or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError("the load client only talks to loopback")
    addr = ("127.0.0.1", u.port or 80)
    full_path = (u.path.rstrip("/") + (path or kind.path)) if u.path not in ("", "/") else (path or kind.path)
    request = (f"POST {full_path} HTTP/1.1\r\nHost: 127.0.0.1:{addr[1]}\r\n"
               f"Authorization: Bearer sk-bench\r\nContent-Type: application/json\r\n"
               f"Accept: {'text/event-stream' if stream else 'application/json'}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return addr, request


def open_held_streams(url: str, kind: Kind, n: int) -> list[socket.socket]:
    """n connections, each with one streamed request sent and nothing read: streams the server holds open until
    the caller closes them."""
    addr, request = http_request(url, kind, body_for(kind, True), True)
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(addr))
            socks[-1].sendall(request)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


class Client:
    """Runs ``total`` requests over ``concurrency`` connections (or for ``duration`` seconds)."""

    def __init__(self, url: str, kind: Kind, body: bytes, stream: bool, concurrency: int, total: int | None = None,
                 duration: float | None = None, timeout: float = 30.0, keepalive: bool = True,
                 path: str | None = None):
        self.addr, self.request = http_request(url, kind, body, stream, path)
        self.kind, self.stream = kind, stream
        self.concurrency, self.total, self.duration = concurrency, total, duration
        self.timeout, self.keepalive = timeout, keepalive
        self.conns: dict[int, Conn] = {}
        # One receive buffer for all connections: recv() of a fresh 256 KiB bytes per call costs an mmap/munmap
        # pair (glibc's mmap threshold is 128 KiB); recv_into a reused buffer plus one exact-size copy does not.
        self.rbuf = memoryview(bytearray(262144))
        self.results: list[Result] = []

    def _may_start(self, now: float) -> bool:
        if self.total is not None and self.started >= self.total:
            return False
        if self.duration is not None and now - self.t0 >= self.duration:
            return False
        return True

    def finish(self, conn: Conn, res: Result, now: float, reuse: bool) -> None:
        self.results.append(res)
        self.active -= 1
        if res.error is not None:
            self.errors += 1
        if reuse and self.keepalive and res.error is None and self._may_start(now):
            # keep-alive: next request on the same connection
            conn._begin(now)
            self.started += 1
            self.active += 1
            self.ep.modify(conn.fd, select.EPOLLOUT)
            conn.on_writable(now)
            return
        conn.close()
        if self._may_start(now):
            self._launch(now)

    def _launch(self, now: float) -> None:
        conn = Conn(self)
        self.started += 1
        self.active += 1
        try:
            conn.open(now)
        except OSError as e:
            conn.res = conn.res or Result(start=now)
            conn._fail(now, f"connect: {e}")

    def run(self) -> list[Result]:
        self.ep = select.epoll()
        self.started = self.active = self.errors = 0
        self.t0 = t0 = time.perf_counter()
        deadline = t0 + self.timeout
        try:
            for _ in range(self.concurrency):
                if not self._may_start(t0):
                    break
                self._launch(time.perf_counter())
            poll, conns = self.ep.poll, self.conns
            perf = time.perf_counter
            while self.active:
                now = perf()
                if now >= deadline:
                    break
                events = poll(min(0.5, deadline - now), 2048)
                for fd, ev in events:
                    conn = conns.get(fd)
                    if conn is None:
                        continue
                    now = perf()
                    if ev & select.EPOLLIN or ev & (select.EPOLLERR | select.EPOLLHUP) and conn.connected:
                        conn.on_readable(now)
                    elif ev & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP):
                        conn.on_writable(now)
            now = perf()
            for conn in list(conns.values()):
                if conn.res is not None and conn.res.done is None:
                    conn.res.error = "timeout"
                    self.results.append(conn.res)
                conn.close()
        finally:
            self.ep.close()
        self.wall = time.perf_counter() - t0
        return self.results


def run(url: str, kind: Kind, stream: bool = True, concurrency: int = 1, total: int | None = None,
        duration: float | None = None, timeout: float = 30.0, body: bytes | None = None) -> tuple[list[Result], float]:
    """Convenience wrapper: returns (results, wall seconds)."""
    if body is None:
        body = body_for(kind, stream)
    cl = Client(url, kind, body, stream, concurrency, total=total, duration=duration, timeout=timeout)
    res = cl.run()
    return res, cl.wall


def pct(values, p: float):
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence; None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Responses / Chat SSE load client (loopback only)")
    ap.add_argument("url", help="base URL, e.g. http://127.0.0.1:8787 (proxy) or http://127.0.0.1:18080 (upstream)")
    ap.add_argument("--chat", action="store_true", help="speak Chat Completions (direct to the upstream)")
    ap.add_argument("--non-stream", action="store_true")
    ap.add_argument("-c", "--concurrency", type=int, default=1)
    ap.add_argument("-n", "--requests", type=int, default=None)
    ap.add_argument("-d", "--duration", type=float, default=None)
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args(argv)
    total = a.requests if a.requests or a.duration else a.concurrency
    res, wall = run(a.url, CHAT if a.chat else RESPONSES, not a.non_stream, a.concurrency, total, a.duration,
                    a.timeout)
    ok = [r for r in res if r.ok]
    errs = [r.error for r in res if not r.ok]
    ttft = [r.ttft for r in ok if r.ttft is not None]
    lat = [r.latency for r in ok]
    gaps = [g for r in ok for g in r.gaps]
    print(f"{len(ok)}/{len(res)} ok in {wall:.3f}s ({len(ok) / wall:.1f} req/s)")
    if ttft:
        print(f"ttft p50 {pct(ttft, 50) * 1e3:.2f} ms  p99 {pct(ttft, 99) * 1e3:.2f} ms")
    if lat:
        print(f"latency p50 {pct(lat, 50) * 1e3:.2f} ms  p99 {pct(lat, 99) * 1e3:.2f} ms")
    if gaps:
        print(f"deltas {sum(r.deltas for r in ok)}  gap p99 {pct(gaps, 99) * 1e3:.2f} ms")
    if errs:
        print("errors:", sorted(set(errs))[:5])


if __name__ == "__main__":
    main()
