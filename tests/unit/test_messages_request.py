"""Messages request → Chat Completions request: the rules of issue 10's "Anthropic Messages door" (request and
reasoning) and issue 14's billing-header rule, checked on the requests the real Claude Code sent
(tests/fixtures/claude-code/) and on small hand-made histories.

Expected values are built from the fixture's own blocks (or written out by hand), never copied from the
translator's output. Every translation is also checked by the fake DeepSeek's own rule checker.
"""

from __future__ import annotations

import copy
import json

import pytest

from deepseek_proxy.jsonfast import dumps
from deepseek_proxy.translate.errors import RequestError
from deepseek_proxy.translate.messages_models import resolve_model
from deepseek_proxy.translate.messages_request import (
    PDF_PLACEHOLDER,
    REASONING_PLACEHOLDER,
    TOOL_ERROR_PREFIX,
    reasoning_key,
    translate_messages_request,
)
from deepseek_proxy.translate.reasoning import ReasoningCache
from deepseek_proxy.translate.responses_request import (
    IMAGE_FOLLOWS,
    IMAGE_PLACEHOLDER,
    NO_TOOL_OUTPUT,
)
from deepseek_proxy.translate.tools import flat_tool_name
from tests.conftest import CLAUDE_FIXTURES
from tests.unit.request_translation import (
    CODEC,
    DEEPSEEK,
    MODELS,
    OPENAI,
    PRO,
    VISION,
    captured_requests_with,
    check_with_deepseek_rules,
    translated_untouched,
)

BILLING = "x-anthropic-billing-header: cc_version=2.1.197.{suffix}; cc_entrypoint=sdk-cli;"


def fixture(name: str) -> dict:
    return json.loads((CLAUDE_FIXTURES / f"{name}.json").read_text())


def fixture_body(name: str) -> dict:
    body = fixture(name)["body"]
    body.setdefault("max_tokens", 32000)  # count_tokens bodies carry none
    return body


MESSAGE_FIXTURES = captured_requests_with(CLAUDE_FIXTURES, "messages")


def translate(body, model=PRO, profile=DEEPSEEK, cache=None, **kwargs):
    return translated_untouched(translate_messages_request, body, model, profile, CODEC, cache, **kwargs)


def simple(messages, **extra) -> dict:
    return {"model": "claude-opus-4-8", "max_tokens": 1000, "messages": messages, **extra}


TOOLS = [
    {"name": "Bash", "description": "Run a command", "input_schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
        "properties": {"command": {"type": "string"}}, "required": ["command"], "additionalProperties": False}},
    {"name": "Read", "description": "Read a file", "input_schema": {
        "type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}},
]
THINKING = {"thinking": {"type": "adaptive"}, "tools": TOOLS}


def tool_use(call_id: str, name: str = "Bash", **arguments) -> dict:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments or {"command": "ls"}}


def tool_result(call_id: str, content="ok", **extra) -> dict:
    return {"type": "tool_result", "tool_use_id": call_id, "content": content, **extra}


# ---- every captured request ----------------------------------------------------------------------------------------


def test_the_fixture_list_is_the_captured_requests():
    assert len(MESSAGE_FIXTURES) == 21  # every request in index.json but the HEAD probe
    assert "websearch_inner_server_tool" in MESSAGE_FIXTURES and "count_tokens_tools" in MESSAGE_FIXTURES


@pytest.mark.parametrize("name", MESSAGE_FIXTURES)
def test_every_claude_code_request_translates_and_passes_deepseeks_rules(name):
    body = fixture_body(name)
    model = resolve_model(body["model"], MODELS)
    assert model is not None
    chat = translate(body, model)
    checked = check_with_deepseek_rules(chat.body)
    assert checked["model"] == model.upstream_model
    assert chat.stream == bool(body.get("stream"))
    client_tools = [t for t in body.get("tools") or [] if t.get("type") in (None, "custom")]
    assert [t["function"]["name"] for t in chat.body.get("tools", [])] == [t["name"] for t in client_tools]
    assert chat.body["max_tokens"] == body["max_tokens"]  # no cap below the model's 384K


@pytest.mark.parametrize("name", MESSAGE_FIXTURES)
def test_every_block_of_every_fixture_reaches_the_upstream(name):
    """Every text, tool call and tool result the client sent is in the upstream request."""
    body = fixture_body(name)
    chat = translate(body, resolve_model(body["model"], MODELS))
    upstream = dumps(chat.body["messages"]).decode()
    calls = {c["id"]: json.loads(c["function"]["arguments"])
             for m in chat.body["messages"] for c in m.get("tool_calls", [])}
    for message in body["messages"]:
        blocks = [{"type": "text", "text": message["content"]}] if isinstance(message["content"], str) \
            else message["content"]
        for block in blocks:
            if block["type"] == "text":
                assert json.dumps(block["text"], ensure_ascii=False)[1:-1] in upstream
            elif block["type"] == "tool_use":
                assert calls[block["id"]] == block["input"]
            elif block["type"] == "tool_result":
                assert f'"tool_call_id":"{block["tool_use_id"]}"' in upstream


def test_system_blocks_and_mid_conversation_system_entries_stay_in_place():
    body = fixture_body("p_default_turn2_after_tool")
    messages = translate(body).body["messages"]
    assert messages[0] == {"role": "system", "content": "\n".join(b["text"] for b in body["system"])}
    assert messages[1]["role"] == "user"
    assert messages[2] == {"role": "system", "content": body["messages"][1]["content"]}
    assert [m["role"] for m in messages] == ["system", "user", "system", "assistant", "tool"]


def test_claude_codes_billing_header_block_is_dropped_so_sessions_share_the_prefix():
    def session(suffix: str) -> dict:
        body = fixture_body("p_default_turn1")
        body["system"][0] = {"type": "text", "text": BILLING.format(suffix=suffix)}
        return body

    first, second = translate(session("a1f")).body, translate(session("9c0")).body
    assert dumps(first) == dumps(second)
    assert "x-anthropic-billing-header" not in dumps(first).decode()
    # only blocks that START with it: the same words inside a block are the client's text
    body = fixture_body("p_default_turn1")
    body["system"][1] = {"type": "text", "text": "About " + BILLING.format(suffix="abc")}
    assert "About x-anthropic-billing-header" in translate(body).body["messages"][0]["content"]


def test_a_cch_nonce_in_the_billing_header_does_not_change_the_upstream_bytes():
    bodies = []
    for nonce in ("1a2b3", "ffe01"):
        body = fixture_body("p_default_turn2_after_tool")
        body["system"][0]["text"] = BILLING.format(suffix="abc") + f" cch={nonce};"
        bodies.append(dumps(translate(body).body))
    assert bodies[0] == bodies[1]


# ---- prefix stability ------------------------------------------------------------------------------------------------

SESSIONS = [
    ["p_default_turn1", "p_default_turn2_after_tool", "p_default_turn3_parallel_tools"],
    ["p_deepseek_turn1_bearer", "p_deepseek_turn3"],
    ["subagent_explore_haiku", "subagent_explore_after_tool"],
]


@pytest.mark.parametrize("session", SESSIONS, ids=lambda s: s[0])
def test_turn_n_upstream_messages_are_a_byte_prefix_of_turn_n_plus_1(session):
    previous = None
    for name in session:
        body = fixture_body(name)
        chat = translate(body, resolve_model(body["model"], MODELS)).body
        encoded = dumps(chat["messages"])
        if previous is not None:
            assert encoded.startswith(previous[0][:-1]), f"{name} rewrote the prefix of the turn before"
            assert dumps(chat["tools"]) == previous[1]
        previous = (encoded, dumps(chat["tools"]))


def test_the_same_history_gives_the_same_bytes_and_cache_markers_do_not_matter():
    body = fixture_body("p_default_turn3_parallel_tools")
    unmarked = copy.deepcopy(body)
    for message in unmarked["messages"]:
        for block in message["content"] if isinstance(message["content"], list) else []:
            block.pop("cache_control", None)
    for block in unmarked["system"]:
        block.pop("cache_control", None)
    unmarked.pop("metadata")
    unmarked.pop("context_management")
    assert dumps(translate(body).body) == dumps(translate(copy.deepcopy(body)).body) == dumps(translate(unmarked).body)


# ---- tool calls and results ------------------------------------------------------------------------------------------


def test_parallel_results_in_completion_order_follow_the_calls_order():
    body = fixture_body("p_default_turn3_parallel_tools")
    calls = [b for b in body["messages"][4]["content"] if b["type"] == "tool_use"]
    results = {b["tool_use_id"]: b for b in body["messages"][5]["content"]}
    assert [b["tool_use_id"] for b in body["messages"][5]["content"]] == [calls[1]["id"], calls[0]["id"]]
    messages = translate(body).body["messages"]
    assistant = messages[-3]
    assert [c["id"] for c in assistant["tool_calls"]] == [c["id"] for c in calls]
    assert [c["function"]["arguments"] for c in assistant["tool_calls"]] == [
        json.dumps(c["input"], separators=(",", ":")) for c in calls]
    assert messages[-2:] == [
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": results[calls[0]["id"]]["content"]},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": results[calls[1]["id"]]["content"]},
    ]


def test_every_tool_call_is_answered_and_a_stray_result_becomes_user_text():
    body = simple([
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [tool_use("call_a"), tool_use("call_b", "Read", file_path="/x")]},
        {"role": "user", "content": [tool_result("call_b", "B"), tool_result("call_zz", "lost"),
                                     {"type": "text", "text": "and then?"}]},
    ], tools=TOOLS)
    messages = translate(body).body["messages"]
    check_with_deepseek_rules(translate(body).body)
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "call_a", "content": NO_TOOL_OUTPUT},
        {"role": "tool", "tool_call_id": "call_b", "content": "B"},
        {"role": "user", "content": "Output of tool call call_zz:\nlost\nand then?"},
    ]


def test_a_system_entry_between_a_call_and_its_result_follows_the_answers():
    body = simple([
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [tool_use("call_a")]},
        {"role": "system", "content": "a reminder"},
        {"role": "user", "content": [tool_result("call_a")]},
    ], tools=TOOLS)
    chat = translate(body).body
    check_with_deepseek_rules(chat)
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant", "tool", "system"]


def test_tool_result_forms_block_lists_errors_and_images():
    agent = fixture_body("main_after_agent_tool")
    result = agent["messages"][3]["content"][0]
    tool_message = translate(agent).body["messages"][-1]
    assert tool_message["content"] == "\n".join(b["text"] for b in result["content"])

    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    body = simple([
        {"role": "user", "content": "shot"},
        {"role": "assistant", "content": [tool_use("call_a"), tool_use("call_b")]},
        {"role": "user", "content": [tool_result("call_a", [{"type": "text", "text": "see"}, image]),
                                     tool_result("call_b", "boom", is_error=True)]},
    ], tools=TOOLS)
    blind = translate(body).body["messages"]
    assert blind[2]["content"] == f"see\n{IMAGE_PLACEHOLDER}"
    assert blind[3]["content"] == TOOL_ERROR_PREFIX + "boom"
    seeing = translate(body, VISION).body["messages"]
    assert seeing[2]["content"] == f"see\n{IMAGE_FOLLOWS}"
    assert seeing[4] == {"role": "user", "content": [
        {"type": "text", "text": "Image output of tool call call_a:"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}
    check_with_deepseek_rules(translate(body).body)


def test_user_images_and_documents():
    blocks = [
        {"type": "text", "text": "look"},
        {"type": "image", "source": {"type": "url", "url": "https://example.test/a.png"}},
        {"type": "document", "title": "notes", "source": {"type": "text", "media_type": "text/plain",
                                                           "data": "line one"}},
        {"type": "document", "title": "spec", "source": {"type": "base64", "media_type": "application/pdf",
                                                          "data": "JVBERi0x"}},
    ]
    blind = translate(simple([{"role": "user", "content": blocks}])).body["messages"]
    assert blind == [{"role": "user", "content": "\n".join([
        "look", IMAGE_PLACEHOLDER, "[document: notes]\nline one", PDF_PLACEHOLDER.format(title=": spec")])}]
    seeing = translate(simple([{"role": "user", "content": blocks[:2]}]), VISION).body["messages"]
    assert seeing[0]["content"] == [{"type": "text", "text": "look"},
                                    {"type": "image_url", "image_url": {"url": "https://example.test/a.png"}}]


# ---- tools -------------------------------------------------------------------------------------------------------------


def test_tools_become_functions_and_server_tools_are_dropped_and_reported():
    body = fixture_body("websearch_inner_server_tool")
    chat = translate(body)
    assert chat.dropped_tools == ["web_search_20250305"]
    assert "tools" not in chat.body and "tool_choice" not in chat.body

    body = fixture_body("p_default_turn1")
    chat = translate(body)
    bash = next(t for t in body["tools"] if t["name"] == "Bash")
    function = next(t["function"] for t in chat.body["tools"] if t["function"]["name"] == "Bash")
    assert function == {"name": "Bash", "description": bash["description"], "parameters": bash["input_schema"]}


def test_long_mcp_tool_names_are_cleaned_and_map_back():
    name = "mcp__a-very-long-server-name-for-testing__and.a.dotted.tool.name.that.is.long"
    body = simple([{"role": "user", "content": "x"},
                   {"role": "assistant", "content": [tool_use("call_1", name, q="1")]},
                   {"role": "user", "content": [tool_result("call_1")]}],
                  tools=[{"name": name, "input_schema": {"type": "object"}}])
    chat = translate(body)
    upstream = flat_tool_name(name)
    assert upstream != name and len(upstream) <= 64
    assert chat.body["tools"][0]["function"]["name"] == upstream
    assert chat.body["messages"][1]["tool_calls"][0]["function"]["name"] == upstream
    assert chat.tool_map.origin(upstream).name == name
    check_with_deepseek_rules(chat.body)


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, None),
    ({"type": "any"}, "required"),
    ({"type": "none"}, "none"),
    ({"type": "tool", "name": "Read"}, {"type": "function", "function": {"name": "Read"}}),
])
def test_tool_choice(choice, expected):
    chat = translate(simple([{"role": "user", "content": "x"}], tools=TOOLS, tool_choice=choice)).body
    assert chat.get("tool_choice") == expected
    assert len(chat["tools"]) == 2  # "none" keeps the tools listed: the prefix stays the same


def test_tool_choice_errors_and_parallel_switch():
    with pytest.raises(RequestError) as error:
        translate(simple([{"role": "user", "content": "x"}], tools=TOOLS, tool_choice={"type": "tool", "name": "X"}))
    assert error.value.param == "tool_choice.name"
    with pytest.raises(RequestError, match="Thinking may not be enabled"):
        translate(simple([{"role": "user", "content": "x"}], tool_choice={"type": "any"}, **THINKING))
    no_parallel = {"type": "auto", "disable_parallel_tool_use": True}
    body = simple([{"role": "user", "content": "x"}], tools=TOOLS, tool_choice=no_parallel)
    assert translate(body, VISION, OPENAI).body["parallel_tool_calls"] is False
    assert "parallel_tool_calls" not in translate(body).body  # DeepSeek has no such parameter


# ---- thinking and parameters -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("thinking", "effort", "expected"), [
    ({"type": "adaptive"}, "high", {"thinking": {"type": "enabled"}, "reasoning_effort": "high"}),
    ({"type": "adaptive"}, "max", {"thinking": {"type": "enabled"}, "reasoning_effort": "max"}),
    ({"type": "adaptive"}, "medium", {"thinking": {"type": "enabled"}, "reasoning_effort": "high"}),
    ({"type": "enabled", "budget_tokens": 31999}, None, {"thinking": {"type": "enabled"}}),
    ({"type": "disabled"}, "high", {"thinking": {"type": "disabled"}}),
    (None, "high", {"thinking": {"type": "disabled"}}),
])
def test_thinking_and_effort(thinking, effort, expected):
    body = simple([{"role": "user", "content": "x"}])
    if thinking is not None:
        body["thinking"] = thinking
    if effort is not None:
        body["output_config"] = {"effort": effort}
    chat = translate(body).body
    assert {k: chat[k] for k in ("thinking", "reasoning_effort") if k in chat} == expected


def test_parameters_pass_through_per_profile():
    body = simple([{"role": "user", "content": "x"}], max_tokens=500_000, stop_sequences=["END", "STOP"],
                  temperature=0.5, top_p=0.9, top_k=40, metadata={"user_id": "u"},
                  context_management={"edits": []})
    chat = translate(body).body
    assert chat["max_tokens"] == PRO.max_output_tokens  # only the model's own limit
    assert chat["stop"] == ["END", "STOP"]
    assert (chat["temperature"], chat["top_p"]) == (0.5, 0.9)
    assert "top_k" not in chat and "metadata" not in chat and "context_management" not in chat
    assert translate(body).stop_sequences == ("END", "STOP")


def test_unknown_fields_are_ignored_and_reported_and_mcp_servers_are_dropped():
    body = simple([{"role": "user", "content": "x"}], some_future_field={"a": 1},
                  mcp_servers=[{"type": "url", "url": "https://mcp.example.test", "name": "m"}])
    chat = translate(body)
    assert chat.unknown_fields == ["some_future_field"]
    assert chat.dropped_tools == ["mcp_servers"]
    assert "some_future_field" not in chat.body and "mcp_servers" not in chat.body
    assert translate(fixture_body("p_default_turn1")).unknown_fields == []


def test_structured_output_becomes_json_object_with_the_schema_at_the_end():
    body = fixture_body("interactive_title_structured_output")
    chat = translate(body).body
    assert chat["response_format"] == {"type": "json_object"}
    assert chat["messages"][-1]["role"] == "system"
    assert '"required":["title"]' in chat["messages"][-1]["content"]
    check_with_deepseek_rules(chat)


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"max_tokens": 10, "messages": []}, "messages"),
    ({"max_tokens": 10, "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    ({"max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages.0.content.0.type"),
    ({"max_tokens": 10, "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"max_tokens": 10, "messages": [{"role": "user", "content": "x"}], "tools": {}}, "tools"),
    ({"max_tokens": 10, "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "max"}},
     "thinking.type"),
    ({"max_tokens": 10, "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
])
def test_bad_requests_name_the_parameter(body, param):
    with pytest.raises(RequestError) as error:
        translate(body)
    assert error.value.param == param and error.value.status == 400


# ---- reasoning both ways -------------------------------------------------------------------------------------------------


def assistant_turn(thinking_blocks: list[dict], calls=("call_a",)) -> dict:
    return simple([
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [*thinking_blocks, *[tool_use(c) for c in calls]]},
        {"role": "user", "content": [tool_result(c) for c in calls]},
    ], **THINKING)


def test_our_signature_carries_the_reasoning_back():
    signature = CODEC.encode("the real reasoning")
    chat = translate(assistant_turn([{"type": "thinking", "thinking": "shown text", "signature": signature}]))
    assert chat.body["messages"][1]["reasoning_content"] == "the real reasoning"
    check_with_deepseek_rules(chat.body)


@pytest.mark.parametrize("signature", ["", "c2lnbmF0dXJlLXR1cm4tMA==", "dsp1.forged.tag"])
def test_a_foreign_or_empty_signature_uses_the_visible_thinking(signature):
    chat = translate(assistant_turn([{"type": "thinking", "thinking": "visible", "signature": signature}]))
    assert chat.body["messages"][1]["reasoning_content"] == "visible"


def test_captured_replayed_thinking_comes_back_as_reasoning():
    body = fixture_body("p_default_turn3_parallel_tools")
    messages = translate(body).body["messages"]
    thinking = [b["thinking"] for m in body["messages"] if m["role"] == "assistant"
                for b in m["content"] if b["type"] == "thinking"]
    assert [m["reasoning_content"] for m in messages if m["role"] == "assistant"] == thinking


def test_thinking_less_tool_turn_is_repaired_from_the_cache_or_a_placeholder():
    body = assistant_turn([{"type": "redacted_thinking", "data": "opaque"}], calls=("call_a", "call_b"))
    chat = translate(body)
    assert chat.body["messages"][1]["reasoning_content"] == REASONING_PLACEHOLDER
    assert chat.repaired_turns == [1]
    check_with_deepseek_rules(chat.body)

    cache = ReasoningCache()
    cache.put(reasoning_key([("call_a", "Bash", {"command": "ls"}), ("call_b", "Bash", {"command": "ls"})]), "known")
    assert translate(body, cache=cache).body["messages"][1]["reasoning_content"] == "known"
    # the same ids with other arguments are another turn
    other = copy.deepcopy(body)
    other["messages"][1]["content"][1]["input"] = {"command": "rm -rf /"}
    assert translate(other, cache=cache).body["messages"][1]["reasoning_content"] == REASONING_PLACEHOLDER


def test_repair_modes():
    tool_turn = assistant_turn([])
    text_turn = simple([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                        {"role": "user", "content": "more"}], **THINKING)
    off = translate(tool_turn, repair="off").body
    assert "reasoning_content" not in off["messages"][1]
    with pytest.raises(Exception, match="reasoning_content"):
        check_with_deepseek_rules(off)  # what "off" means: the upstream decides
    assert "reasoning_content" not in translate(text_turn, repair="fallback").body["messages"][1]
    assert translate(text_turn, repair="always").body["messages"][1]["reasoning_content"] == REASONING_PLACEHOLDER
    with pytest.raises(ValueError):
        translate(tool_turn, repair="sometimes")


def test_no_reasoning_is_sent_when_thinking_is_off():
    body = assistant_turn([{"type": "thinking", "thinking": "t", "signature": ""}])
    body["thinking"] = {"type": "disabled"}
    chat = translate(body).body
    assert "reasoning_content" not in chat["messages"][1]
    check_with_deepseek_rules(chat)


def test_a_resumed_session_without_thinking_blocks_passes_deepseeks_rule():
    """The subagent fixture's history has a tool turn without thinking; in thinking mode it must still pass."""
    body = fixture_body("subagent_explore_after_tool")
    body["thinking"] = {"type": "adaptive"}
    chat = translate(body, MODELS["deepseek-v4-flash"]).body
    assert check_with_deepseek_rules(chat)["thinking"] == {"type": "enabled"}
