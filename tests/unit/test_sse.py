"""SSEDecoder (upstream bytes → event payloads) and encode_events (Responses events → SSE bytes)."""

from __future__ import annotations

import json

import pytest

from deepseek_proxy.upstream.sse import (
    DONE,
    END_OF_STREAM,
    KEEPALIVE,
    SSEDecoder,
    encode_events,
)

DEEPSEEK_STREAM = (
    b": keep-alive\n\n"
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning_content":""}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"content":"caf\xc3\xa9 \xf0\x9f\x98\x80"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)


def decode(chunks: list[bytes]) -> list:
    decoder = SSEDecoder()
    events = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.close()


def expected_deepseek_events() -> list:
    return [
        KEEPALIVE,
        b'{"choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning_content":""}}]}',
        '{"choices":[{"index":0,"delta":{"content":"café 😀"}}]}'.encode(),
        b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
        DONE,
    ]


def test_whole_stream_in_one_chunk():
    assert decode([DEEPSEEK_STREAM]) == expected_deepseek_events()


def test_every_two_way_split_gives_the_same_events():
    # includes cuts inside "\xc3\xa9" and inside the 4-byte emoji: bytes are rejoined before any decoding
    for cut in range(len(DEEPSEEK_STREAM) + 1):
        assert decode([DEEPSEEK_STREAM[:cut], DEEPSEEK_STREAM[cut:]]) == expected_deepseek_events(), cut


def test_byte_at_a_time():
    assert decode([bytes([b]) for b in DEEPSEEK_STREAM]) == expected_deepseek_events()


def test_multibyte_character_split_decodes_as_json():
    emoji = "😀".encode()
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"t":"' + emoji[:2]) == []
    (payload,) = decoder.feed(emoji[2:] + b'"}\n\n')
    assert json.loads(payload) == {"t": "😀"}


def test_crlf_line_endings():
    raw = DEEPSEEK_STREAM.replace(b"\n", b"\r\n")
    assert decode([raw]) == expected_deepseek_events()
    # and with the CR and LF in different chunks
    cut = raw.index(b"\r\n") + 1
    assert decode([raw[:cut], raw[cut:]]) == expected_deepseek_events()


def test_keepalive_comments_are_reported_but_carry_no_data():
    events = decode([b": keep-alive\n\n: keep-alive\n\n", b"data: 1\n\n"])
    assert events == [KEEPALIVE, KEEPALIVE, b"1"]


def test_comment_between_data_lines_does_not_split_the_event():
    assert decode([b"data: a\n: ping\ndata: b\n\n"]) == [KEEPALIVE, b"a\nb"]


def test_extra_blank_lines_produce_no_events():
    assert decode([b"\n\n\n", b"data: x\n\n\n\n", b"\n"]) == [b"x"]


def test_multi_line_data_is_joined_with_newlines():
    assert decode([b"data: {\n", b'data: "a": 1\n', b"data: }\n\n"]) == [b'{\n"a": 1\n}']


def test_data_without_space_after_colon_and_only_one_space_stripped():
    assert decode([b"data:x\n\n", b"data:  two\n\n"]) == [b"x", b" two"]


def test_event_id_and_retry_fields_are_ignored():
    assert decode([b"event: message\nid: 7\nretry: 100\ndata: x\n\n"]) == [b"x"]


@pytest.mark.parametrize("tail", [b"data: last", b"data: last\n"])
def test_last_event_without_trailing_blank_line_is_delivered_at_close(tail):
    decoder = SSEDecoder()
    assert decoder.feed(b"data: first\n\n" + tail) == [b"first"]
    assert decoder.close() == [b"last"]


def test_close_on_clean_end_gives_nothing():
    decoder = SSEDecoder()
    decoder.feed(DEEPSEEK_STREAM)
    assert decoder.close() == []


def test_encode_events_parses_back():
    events = [
        {"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1"}},
        {"type": "response.output_text.delta", "sequence_number": 1, "delta": "line\n\ndata: not a field é😀",
         "logprobs": []},
    ]
    raw = encode_events(events)
    # frames: an `event:` line naming the type, one `data:` line, a blank line
    frames = raw.split(b"\n\n")
    assert frames[-1] == b"" and len(frames) == 3
    for frame, event in zip(frames[:-1], events, strict=True):
        lines = frame.split(b"\n")
        assert lines[0] == b"event: " + event["type"].encode()
        assert len(lines) == 2 and lines[1].startswith(b"data: ")
    assert [json.loads(payload) for payload in decode([raw])] == events


def test_encode_events_of_nothing_is_empty():
    assert encode_events([]) == b""


# ---- odd but legal upstreams (issue 9) ------------------------------------------------------------------------------

@pytest.mark.parametrize("line_end", [b"\r", b"\r\n", b"\n"])
def test_every_line_ending_the_sse_spec_allows(line_end):
    stream = DEEPSEEK_STREAM.replace(b"\n", line_end)
    assert decode([stream]) == expected_deepseek_events()
    for cut in range(len(stream) + 1):  # a CRLF cut between two reads is still one line end
        assert decode([stream[:cut], stream[cut:]]) == expected_deepseek_events(), cut
    assert decode([bytes([b]) for b in stream]) == expected_deepseek_events()


def test_an_idle_tick_between_cr_and_lf_is_not_a_line_end():
    decoder = SSEDecoder()
    events = decoder.feed(b"data: one\r") + decoder.feed(b"") + decoder.feed(b"\ndata: two\r\n\r\n")
    assert events == [b"one\ntwo"]  # two data lines of one event, not two events


def test_mixed_line_endings_in_one_stream():
    assert decode([b'data: {"a":1}\r\n\rdata: {"b":2}\n\r\n: ping\r\r']) == [b'{"a":1}', b'{"b":2}', KEEPALIVE]


@pytest.mark.parametrize("ending", [b"", b"\n", b"\r", b"\r\n"])
def test_a_last_event_without_its_blank_line_counts_at_close(ending):
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a":1}\n\ndata: [DONE]' + ending) == [b'{"a":1}']
    assert decoder.close() == [DONE]
    assert decoder.close() == []


def test_end_of_stream_fed_like_any_chunk_is_close():
    decoder = SSEDecoder()
    decoder.feed(b"data: [DONE]")
    assert decoder.feed(END_OF_STREAM) == [DONE]
    assert decoder.feed(END_OF_STREAM) == [], "nothing more once the stream is complete"
