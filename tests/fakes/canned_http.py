"""A raw HTTP/1.1 server on loopback that answers every request with the same bytes, head and body in one write.

For what the fake DeepSeek cannot do on purpose: a body that arrives in the same packet as the headers, or a
connection closed after a reply *without* `Connection: close` (the client pools it and must notice the close).
"""

from __future__ import annotations

import socket
import threading

from tests.fakes.loopback_http import LoopbackHTTPServer, content_length


class CannedHTTPServer(LoopbackHTTPServer):
    def __init__(self, reply: bytes, *, replies_per_connection: int | None = None):
        """`replies_per_connection`: close the connection after that many replies (None: keep it open)."""
        self.reply = reply
        self.replies_per_connection = replies_per_connection
        self.closed_one = threading.Event()  # set each time the server has closed a connection itself
        super().__init__()

    def _answer(self, connection: socket.socket) -> None:
        """Every request on the connection, not just the first (a pooled client sends several)."""
        with connection:
            data, replies = b"", 0
            while self.replies_per_connection is None or replies < self.replies_per_connection:
                head, sep, rest = data.partition(b"\r\n\r\n")
                if sep and len(rest) >= content_length(head):
                    data = rest[content_length(head):]
                    self.requests += 1  # counted before the reply leaves: a client that has it may check the count
                    connection.sendall(self.reply)
                    replies += 1
                    continue
                received = connection.recv(65536)
                if not received:
                    return  # the client closed it
                data += received
        self.closed_one.set()
