"""Reading a streamed upstream body with as little Python per network read as possible.

requests/urllib3 hand a chunked body over one HTTP chunk at a time, through several layers of Python per chunk;
an upstream that flushes every SSE event as its own chunk (DeepSeek does) then costs that much per token. Here
what http.client buffered along with the headers is taken once, without waiting, and from then on the socket is
read directly: one `recv()` returns everything that has arrived, possibly many events, and the chunked framing is
removed by a small state machine. requests still sends the request, follows the pool and the timeouts; once the
body is complete the connection goes back to the pool as usual.

Anything unexpected (another adapter, a compressed body) falls back to `iter_content(chunk_size=None)`, read
by a helper greenlet (a thread outside gevent) so that silences still give idle ticks on that path too.
`DEEPSEEK_PROXY_BODY_READER=iter_content` forces the fallback everywhere: that is how the benchmark compares the
two readers in one run (README, Performance).
"""

from __future__ import annotations

import os
import queue
import ssl
import threading
from collections.abc import Iterator

import requests

READ_SIZE = 65536
FORCE_ITER_CONTENT = os.environ.get("DEEPSEEK_PROXY_BODY_READER") == "iter_content"


class ChunkedDecoder:
    """HTTP/1.1 chunked transfer coding → payload bytes. feed() returns the payload in `data`; `done` once the
    last chunk (size 0) and its trailer have been read."""

    def __init__(self) -> None:
        self._buffer = b""
        self._remaining = 0  # payload bytes still due in the current chunk
        self._state = "size"  # size → data → crlf → size ... → trailer → done
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buffer = self._buffer + data if self._buffer else data
        out: list[bytes] = []
        pos = 0
        end = len(buffer)
        while pos < end:
            state = self._state
            if state == "data":
                take = min(self._remaining, end - pos)
                out.append(buffer[pos:pos + take])
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = "crlf"
            elif state == "crlf":
                line_end = buffer.find(b"\n", pos)
                if line_end < 0:
                    break
                pos = line_end + 1
                self._state = "size"
            elif state == "size":
                line_end = buffer.find(b"\n", pos)
                if line_end < 0:
                    break
                size_text = buffer[pos:line_end].split(b";", 1)[0].strip()
                try:
                    self._remaining = int(size_text, 16)
                except ValueError:
                    raise requests.exceptions.ChunkedEncodingError(f"bad chunk size {size_text[:20]!r}") from None
                pos = line_end + 1
                self._state = "data" if self._remaining else "trailer"
            elif state == "trailer":
                line_end = buffer.find(b"\n", pos)
                if line_end < 0:
                    break
                line = buffer[pos:line_end].strip()
                pos = line_end + 1
                if not line:
                    self._state = "done"
                    self.done = True
            else:  # done: nothing may follow on this response
                pos = end
        self._buffer = buffer[pos:] if pos < end else b""
        return out[0] if len(out) == 1 else b"".join(out)


def iter_body(response: requests.Response, *, idle_interval: float | None = None) -> Iterator[bytes]:
    """The body's bytes as they arrive. Raises requests.ConnectionError / ChunkedEncodingError when it breaks.

    With `idle_interval`, an empty b"" is yielded whenever that many seconds pass without a byte, so the caller can
    keep its own client's idle timer alive (and look at its client); the read timeout requests set still bounds
    the silence as a whole. Whatever the framing: chunked, sized, compressed or until the connection closes.
    """
    raw = response.raw
    http_response = getattr(raw, "_fp", None)  # http.client.HTTPResponse inside urllib3's response
    reader = getattr(http_response, "fp", None)  # the socket's BufferedReader (holds what came with the headers)
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    encoding = response.headers.get("content-encoding", "identity").lower()
    if (FORCE_ITER_CONTENT or http_response is None or reader is None or sock is None or not hasattr(reader, "read1")
            or encoding not in ("identity", "")):
        yield from iter_content_with_ticks(response, idle_interval)
        return

    read_timeout = sock.gettimeout()
    wait = idle_interval if idle_interval and (read_timeout is None or idle_interval < read_timeout) else read_timeout
    chunked = ChunkedDecoder() if getattr(http_response, "chunked", False) else None
    remaining = getattr(http_response, "length", None)  # Content-Length still due, or None
    complete = False
    try:
        # First whatever http.client buffered along with the headers. The socket is non-blocking for that one
        # read: a blocking read1() would hold a READ_SIZE buffer for as long as the upstream thinks (its TTFT).
        sock.settimeout(0.0)
        data = b""
        while True:  # read1 returns at most READ_SIZE: loop until the reader has nothing more
            try:
                piece = reader.read1(READ_SIZE) or b""  # b"": nothing (more) buffered yet
            except (BlockingIOError, ssl.SSLWantReadError):
                piece = b""  # how a TLS socket says "nothing yet"
            data += piece
            if len(piece) < READ_SIZE:
                break
        # From here on the socket is read directly: no buffer layers, and a timeout there is recoverable. The
        # reader and its 8 KiB buffer are not needed again; closing it leaves the socket open, as at the end of
        # any response.
        http_response.close()
        sock.settimeout(wait)
        while True:
            if data:
                if chunked is not None:
                    payload = chunked.feed(data)
                    if payload:
                        yield payload
                    if chunked.done:
                        complete = True
                        return
                elif remaining is not None:
                    payload = data[:remaining]
                    remaining -= len(payload)
                    yield payload
                else:
                    yield data
            if remaining == 0:  # the Content-Length is read (at once for Content-Length: 0)
                complete = True
                return
            silent = 0.0
            while True:
                try:
                    # recv() allocates its buffer only once data is there: a silent stream holds no read buffer.
                    data = sock.recv(READ_SIZE)
                    break
                except TimeoutError:
                    pass
                # The tick is yielded outside the except clause: a generator suspended inside one keeps the
                # exception and its traceback alive until it resumes (per silent stream, measured in RSS).
                silent += wait
                if read_timeout is not None and silent >= read_timeout:
                    raise requests.exceptions.ReadTimeout(f"the upstream sent nothing for {silent:.0f} s")
                yield b""
            if not data:
                # End of connection: complete only for a body that runs until the connection closes.
                complete = chunked is None and remaining is None
                if not complete:
                    raise requests.exceptions.ChunkedEncodingError("the upstream closed the connection mid-body")
                return
    except requests.RequestException:
        raise  # already in requests' terms (they are OSErrors too)
    except OSError as exc:
        raise requests.ConnectionError(f"upstream read failed: {exc.__class__.__name__}") from None
    finally:
        if complete and (chunked is not None or remaining == 0):
            # The whole body is read (http.client's reader is closed already): the connection is reusable.
            sock.settimeout(read_timeout)
            raw.release_conn()
        else:
            raw.close()  # a half-read connection can never be reused


_END = object()


def iter_content_with_ticks(response: requests.Response, idle_interval: float | None) -> Iterator[bytes]:
    """`requests`' own `iter_content(chunk_size=None)` (decompression included), with the same idle ticks.

    iter_content blocks until bytes arrive, so it runs in a helper (a greenlet under the server's gevent) that
    hands each piece over through a queue; waiting on the queue with a timeout gives the ticks. Closing this
    generator closes the response, which ends the helper's read.
    """
    if not idle_interval:
        yield from response.iter_content(chunk_size=None)
        return
    pieces: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            for piece in response.iter_content(chunk_size=None):
                pieces.put(piece)
            pieces.put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            pieces.put(exc)

    threading.Thread(target=read, daemon=True, name="upstream-body").start()
    try:
        while True:
            try:
                piece = pieces.get(timeout=idle_interval)
            except queue.Empty:
                piece = None
            if piece is None:  # (yielded outside the except clause, as above)
                yield b""
                continue
            if piece is _END:
                return
            if isinstance(piece, BaseException):
                if isinstance(piece, requests.RequestException):
                    raise piece
                raise requests.ConnectionError(f"upstream read failed: {piece.__class__.__name__}")
            if piece:
                yield piece
    finally:
        response.close()
