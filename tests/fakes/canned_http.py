"""A raw HTTP/1.1 server on loopback that answers every request with the same bytes, head and body in one write.

For what the fake DeepSeek cannot do on purpose: a body that arrives in the same packet as the headers, or a
connection closed after a reply *without* `Connection: close` (the client pools it and must notice the close).
"""

from __future__ import annotations

import socket
import threading


class CannedHTTPServer:
    def __init__(self, reply: bytes, *, replies_per_connection: int | None = None):
        """`replies_per_connection`: close the connection after that many replies (None: keep it open)."""
        self.reply = reply
        self.replies_per_connection = replies_per_connection
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.client_ports: list[int] = []
        self.closed_one = threading.Event()  # set each time the server has closed a connection itself
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, address = self.listener.accept()
            except OSError:
                return  # close()d
            self.client_ports.append(address[1])
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            data, replies = b"", 0
            while self.replies_per_connection is None or replies < self.replies_per_connection:
                head, sep, rest = data.partition(b"\r\n\r\n")
                if sep and len(rest) >= _content_length(head):
                    data = rest[_content_length(head):]
                    connection.sendall(self.reply)
                    replies += 1
                    continue
                received = connection.recv(65536)
                if not received:
                    return  # the client closed it
                data += received
        self.closed_one.set()

    def close(self) -> None:
        self.listener.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0
