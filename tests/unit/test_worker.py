"""The server's write path (deepseek_proxy/worker.py): chunk framing, short sends, and a client gone mid-write."""

from __future__ import annotations

import json

import pytest

from deepseek_proxy import faults
from deepseek_proxy.config import ConfigError, load_config
from deepseek_proxy.worker import (
    BODY,
    DRAIN,
    HEAD,
    IDLE,
    BodyTooSlow,
    EdgeLimits,
    StreamingHandler,
    _ClientReader,
)


class _Socket:
    """Accepts at most `take` bytes per send(), like a socket whose buffer is nearly full; sendall() takes the rest."""

    def __init__(self, take: int | None = None, fail: OSError | None = None):
        self.take, self.fail = take, fail
        self.sent = bytearray()
        self.calls: list[str] = []

    def send(self, data) -> int:
        self.calls.append("send")
        if self.fail:
            raise self.fail
        n = len(data) if self.take is None else min(self.take, len(data))
        self.sent += bytes(data[:n])
        return n

    def sendall(self, data) -> None:
        self.calls.append("sendall")
        self.sent += bytes(data)


def _handler(sock: _Socket, chunked: bool = True) -> StreamingHandler:
    handler = StreamingHandler.__new__(StreamingHandler)  # no server or connection needed for the write path
    handler.socket = sock
    handler.response_use_chunked = chunked
    handler.response_length = 0
    handler.status = "200 OK"
    handler.code = 200
    return handler


def test_an_event_is_one_framed_chunk_in_one_send():
    sock = _Socket()
    handler = _handler(sock)
    handler._write(b"event: x\ndata: {}\n\n")
    assert bytes(sock.sent) == b"13\r\nevent: x\ndata: {}\n\n\r\n"
    assert sock.calls == ["send"]
    assert handler.response_length == len(sock.sent)


def test_a_short_send_is_completed_by_further_sends_without_loss_or_repeat():
    # Each further send waits at most the socket's timeout (send_timeout) for room; gevent's sendall would
    # bound the whole write instead.
    payload = bytes(range(256)) * 40
    sock = _Socket(take=1000)
    handler = _handler(sock)
    handler._write(payload)
    assert bytes(sock.sent) == b"%x\r\n" % len(payload) + payload + b"\r\n"
    assert sock.calls == ["send"] * 11 and "sendall" not in sock.calls


def test_an_empty_write_sends_nothing():
    # In chunked coding an empty chunk would end the body early.
    sock = _Socket()
    _handler(sock)._write(b"")
    assert sock.calls == [] and sock.sent == b""


def test_unchunked_bodies_go_out_as_they_are():
    sock = _Socket()
    _handler(sock, chunked=False)._write(b'{"ok":true}')
    assert bytes(sock.sent) == b'{"ok":true}'


def test_a_client_gone_mid_write_is_recorded_and_raised():
    sock = _Socket(fail=BrokenPipeError(32, "Broken pipe"))
    handler = _handler(sock)
    with pytest.raises(BrokenPipeError):
        handler._write(b"event: x\n\n")
    assert handler.status.startswith("socket error")
    assert handler.code == -200, "logged as a failed response, as gevent's own write path does"
    assert handler.response_length == 0


# ---- time limits: what each read may wait, by the connection's phase --------------------------------------------


LIMITS = EdgeLimits(header_timeout=10, body_timeout=20, body_min_rate=100, idle_timeout=75, send_timeout=60,
                    max_connections_per_address=8, shutdown_grace_seconds=8)


class _Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch):
    fake = _Clock()
    monkeypatch.setattr("deepseek_proxy.worker.time.monotonic", fake)
    return fake


def _edge_handler(clock) -> StreamingHandler:
    handler = StreamingHandler.__new__(StreamingHandler)
    handler.server = type("S", (), {"limits": LIMITS, "draining": False})()
    handler.client_address = ("127.0.0.1", 5000)
    handler.close_connection = False
    handler.deadline = clock.now + LIMITS.header_timeout
    return handler


def test_the_first_head_must_be_complete_within_header_timeout_of_the_accept(clock):
    handler = _edge_handler(clock)
    assert handler.read_allowance() == 10
    clock.now += 4
    handler.received(5)  # a first byte does not restart the clock: dripping gains nothing
    assert handler.phase == HEAD and handler.read_allowance() == 6


def test_a_keepalive_connection_waits_idle_timeout_then_header_timeout_from_the_first_byte(clock):
    handler = _edge_handler(clock)
    handler.requests_done = 1
    handler.phase, handler.deadline = IDLE, clock.now + LIMITS.idle_timeout
    assert handler.read_allowance() == 75
    clock.now += 70
    handler.received(1)
    assert handler.phase == HEAD and handler.read_allowance() == 10


def test_a_body_gets_body_timeout_per_read_and_slack_plus_one_second_per_min_rate_bytes(clock):
    handler = _edge_handler(clock)
    handler.phase, handler.body_started, handler.body_bytes = BODY, clock.now, 0
    assert handler.read_allowance() == 20
    clock.now += 19
    assert handler.read_allowance() == 1, "no bytes yet: only the slack is left"
    handler.received(1000)  # 10 s of credit at 100 B/s
    assert handler.read_allowance() == 11
    handler.received(100_000)
    assert handler.read_allowance() == 20, "never more than body_timeout for one read"


def test_a_late_body_is_a_408_and_the_connection_ends_there(clock):
    handler = _edge_handler(clock)
    handler.phase = BODY
    error = handler.timed_out()
    assert isinstance(error, BodyTooSlow) and error.code == 408
    assert handler.close_connection and handler.phase == DRAIN and handler.read_allowance() < 0


def test_a_late_head_is_a_socket_timeout_gevent_closes_on(clock):
    handler = _edge_handler(clock)
    handler.phase = HEAD
    assert isinstance(handler.timed_out(), TimeoutError) and handler.timed_out_in == HEAD


class _TimedSocket:
    def __init__(self, chunks):
        self.chunks, self.timeouts = list(chunks), []

    def settimeout(self, value):
        self.timeouts.append(value)

    def recv_into(self, buffer) -> int:
        chunk = self.chunks.pop(0)
        if isinstance(chunk, Exception):
            raise chunk
        buffer[:len(chunk)] = chunk
        return len(chunk)


def test_the_reader_sets_the_allowance_as_the_socket_timeout_and_clears_it(clock):
    handler = _edge_handler(clock)
    sock = _TimedSocket([b"GET / HTTP/1.1\r\n"])
    buffer = bytearray(100)
    assert _ClientReader(sock, handler).readinto(buffer) == 16
    assert sock.timeouts == [10, 60], "then back to what a write may wait for room"
    assert handler.phase == HEAD


def test_the_reader_turns_a_socket_timeout_into_the_phases_error(clock):
    handler = _edge_handler(clock)
    handler.phase, handler.body_started = BODY, clock.now
    sock = _TimedSocket([TimeoutError("timed out")])
    with pytest.raises(BodyTooSlow):
        _ClientReader(sock, handler).readinto(bytearray(10))
    assert sock.timeouts[-1] == 60
    with pytest.raises(TimeoutError):  # past the deadline: fails at once, without touching the socket
        _ClientReader(sock, handler).readinto(bytearray(10))


def test_errors_are_in_the_front_doors_format():
    openai = json.loads(faults.error_body("/v1/responses", 408, "late", code="request_timeout", request_id="req_1"))
    assert openai == {"error": {"message": "late", "type": "invalid_request_error", "param": None,
                                "code": "request_timeout"}}
    anthropic = json.loads(faults.error_body("/v1/messages", 500, "x", code=None, request_id="req_1"))
    assert anthropic == {"type": "error", "error": {"type": "api_error", "message": "x"}, "request_id": "req_1"}


def test_only_nesting_failures_count_as_the_clients_fault():
    assert faults.input_fault(RecursionError())[0] == 400
    assert faults.input_fault(TypeError("Recursion limit reached"))[0] == 400
    assert faults.input_fault(TypeError("unsupported operand")) is None
    assert faults.input_fault(KeyError("x")) is None


def test_edge_limits_come_from_the_server_config(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[server]\nheader_timeout = 5\nbody_min_rate = 0\nshutdown_grace_seconds = 0\n")
    limits = EdgeLimits.of(load_config(path, env={"DEEPSEEK_PROXY_SECRET": "x"}).server)
    assert (limits.header_timeout, limits.body_min_rate, limits.shutdown_grace_seconds) == (5, 0, 0)
    assert limits.idle_timeout == 75 and limits.body_timeout == 60  # nginx's defaults
    for bad in ("header_timeout = 0", "idle_timeout = -1", "max_connections_per_address = -2",
                'body_timeout = "60"'):
        path.write_text(f"[server]\n{bad}\n")
        with pytest.raises(ConfigError, match=bad.split(" ")[0]):
            load_config(path, env={"DEEPSEEK_PROXY_SECRET": "x"})
