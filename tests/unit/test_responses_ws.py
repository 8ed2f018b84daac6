"""The WebSocket door's frame handling without a server: a _Session on one end of a socketpair, a wsproto client
connection on the other. What the client sends is parsed into messages, control frames are answered, the
door's events leave as one text frame each (compressed when permessage-deflate was agreed), and the
connection-local history expands previous_response_id."""

from __future__ import annotations

import json
import socket
from types import SimpleNamespace

import pytest
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import RemoteProtocolError

from deepseek_proxy.core.errors import ErrorKind, ProxyError
from deepseek_proxy.frontdoors import responses_ws as rws
from deepseek_proxy.store.memory import MemoryStore
from deepseek_proxy.translate.errors import RequestError


def pair(*, deflate: bool = False, max_body: int = 1 << 20):
    """(session, client connection, client socket), with permessage-deflate agreed on both sides if asked."""
    server_sock, client_sock = socket.socketpair()
    server_ext, client_ext = [], []
    if deflate:
        server_deflate, client_deflate = PerMessageDeflate(), PerMessageDeflate()
        accepted = server_deflate.accept(client_deflate.offer())  # type: ignore[arg-type]
        client_deflate.finalize(accepted)  # type: ignore[arg-type]
        server_ext, client_ext = [server_deflate], [client_deflate]
    gw = SimpleNamespace(config=SimpleNamespace(server=SimpleNamespace(max_body_bytes=max_body)))
    session = rws._Session(gw, Connection(ConnectionType.SERVER, server_ext), server_sock,  # type: ignore[arg-type]
                           client_key=None, stopping=None)
    return session, Connection(ConnectionType.CLIENT, client_ext), client_sock


def client_events(client: Connection, data: bytes) -> list:
    client.receive_data(data)
    return list(client.events())


def test_each_event_leaves_as_one_text_frame_and_a_ping_for_the_keepalive_marker():
    session, client, _ = pair()
    events = [{"type": "response.created", "n": 1}, {"type": "response.in_progress", "n": 2}, rws._PING]
    received = client_events(client, session.frames(events))
    assert [type(e) for e in received] == [TextMessage, TextMessage, Ping]
    assert [json.loads(e.data) for e in received[:2]] == events[:2]
    assert all(e.message_finished for e in received[:2])


def test_frames_are_compressed_when_permessage_deflate_was_agreed():
    session, client, _ = pair(deflate=True)
    event = {"type": "response.output_text.delta", "delta": "word " * 200}
    data = session.frames([event])
    assert len(data) < len(json.dumps(event)) / 5
    (received,) = client_events(client, data)
    assert json.loads(received.data) == event


def test_a_fragmented_message_is_joined_and_pings_are_answered_with_the_next_write():
    session, client, _ = pair()
    data = client.send(Message(data='{"type": "response.cre', message_finished=False))
    data += client.send(Ping(b"are you there"))
    data += client.send(Message(data='ate"}', message_finished=True))
    session._receive(data)
    assert session.inbox == ['{"type": "response.create"}']
    (pong,) = client_events(client, session.frames([]))
    assert isinstance(pong, Pong) and pong.payload == b"are you there"


def test_a_close_frame_marks_the_client_gone_and_queues_the_reply():
    session, client, _ = pair()
    session._receive(client.send(CloseConnection(code=1000)))
    assert session.closed
    (reply,) = client_events(client, session._take_outbox())
    assert isinstance(reply, CloseConnection) and reply.code == 1000


def test_binary_and_oversized_messages_are_protocol_errors():
    session, client, _ = pair(max_body=100)
    with pytest.raises(RemoteProtocolError) as binary:
        session._receive(client.send(BytesMessage(data=b"\x00\x01")))
    assert binary.value.event_hint.code == rws.UNSUPPORTED_DATA  # type: ignore[union-attr]
    session, client, _ = pair(max_body=100)
    with pytest.raises(RemoteProtocolError) as big:
        session._receive(client.send(TextMessage(data="x" * 101)))
    assert big.value.event_hint.code == rws.TOO_BIG  # type: ignore[union-attr]


def test_client_gone_reads_what_arrived_without_waiting():
    session, client, client_sock = pair()
    assert session.client_gone() is False  # nothing arrived
    client_sock.sendall(client.send(Ping(b"x")))
    assert session.client_gone() is False  # a ping is no farewell ...
    assert session.outbox  # ... its pong goes out with the next write
    client_sock.sendall(client.send(TextMessage(data='{"type": "response.create"}')))
    assert session.client_gone() is False and session.inbox  # a message sent early waits its turn
    client_sock.sendall(client.send(CloseConnection(code=1001)))
    assert session.client_gone() is True


def test_client_gone_on_eof():
    session, _, client_sock = pair()
    client_sock.close()
    assert session.client_gone() is True


def test_the_server_close_waits_for_the_clients_reply():
    session, client, client_sock = pair()
    client_sock.sendall(b"")  # nothing yet; the reply arrives after our close frame was read
    frames = session._close(rws.GOING_AWAY, "server restarting")
    ours = next(frames)
    (close,) = client_events(client, ours)
    assert isinstance(close, CloseConnection) and close.code == rws.GOING_AWAY
    client_sock.sendall(client.send(close.response()))
    assert list(frames) == []
    assert session.closed and session.ws.state is ConnectionState.CLOSED


# ------------------------------------------------------------------------------------------- history

def test_history_expands_previous_input_then_output_then_new_items():
    history = rws._History()
    first_input = [{"type": "message", "role": "user", "content": "hi"}]
    output = [{"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "E"},
              {"type": "function_call", "call_id": "c1", "name": "ls", "arguments": "{}"}]
    history.remember("resp_1", first_input, output)
    new = [{"type": "function_call_output", "call_id": "c1", "output": "a.txt"}]
    body = {"model": "m", "previous_response_id": "resp_1", "input": new, "tools": []}
    expanded = history.expand(body)
    assert expanded == {"model": "m", "input": first_input + output + new, "tools": []}
    assert history.expand({**body, "previous_response_id": "resp_other"}) is None
    assert history.expand({**body, "input": "next"})["input"][-1] == {"type": "message", "role": "user",  # type: ignore[index]
                                                                      "content": "next"}


def test_history_keeps_the_latest_responses_only():
    history = rws._History(capacity=2)
    for n in range(3):
        history.remember(f"resp_{n}", [], [])
    assert history.expand({"previous_response_id": "resp_0"}) is None
    assert history.expand({"previous_response_id": "resp_2", "input": []}) == {"input": []}


def test_input_of_another_type_is_a_request_error():
    with pytest.raises(RequestError) as refused:
        rws.input_items_of({"role": "user"})
    assert refused.value.param == "input"


def test_an_unknown_previous_response_is_a_404_in_openais_shape():
    with pytest.raises(RequestError) as refused:
        rws._expand_from_store({"previous_response_id": "resp_x"},
                              MemoryStore(ttl_seconds=60, reasoning_ttl_seconds=60, max_response_bytes=1 << 20))
    frame = rws.request_error_frame(refused.value)
    assert frame == {"type": "error", "status": 404,
                     "error": {"type": "invalid_request_error", "code": "previous_response_not_found",
                               "message": "Previous response with id 'resp_x' not found.",
                               "param": "previous_response_id"}}


def test_upstream_errors_keep_their_status_and_retry_after():
    error = ProxyError(ErrorKind.RATE_LIMITED, "slow down", 429, retry_after=3)
    frame = rws.upstream_error_frame(error)
    assert frame["status"] == 429 and frame["headers"] == {"retry-after": "3"}
    assert frame["error"]["code"] == "rate_limit_exceeded" and frame["error"]["message"] == "slow down"
