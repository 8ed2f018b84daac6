"""translate/tool_history.py: the pairing of tool calls with their answers that every door's history goes through
(directly for the Messages and Gemini translators, through the upstream layer for all)."""

from __future__ import annotations

from deepseek_proxy.core.chat import TOOL_IMAGES
from deepseek_proxy.translate.tool_history import (
    NO_TOOL_OUTPUT,
    answer_every_tool_call,
    arguments_json,
    assistant_message,
    distinct_call_ids,
    needs_repair,
    stray_output_text,
    tool_answers,
    tool_call_entries,
    user_message,
)
from deepseek_proxy.translate.tools import offer_tools

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}


def tool(call_id: str, content: str, **extra) -> dict:
    return {"role": "tool", "tool_call_id": call_id, "content": content, **extra}


def calling(*ids: str) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [
        {"id": i, "type": "function", "function": {"name": "f", "arguments": "{}"}} for i in ids]}


def test_tool_answers_follow_the_calls_order_and_fill_in_missing_ones():
    answers = {"b": tool("b", "B"), "a": tool("a", "A")}
    assert tool_answers(["a", "c", "b"], answers) == [
        tool("a", "A"), tool("c", NO_TOOL_OUTPUT), tool("b", "B")]


def test_tool_answers_move_images_behind_all_answers_without_touching_the_input():
    with_image = tool("a", "A", **{TOOL_IMAGES: [IMAGE]})
    out = tool_answers(["a", "b"], {"a": with_image, "b": tool("b", "B")})
    assert out == [tool("a", "A"), tool("b", "B"),
                   {"role": "user", "content": [{"type": "text", "text": "Image output of tool call a:"}, IMAGE]}]
    assert TOOL_IMAGES in with_image  # copied, not modified


def test_answer_every_tool_call_reorders_fills_and_turns_strays_into_user_text():
    history = [{"role": "user", "content": "go"}, tool("x", "early"), calling("a", "b"),
               tool("b", "B"), tool("zz", "Z"), tool("b", "again"), {"role": "user", "content": "next"}]
    assert answer_every_tool_call(history) == [
        {"role": "user", "content": "go"},
        {"role": "user", "content": stray_output_text("x", "early")},
        calling("a", "b"), tool("a", NO_TOOL_OUTPUT), tool("b", "B"),
        {"role": "user", "content": "Output of tool call zz:\nZ"},
        {"role": "user", "content": "Output of tool call b:\nagain"},
        {"role": "user", "content": "next"},
    ]


def test_a_stray_output_keeps_its_images():
    out = answer_every_tool_call([tool("x", "X", **{TOOL_IMAGES: [IMAGE]})])
    assert out == [{"role": "user", "content": [{"type": "text", "text": "Output of tool call x:\nX"}, IMAGE]}]


def test_a_paired_history_is_left_as_it_is():
    history = [{"role": "user", "content": "go"}, calling("a"), tool("a", "A"), {"role": "assistant", "content": "ok"}]
    assert answer_every_tool_call(history) == history


def test_arguments_and_tool_call_entries_are_deterministic_and_flatten_names():
    assert arguments_json("raw {") == "raw {"
    assert arguments_json(None) == "{}"
    assert arguments_json({"b": 1, "a": [1, 2]}) == '{"b":1,"a":[1,2]}'  # the client's key order, compact
    long_name = "mcp__" + "x" * 80
    [entry] = tool_call_entries([("c1", long_name, {"q": 1})])
    assert entry["id"] == "c1" and entry["type"] == "function"
    assert entry["function"]["arguments"] == '{"q":1}'
    assert len(entry["function"]["name"]) <= 64 and entry["function"]["name"].startswith("mcp__x")


def test_assistant_message_writes_reasoning_and_calls_only_when_there_are_some():
    assert assistant_message("hi", None, []) == {"role": "assistant", "content": "hi"}
    message = assistant_message("", "why", [("c1", "f", {})])
    assert list(message) == ["role", "content", "reasoning_content", "tool_calls"]  # the bytes' order
    assert message["reasoning_content"] == "why" and message["tool_calls"][0]["id"] == "c1"
    assert assistant_message("", "", [])["reasoning_content"] == ""  # empty reasoning is still sent


def test_needs_repair():
    assert not needs_repair("off", True)
    assert needs_repair("fallback", True) and not needs_repair("fallback", False)
    assert needs_repair("always", True) and needs_repair("always", False)


def test_user_message_is_plain_text_when_every_part_is_text():
    assert user_message([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == {
        "role": "user", "content": "a\nb"}
    parts = [{"type": "text", "text": "a"}, IMAGE]
    assert user_message(parts) == {"role": "user", "content": parts}


def test_offer_tools_sends_choice_and_parallel_only_with_tools():
    tools = [{"type": "function", "function": {"name": "f"}}]
    chat: dict = {"model": "m"}
    offer_tools(chat, [], "required", False)
    assert chat == {"model": "m"}  # no tools: neither choice nor parallel means anything
    offer_tools(chat, tools)
    assert chat == {"model": "m", "tools": tools}
    offer_tools(chat, tools, "required", False)
    assert list(chat) == ["model", "tools", "tool_choice", "parallel_tool_calls"]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False


def test_a_turn_that_repeats_a_call_id_gets_one_answer_per_call_and_no_stray():
    """Found by the Gemini property test: two calls named `c1` in one turn used to send two `tool` messages for
    `c1`, and DeepSeek refuses the second as an answer to no call."""
    history = [{"role": "user", "content": "go"}, calling("c1", "c1", "c1~2"), tool("c1", "first"), tool("c1", "second")]
    out = answer_every_tool_call(history)
    assert [call["id"] for call in out[1]["tool_calls"]] == ["c1", "c1~3", "c1~2"]
    assert out[2:] == [tool("c1", "first"), tool("c1~3", "second"), tool("c1~2", NO_TOOL_OUTPUT)]
    assert history[1]["tool_calls"][1]["id"] == "c1"  # the input is not modified
    assert answer_every_tool_call(history) == out  # the same history, the same upstream bytes


def test_distinct_call_ids_leave_distinct_ids_alone():
    assert distinct_call_ids(["a", "b"]) is None
    assert distinct_call_ids(["a", "a", "a"]) == ["a", "a~2", "a~3"]
