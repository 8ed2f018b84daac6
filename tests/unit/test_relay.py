"""The relay and the upstream layer's events, without a server: the door contract, shutdown, limits, ticks."""

from __future__ import annotations

import gzip
import json
import threading

import pytest

from deepseek_proxy.config import UpstreamConfig, default_models
from deepseek_proxy.core.errors import ErrorKind, ProxyError
from deepseek_proxy.frontdoors.relay import relay
from deepseek_proxy.frontdoors.responses import ResponsesDoorStream
from deepseek_proxy.shutdown import ServerShuttingDown
from deepseek_proxy.translate.reasoning import ReasoningCodec
from deepseek_proxy.translate.tools import ToolMap
from deepseek_proxy.upstream import body as body_module
from deepseek_proxy.upstream.chat import (
    END,
    TICK,
    Failure,
    StreamLimits,
    collect,
    open_chat,
)
from deepseek_proxy.upstream.client import UpstreamClient
from tests.fakes.fake_deepseek import FakeDeepSeek, Reply
from tests.fakes.paced_http import PacedHTTPServer, paced_reply, sse_events, text_chunks

PRO = default_models()["deepseek-v4-pro"]
CHAT = {"model": "deepseek-v4-pro", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def door() -> ResponsesDoorStream:
    return ResponsesDoorStream(model="m", tool_map=ToolMap(), codec=ReasoningCodec(b"k"))


def decoded(frames) -> list[dict]:
    return [json.loads(line[6:]) for frame in frames for line in frame.split(b"\n") if line.startswith(b"data: ")]


class FakeEvents:
    """An upstream layer stand-in: the events given, then waits forever; records close()."""

    def __init__(self, *events):
        self.events = list(events)
        self.closed = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.events:
            return self.events.pop(0)
        raise AssertionError("the relay asked for more events than the test scripted")

    def close(self):
        self.closed = True


def batch(*chunks):
    return (chunk for chunk in chunks)  # the upstream layer's batch: a generator


CHUNK = {"choices": [{"index": 0, "delta": {"content": "hello"}, "finish_reason": None}]}


def test_relay_writes_start_chunks_ticks_and_the_end():
    events = FakeEvents(batch(CHUNK, CHUNK), TICK, END)
    ended = []
    frames = list(relay(events, door(), on_end=lambda: ended.append(True)))
    types = [e["type"] for e in decoded(frames)]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types.count("response.output_text.delta") == 2
    assert "response.in_progress" in types[2:]  # the tick
    assert types[-1] == "response.completed"
    assert len(frames) == 5, ("start, the first output on its own, then one write per upstream read, the tick, "
                              "the end (with the items' done events)")
    assert events.closed and ended == [True]


ROLE = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
USAGE = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}


class ScopeRecorder:
    """The relay's view of a RequestScope, recording what it is told and when (after which write)."""

    def __init__(self, frames: list):
        self.frames, self.calls = frames, []

    def first_token(self):
        self.calls.append(("first_token", len(self.frames)))

    def touch(self):
        self.calls.append(("touch", len(self.frames)))

    def finish(self, **outcome):
        self.calls.append(("finish", outcome["status"], outcome["usage"]))


def test_the_first_output_leaves_ahead_of_the_rest_of_its_read_then_one_write_per_read():
    frames: list[bytes] = []
    scope = ScopeRecorder(frames)
    events = FakeEvents(batch(ROLE, CHUNK, CHUNK, CHUNK), batch(CHUNK, USAGE), END)
    for frame in relay(events, door(), scope=scope):  # type: ignore[arg-type]
        frames.append(frame)
    per_write = [[e["type"] for e in decoded([frame])] for frame in frames]
    assert per_write[1] == ["response.output_item.added", "response.content_part.added",
                            "response.output_text.delta"], "the first token, alone, as soon as it is translated"
    assert per_write[2] == ["response.output_text.delta"] * 2, "the rest of that read in one write"
    assert per_write[3] == ["response.output_text.delta"], "the next read in one write"
    assert per_write[4][-1] == "response.completed" and len(frames) == 5
    assert scope.calls[0] == ("first_token", 2), "told once the first token's write returned"
    assert [call[0] for call in scope.calls].count("first_token") == 1
    assert scope.calls[-1] == ("finish", 200, USAGE["usage"])


def test_relay_failure_event_renders_the_neutral_error():
    events = FakeEvents(batch(CHUNK), Failure(ProxyError(ErrorKind.CONTEXT_OVERFLOW, "too long", 400)))
    final = decoded(list(relay(events, door())))[-1]
    assert final["type"] == "response.failed"
    assert final["response"]["error"] == {"code": "context_length_exceeded", "message": "too long"}


def test_server_shutdown_ends_the_stream_with_a_retryable_failure_and_closes_the_upstream():
    events = FakeEvents(batch(CHUNK), batch(CHUNK))
    ended = []
    stream = relay(events, door(), on_end=lambda: ended.append(True))
    next(stream)  # the start
    next(stream)  # one delta
    last = stream.throw(ServerShuttingDown())
    final = decoded([last])[-1]
    assert final["type"] == "response.failed"
    assert final["response"]["error"]["code"] == "server_error"  # Codex retries it (server_is_overloaded: no)
    assert "shutting down" in final["response"]["error"]["message"]
    assert events.closed
    with pytest.raises(StopIteration):
        next(stream)
    assert ended == [True]


def test_server_shutdown_raised_inside_the_upstream_read_ends_the_stream_the_same_way():
    """Where the worker's exception really lands: in the greenlet blocked on the upstream socket, below the relay."""

    class ShutDownWhileReading(FakeEvents):
        def __next__(self):
            if not self.events:
                raise ServerShuttingDown()
            return super().__next__()

    events = ShutDownWhileReading(batch(CHUNK))
    final = decoded(list(relay(events, door())))[-1]
    assert final["type"] == "response.failed" and final["response"]["error"]["code"] == "server_error"
    assert events.closed


def test_closing_the_relay_closes_the_upstream():
    events = FakeEvents(batch(CHUNK), batch(CHUNK))
    stream = relay(events, door())
    next(stream)
    stream.close()  # what the server does when its client went away
    assert events.closed


# ---- the upstream layer --------------------------------------------------------------------------------------------
@pytest.fixture()
def fake():
    with FakeDeepSeek(api_key="sk-k") as server:
        yield server


def client_for(base_url: str) -> UpstreamClient:
    return UpstreamClient(UpstreamConfig(name="t", base_url=base_url, api_key="env:K"), env={"K": "sk-k"})


def test_open_chat_prepares_the_request_and_yields_chunks_then_end(fake):
    fake.script(Reply.text("one two"))
    chat = {**CHAT, "max_tokens": 10**9, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    ]}
    events = collect(open_chat(client_for(fake.base_url), chat, model=PRO, thinking=True))
    assert events[-1] is END
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in [c for e in events if isinstance(e, list) for c in e]
                   if c.get("choices")) == "one two"
    sent = fake.chat_requests[-1].body
    assert sent["max_tokens"] == PRO.max_output_tokens  # clamped
    assert sent["messages"][1]["reasoning_content"] == ""  # thinking mode: every assistant turn carries one
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "c1",
                                   "content": "[no output was recorded for this tool call]"}


def test_open_chat_raises_the_neutral_error_before_any_byte(fake):
    fake.script(Reply.error(402, "Insufficient Balance"))
    with pytest.raises(ProxyError) as caught:
        open_chat(client_for(fake.base_url), CHAT, model=PRO, thinking=True)
    assert caught.value.kind is ErrorKind.INSUFFICIENT_BALANCE and caught.value.message == "Insufficient Balance"


def test_should_stop_ends_the_events_and_closes_the_upstream_while_it_is_silent():
    chunked = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    upstream = PacedHTTPServer([(0, chunked), (30, b"0\r\n\r\n")])
    stop = threading.Event()
    try:
        events = open_chat(client_for(upstream.base_url), CHAT, model=PRO, thinking=True,
                           limits=StreamLimits(keepalive_interval=60, poll_interval=0.1), should_stop=stop.is_set)
        threading.Timer(0.3, stop.set).start()
        assert collect(events) == []  # no tick (60 s), no end: just over
        assert upstream.client_closed.wait(2)
    finally:
        upstream.close()


@pytest.mark.parametrize("framing", ["sized", "gzip", "close"])
@pytest.mark.parametrize("reader", ["socket", "iter_content"])
def test_ticks_on_every_framing_and_both_readers(monkeypatch, framing, reader):
    monkeypatch.setattr(body_module, "FORCE_ITER_CONTENT", reader == "iter_content")
    chunks = text_chunks(["a", " b"])
    upstream = PacedHTTPServer(paced_reply(framing, sse_events(chunks[0], done=False), sse_events(*chunks[1:]),
                                           silence=0.8))
    try:
        events = collect(open_chat(client_for(upstream.base_url), CHAT, model=PRO, thinking=True,
                                limits=StreamLimits(keepalive_interval=0.2, poll_interval=0.1)))
    finally:
        upstream.close()
    assert events.count(TICK) >= 2
    assert events[-1] is END
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in [c for e in events if isinstance(e, list) for c in e]) == "a b"


def test_the_iter_content_reader_passes_read_errors_on(monkeypatch):
    monkeypatch.setattr(body_module, "FORCE_ITER_CONTENT", True)
    compressed = gzip.compress(sse_events(*text_chunks(["a", " b"])))
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % (len(compressed) + 50)
    upstream = PacedHTTPServer([(0, head + compressed)])  # then closes: 50 bytes short
    try:
        events = collect(open_chat(client_for(upstream.base_url), CHAT, model=PRO, thinking=True,
                                limits=StreamLimits(keepalive_interval=0.2)))
    finally:
        upstream.close()
    assert isinstance(events[-1], Failure) and events[-1].error.kind is ErrorKind.UPSTREAM_UNAVAILABLE


def test_size_and_duration_limits_are_failures(fake):
    fake.script(Reply.text(" ".join(["word"] * 300), reasoning=None))
    events = collect(open_chat(client_for(fake.base_url), CHAT, model=PRO, thinking=True,
                            limits=StreamLimits(max_bytes=2000)))
    assert isinstance(events[-1], Failure) and events[-1].error.kind is ErrorKind.TOO_LARGE
    fake.script(Reply.text(" ".join(["word"] * 30), reasoning=None, delay=0.05))
    events = collect(open_chat(client_for(fake.base_url), CHAT, model=PRO, thinking=True,
                            limits=StreamLimits(max_seconds=0.3)))
    assert isinstance(events[-1], Failure) and events[-1].error.kind is ErrorKind.TIMEOUT


def test_non_streaming_upstream_is_replayed_as_chunks(fake):
    fake.script(Reply.text("all at once"))
    events = collect(open_chat(client_for(fake.base_url), {**CHAT, "stream": False}, model=PRO, thinking=True))
    assert events[-1] is END
    first = next(c for e in events if isinstance(e, list) for c in e)
    assert first["choices"][0]["delta"]["content"] == "all at once"
