"""The raw HTTP/1.1 server on loopback the byte-for-byte fakes are built on (what the fake DeepSeek cannot send on
purpose): it accepts connections on 127.0.0.1, one thread each, and a subclass writes the reply."""

from __future__ import annotations

import socket
import threading


class LoopbackHTTPServer:
    """Accepts connections on 127.0.0.1, reads one request from each (head and sized body) and hands the connection
    to `_reply`, which writes whatever bytes the test needs; the connection is closed after it returns."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self.client_ports: list[int] = []  # the client's end of each connection, in the order they came
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
            data = b""
            while b"\r\n\r\n" not in data:
                received = connection.recv(65536)
                if not received:
                    return
                data += received
            head, _, rest = data.partition(b"\r\n\r\n")
            length = content_length(head)
            while len(rest) < length:
                rest += connection.recv(65536)
            self.requests += 1
            self._reply(connection)

    def _reply(self, connection: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.listener.close()


def content_length(head: bytes) -> int:
    """The Content-Length of a request head (0 when it has none)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0
