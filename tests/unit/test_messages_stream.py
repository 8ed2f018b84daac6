"""MessagesStream: Chat Completions chunks → Anthropic Messages stream events.

Every event of every scenario is validated against the anthropic SDK's own typed models (the beta and the plain
stream event unions, discriminated by `type`, no unknown fields at any depth), accumulated with the SDK's own
stream accumulator (which must rebuild exactly the `message` the non-streaming path returns), and checked for the
block lifecycle Claude Code needs (start → deltas → stop for every block, one block open at a time, a thinking
block's signature before its stop). Event shapes are compared with the SSE Claude Code accepted
(tests/fixtures/claude-code/response_accepted_*.sse). Upstream chunks come from the fake DeepSeek's own renderer.
"""

from __future__ import annotations

import itertools
import json

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message
from anthropic.types.beta import BetaMessage

from deepseek_proxy.translate.messages_request import (
    REASONING_PLACEHOLDER,
    UNPARSED_ARGUMENTS,
    translate_anthropic_tools,
    translate_messages_request,
)
from deepseek_proxy.translate.messages_stream import MessagesStream, encode_sse
from deepseek_proxy.translate.reasoning import ReasoningCache
from deepseek_proxy.translate.tools import ToolMap, flat_tool_name
from tests.anthropic_events import PLAIN_EVENT, check_lifecycle, no_extra, validate_event
from tests.conftest import CLAUDE_FIXTURES
from tests.fakes.fake_deepseek import (
    Reply,
    _Turn,
    completion_body,
    stream_events,
)
from tests.unit.request_translation import (
    CODEC,
    DEEPSEEK,
    PRO,
    check_with_deepseek_rules,
)

MCP_NAME = "mcp__server.with.dots__a_tool_whose_name_is_far_too_long_for_a_chat_completions_upstream"
CLAUDE_TOOLS = json.loads((CLAUDE_FIXTURES / "p_default_turn1.json").read_text())["body"]["tools"] + [
    {"name": MCP_NAME, "input_schema": {"type": "object"}}]
TOOL_MAP: ToolMap = translate_anthropic_tools(CLAUDE_TOOLS, DEEPSEEK)[1]


# ---- helpers ------------------------------------------------------------------------------------------------------


def accumulate(events: list[dict]) -> Message:
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for event in events:
        if event["type"] in ("ping", "error"):
            continue
        snapshot = accumulate_event(event=PLAIN_EVENT.validate_python(event), current_snapshot=snapshot,
                                    json_bufs=json_bufs)
    assert snapshot is not None
    return snapshot


def counter_ids():
    counter = itertools.count()
    return lambda prefix: f"{prefix}_{next(counter)}"


def new_stream(**kwargs) -> MessagesStream:
    kwargs.setdefault("tool_map", TOOL_MAP)
    return MessagesStream(model="claude-opus-4-8", codec=CODEC, input_tokens=4000, make_id=counter_ids(), **kwargs)


def turn(*, thinking: bool = True, prompt: int = 4000, cached: int = 3000) -> _Turn:
    return _Turn(model="deepseek-v4-pro", stream=True, thinking=thinking, include_usage=True,
                 prompt_tokens=prompt, cache_hit_tokens=cached)


def chunks_of(reply: Reply, upstream_turn: _Turn | None = None) -> list[dict]:
    return [json.loads(line[len("data: "):]) for line in stream_events(reply, upstream_turn or turn())]


def run(chunks: list[dict], stream: MessagesStream | None = None) -> tuple[list[dict], MessagesStream]:
    stream = stream or new_stream()
    events = stream.start()
    for chunk in chunks:
        events += stream.feed(chunk)
    events += stream.finish()
    for event in events:
        validate_event(event)
    check_lifecycle(events)
    return events, stream


def check_message(stream: MessagesStream, events: list[dict]) -> dict:
    """The non-streaming reply validates, and the SDK's accumulator rebuilds it from the events."""
    message = stream.message
    no_extra(BetaMessage.model_validate(message), "message")
    no_extra(Message.model_validate(message), "message")
    assert accumulate(events).model_dump(mode="json") == Message.model_validate(message).model_dump(mode="json")
    return message


# ---- scenarios ----------------------------------------------------------------------------------------------------


def test_thinking_text_and_tool_use_in_claude_codes_accepted_shape():
    reply = Reply.tool_calls([("Bash", {"command": "echo hi > out.txt", "description": "Create out.txt"})],
                             reasoning="The user wants out.txt containing hi.", content="I'll create the file.")
    events, stream = run(chunks_of(reply))
    message = check_message(stream, events)

    accepted = (CLAUDE_FIXTURES / "response_accepted_turn1_thinking_text_tool_use.sse").read_text()
    accepted_events = [json.loads(line[6:]) for line in accepted.splitlines() if line.startswith("data: ")]

    def shape(evts):  # event and block kinds, with runs of deltas of one kind collapsed
        kinds = [(e["type"], e.get("delta", {}).get("type") or e.get("content_block", {}).get("type"))
                 for e in evts if e.get("delta", {}).get("partial_json") != ""]
        return [k for k, _ in itertools.groupby(kinds)]

    assert shape(events) == shape(accepted_events)
    assert [b["type"] for b in message["content"]] == ["thinking", "text", "tool_use"]
    assert message["content"][0]["thinking"] == reply.reasoning
    assert CODEC.decode(message["content"][0]["signature"]) == reply.reasoning
    assert message["content"][1]["text"] == reply.content
    assert message["content"][2] == {"type": "tool_use", "id": reply.calls[0].id, "name": "Bash",
                                     "input": {"command": "echo hi > out.txt", "description": "Create out.txt"}}
    assert message["stop_reason"] == "tool_use"


def test_usage_counts_cache_reads_apart_from_input():
    events, stream = run(chunks_of(Reply.text("Done."), turn(prompt=5000, cached=4096)))
    assert events[0]["message"]["usage"]["input_tokens"] == 4000  # the estimate, before the upstream counted
    delta = next(e for e in events if e["type"] == "message_delta")
    assert delta["usage"]["input_tokens"] == 5000 - 4096
    assert delta["usage"]["cache_read_input_tokens"] == 4096
    assert delta["usage"]["cache_creation_input_tokens"] == 0
    assert delta["usage"]["output_tokens"] > 0
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    check_message(stream, events)


def test_parallel_tool_calls_keep_their_ids_and_map_names_back():
    upstream_name = flat_tool_name(MCP_NAME)
    reply = Reply.tool_calls([("Bash", {"command": "cat out.txt"}), (upstream_name, {"q": "x"})],
                             ids=["call_00_abcDEF123", "bad id/with spaces"], split_arguments=3)
    events, stream = run(chunks_of(reply))
    message = check_message(stream, events)
    blocks = message["content"][1:]
    assert [b["name"] for b in blocks] == ["Bash", MCP_NAME]
    assert blocks[0]["id"] == "call_00_abcDEF123"  # safe: the same id goes back upstream next turn
    assert blocks[1]["id"].startswith("toolu_")
    assert [b["input"] for b in blocks] == [{"command": "cat out.txt"}, {"q": "x"}]
    fragments = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"
                 and e["delta"]["type"] == "input_json_delta" and e["index"] == 1]
    assert len(fragments) == 3 and "".join(fragments) == reply.calls[0].arguments


@pytest.mark.parametrize(("finish", "stop_reason"), [("length", "max_tokens"), ("content_filter", "refusal"),
                                                     ("stop", "end_turn")])
def test_finish_reasons(finish, stop_reason):
    events, stream = run(chunks_of(Reply.text("cut", finish_reason=finish)))
    assert stream.message["stop_reason"] == stop_reason
    check_message(stream, events)


def test_a_stop_sequence_named_by_the_upstream_is_reported():
    chunks = chunks_of(Reply.text("one two"))
    finish = next(c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"])
    finish["choices"][0]["stop_reason"] = "END"  # vLLM's field
    events, stream = run(chunks, new_stream(stop_sequences=("END",)))
    assert (stream.message["stop_reason"], stream.message["stop_sequence"]) == ("stop_sequence", "END")
    check_message(stream, events)


def test_upstream_out_of_capacity_is_an_overloaded_error_event():
    stream = new_stream()
    events = stream.start()
    for chunk in chunks_of(Reply.text("partial", finish_reason="insufficient_system_resource")):
        events += stream.feed(chunk)
    end = stream.finish()
    assert [e["type"] for e in end] == ["error"] and end[0]["error"]["type"] == "overloaded_error"
    validate_event(end[0])
    assert stream.message is None and stream.finish() == [] and stream.keepalive() == []


def test_keepalive_and_failure_mid_stream():
    stream = new_stream()
    events = stream.start() + stream.keepalive()
    assert events[-1] == {"type": "ping"}
    events += stream.feed(chunks_of(Reply.text("hello there"))[1])
    failed = stream.fail("server_error", "The upstream connection broke mid-reply.")
    assert failed == [{"type": "error", "error": {"type": "api_error",
                                                  "message": "The upstream connection broke mid-reply."}}]
    for event in events + failed:
        validate_event(event)
    assert stream.feed(chunks_of(Reply.text("more"))[1]) == [] and stream.finish() == []


def test_replay_of_a_complete_reply_matches_the_stream():
    reply = Reply.tool_calls([("Read", {"file_path": "/tmp/a"})], reasoning="read it", content="Reading.")
    upstream_turn = turn()
    _, by_chunks = run(chunks_of(reply, upstream_turn))
    replayer = new_stream()
    replayed = replayer.start() + replayer.replay(completion_body(reply, upstream_turn))
    for event in replayed:
        validate_event(event)
    check_lifecycle(replayed)
    assert replayer.message == by_chunks.message
    check_message(replayer, replayed)


def test_unparseable_arguments_reach_the_client_as_they_are():
    reply = Reply.tool_calls([("Bash", '{"command": "ls"')])
    _, stream = run(chunks_of(reply))
    assert stream.message["content"][-1]["input"] == {UNPARSED_ARGUMENTS: '{"command": "ls"'}
    no_extra(Message.model_validate(stream.message), "message")


def test_an_empty_reply_is_a_valid_message():
    events, stream = run([{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}])
    assert stream.message["content"] == [] and stream.message["stop_reason"] == "end_turn"
    check_message(stream, events)


def test_sse_frames():
    frames = encode_sse([{"type": "ping"}, {"type": "message_stop"}])
    assert frames == b'event: ping\ndata: {"type":"ping"}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n'


# ---- reasoning round trips ----------------------------------------------------------------------------------------


def _next_turn_body(message: dict, *, keep_thinking: bool) -> dict:
    """What Claude Code sends after our reply: the reply as an assistant turn, then the tool results."""
    content = [b for b in message["content"] if keep_thinking or b["type"] != "thinking"]
    results = [{"type": "tool_result", "tool_use_id": b["id"], "content": "ok"}
               for b in message["content"] if b["type"] == "tool_use"]
    return {"model": "claude-opus-4-8", "max_tokens": 32000, "thinking": {"type": "adaptive"}, "tools": CLAUDE_TOOLS,
            "messages": [{"role": "user", "content": "go"}, {"role": "assistant", "content": content},
                         {"role": "user", "content": results}]}


def test_our_thinking_comes_back_exactly_through_the_signature():
    reasoning = "Plan: run ls. Then read the file — carefully: ünïcødé too."
    reply = Reply.tool_calls([("Bash", {"command": "ls"}), ("Read", {"file_path": "/a"})], reasoning=reasoning)
    _, stream = run(chunks_of(reply))
    body = _next_turn_body(stream.message, keep_thinking=True)
    body["messages"][1]["content"][0]["thinking"] = "(Claude Code may show or trim this text)"
    chat = translate_messages_request(body, PRO, DEEPSEEK, CODEC).body
    check_with_deepseek_rules(chat)
    assert chat["messages"][1]["reasoning_content"] == reasoning
    assert [c["id"] for c in chat["messages"][1]["tool_calls"]] == [c.id for c in reply.calls]


def test_a_turn_returned_without_thinking_is_repaired_from_the_cache():
    reply = Reply.tool_calls([("Bash", {"command": "ls", "description": "List"})], reasoning="the real plan")
    _, stream = run(chunks_of(reply))
    cache = ReasoningCache()
    for key, reasoning in stream.reasoning_entries():
        cache.put(key, reasoning)
    body = _next_turn_body(stream.message, keep_thinking=False)
    # Claude Code re-serialises the input in its own key order and spacing: the fingerprint does not care
    call = body["messages"][1]["content"][0]
    call["input"] = dict(reversed(list(call["input"].items())))
    assert translate_messages_request(body, PRO, DEEPSEEK, CODEC, cache).body["messages"][1][
        "reasoning_content"] == "the real plan"
    assert translate_messages_request(body, PRO, DEEPSEEK, CODEC, ReasoningCache()).body["messages"][1][
        "reasoning_content"] == REASONING_PLACEHOLDER


def test_no_cache_entries_without_tool_calls_or_reasoning():
    assert run(chunks_of(Reply.text("hi")))[1].reasoning_entries() == []
    assert run(chunks_of(Reply.tool_calls([("Bash", {"command": "ls"})]), turn(thinking=False)))[
        1].reasoning_entries() == []


def test_reasoning_is_not_shown_to_a_client_that_did_not_ask_for_thinking():
    events, stream = run(chunks_of(Reply.text("hello", reasoning="hidden")), new_stream(thinking=False))
    assert [b["type"] for b in stream.message["content"]] == ["text"]
    assert "hidden" not in json.dumps(events)
