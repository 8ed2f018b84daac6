"""The gunicorn worker: gunicorn's gevent worker running gevent's WSGI server, with a leaner write path.

A streamed reply is many small writes (one per upstream read, usually one event of ~200 bytes). gevent's
WSGI handler frames each as an HTTP chunk by copying it twice into a bytearray, then hands it to gevent's
`sendall`, which asks the kernel for the socket's send-buffer size (a `getsockopt` system call) and goes through
four Python frames before the one `send` that does the work. Here a chunk is framed with one copy and sent with
one cooperative `send`; only what a full socket buffer leaves over goes through `sendall`, which waits for room.
At 200 streams of 100 tokens/s: 54 → 51 µs of proxy CPU per event (median of 3 interleaved runs).

Both overridden methods are internal to gevent.pywsgi.WSGIHandler; the integration tests drive every response
shape through them (streamed, blocking, errors) on the installed gevent, and tests/unit/test_worker.py checks
framing, short sends and a client gone mid-write.
"""

from __future__ import annotations

from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler


class StreamingHandler(PyWSGIHandler):
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
                sock.sendall(memoryview(data)[sent:])
        except OSError as ex:
            # What gevent's own _sendall records: the request is logged as a socket error, not a success.
            self.status = "socket error: %s" % ex
            if self.code > 0:
                self.code = -self.code
            raise
        self.response_length += len(data)


class StreamingWorker(GeventPyWSGIWorker):
    wsgi_handler = StreamingHandler
