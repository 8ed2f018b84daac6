"""Responses request → Chat Completions request: every rule of issue 2's "Request translation", checked on the
requests the real Codex CLI sent (tests/fixtures/codex/) and on small hand-made histories.

Expected values are built from the fixture's own items (or written out by hand), never copied from the
translator's output.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from pathlib import Path

import pytest

from deepseek_proxy.config import ModelConfig
from deepseek_proxy.jsonfast import dumps
from deepseek_proxy.translate.errors import RequestError
from deepseek_proxy.translate.reasoning import ReasoningCache, ReasoningCodec
from deepseek_proxy.translate.responses_request import (
    FILE_PLACEHOLDER,
    IMAGE_PLACEHOLDER,
    NO_TOOL_OUTPUT,
    translate_request,
)
from deepseek_proxy.translate.responses_stream import ResponseStream
from deepseek_proxy.translate.tools import CUSTOM_INPUT_ARG, ToolOrigin, flat_tool_name, translate_tools
from deepseek_proxy.upstream.prepare import prepare_request
from tests.conftest import CODEX_FIXTURES, FAKE_KEY, codex_fixture
from tests.fakes.fake_deepseek import DeepSeekRules, Rejection
from tests.unit.request_translation import (
    CODEC,
    DEEPSEEK,
    OPENAI,
    PRO,
    VISION,
    check_with_deepseek_rules,
    translated_untouched,
)

NO_THINKING = ModelConfig(id="plain", upstream_model="deepseek-v4-flash", thinking=False)

REQUEST_FIXTURES = sorted(
    str(path.relative_to(CODEX_FIXTURES))
    for path in CODEX_FIXTURES.glob("*/*request*.json")
    if isinstance(json.loads(path.read_text()), dict) and "input" in json.loads(path.read_text())
)
MULTI_TURN_DIRS = ["normal", "reasoning_content", "minimal_sse", "view_image"]


def translate(body, model=PRO, profile=DEEPSEEK, cache=None, **kwargs):
    """The door's translation plus the upstream layer's clean-up: exactly what the upstream receives."""
    chat = translated_untouched(translate_request, body, model, profile, CODEC, **kwargs)
    chat.body = prepare_request(chat.body, model=model, profile=profile, thinking=chat.thinking, cache=cache)
    return chat


def messages_of(body, **kwargs) -> list[dict]:
    return translate(body, **kwargs).body["messages"]


def user(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def call(call_id: str, name: str = "exec_command", arguments: str = '{"cmd":"ls"}', **extra) -> dict:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments, **extra}


def output(call_id: str, text: str = "ok", kind: str = "function_call_output") -> dict:
    return {"type": kind, "call_id": call_id, "output": text}


def reasoning_item(text: str | None = None, *, blob: str | None = None, content: list | None = None) -> dict:
    item = {"type": "reasoning", "id": "rs_1", "summary": []}
    item["encrypted_content"] = CODEC.encode(text) if text is not None else blob
    item["content"] = content
    return item


def body_with(*items, **fields) -> dict:
    return {"model": "deepseek-v4-pro", "input": list(items), **fields}


def fixture_text(part_list) -> str:
    return "\n".join(part["text"] for part in part_list)


# ---- every captured request: DeepSeek accepts what we send ------------------------------------------------------------


def test_fixture_list_is_complete():
    assert len(REQUEST_FIXTURES) >= 20
    assert "normal/turn3_request.json" in REQUEST_FIXTURES and "tui/thread_title_request.json" in REQUEST_FIXTURES


@pytest.mark.parametrize("name", REQUEST_FIXTURES)
def test_every_fixture_is_accepted_by_deepseek_rules(name):
    chat = translate(codex_fixture(name))
    checked = check_with_deepseek_rules(chat.body)
    assert DeepSeekRules(FAKE_KEY, thinking_default=True).thinking_enabled(checked) is True
    assert all(m["role"] in ("system", "user", "assistant", "tool") for m in chat.body["messages"])


@pytest.mark.parametrize("name", REQUEST_FIXTURES)
def test_every_fixture_with_thinking_disabled_is_accepted(name):
    body = codex_fixture(name)
    body["reasoning"] = {"effort": "none"}
    chat = translate(body)
    check_with_deepseek_rules(chat.body)
    assert chat.thinking is False
    assert all("reasoning_content" not in m for m in chat.body["messages"])


@pytest.mark.parametrize("name", REQUEST_FIXTURES)
def test_every_fixture_with_a_warm_cache_is_accepted(name):
    body = codex_fixture(name)
    cache = ReasoningCache()
    for item in body["input"]:
        if item.get("call_id"):
            cache.put(item["call_id"], f"cached reasoning for {item['call_id']}")
    check_with_deepseek_rules(translate(body, cache=cache).body)


def test_the_rule_checker_does_reject_what_deepseek_rejects():
    # guard: the checks above would be worthless if the checker accepted everything
    chat = translate(codex_fixture("normal/turn2_request.json"))
    broken = copy.deepcopy(chat.body)
    del next(m for m in broken["messages"] if m.get("tool_calls"))["reasoning_content"]
    with pytest.raises(Rejection) as caught:
        check_with_deepseek_rules(broken)
    assert caught.value.reason == "missing_reasoning_content"


# ---- roles and content --------------------------------------------------------------------------------------------


def test_developer_messages_become_system_messages():
    body = codex_fixture("normal/turn1_request.json")
    developer = [item for item in body["input"] if item.get("role") == "developer"]
    assert len(developer) == 2 and len(developer[1]["content"]) == 2
    messages = messages_of(body)
    assert messages[0] == {"role": "system", "content": fixture_text(developer[0]["content"])}
    assert messages[1] == {"role": "system", "content": fixture_text(developer[1]["content"])}
    users = [item for item in body["input"] if item.get("role") == "user"]
    assert messages[2:] == [{"role": "user", "content": fixture_text(u["content"])} for u in users]


def test_system_role_input_message_is_a_system_message():
    messages = messages_of(body_with({"type": "message", "role": "system", "content": "rules"}, user("hi")))
    assert messages == [{"role": "system", "content": "rules"}, {"role": "user", "content": "hi"}]


def test_instructions_become_the_first_system_message():
    body = codex_fixture("normal/turn1_request.json")
    body["instructions"] = "You are terse."
    messages = messages_of(body)
    assert messages[0] == {"role": "system", "content": "You are terse."}
    assert messages[1]["role"] == "system" and messages[1]["content"] == fixture_text(body["input"][0]["content"])


def test_string_input_is_one_user_message():
    assert messages_of({"model": "m", "input": "hello", "instructions": "sys"}) == [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "hello"}]


def test_message_item_without_type_is_a_message():
    assert messages_of(body_with({"role": "user", "content": "typed implicitly"})) == [
        {"role": "user", "content": "typed implicitly"}]


def test_content_parts_to_text():
    body = body_with(
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "a"}, {"type": "input_file", "file_id": "file_1"},
            {"type": "input_text", "text": "b"}]},
        {"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "c", "annotations": []}, {"type": "refusal", "refusal": "no"}]},
        user("next"),
    )
    messages = messages_of(body)
    assert messages[0] == {"role": "user", "content": f"a\n{FILE_PLACEHOLDER}\nb"}
    assert messages[1] == {"role": "assistant", "content": "c\nno", "reasoning_content": ""}
    assert messages[2] == {"role": "user", "content": "next"}


def test_assistant_message_from_resume_fixture_keeps_its_text():
    body = codex_fixture("resume/second_user_turn_request.json")
    assistant_item = next(item for item in body["input"] if item.get("role") == "assistant")
    messages = messages_of(body)
    text_messages = [m for m in messages if m["role"] == "assistant" and not m.get("tool_calls")]
    assert [m["content"] for m in text_messages] == [fixture_text(assistant_item["content"])]
    assert messages[-1] == {"role": "user", "content": fixture_text(body["input"][-1]["content"])}


@pytest.mark.parametrize("bad, param", [
    ({"input": 5}, "input"),
    ({"input": [5]}, "input[0]"),
    ({"input": [{"type": "message", "role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "mystery"}]}, "input[0].type"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ({"input": []}, "input"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0]"),
    ({"input": [call("c1", arguments={"cmd": "ls"})]}, "input[0].arguments"),
    ({"input": "x", "instructions": ["not", "a", "string"]}, "instructions"),
    ({"input": "x", "reasoning": "high"}, "reasoning"),
])
def test_malformed_input_is_a_request_error_naming_the_param(bad, param):
    with pytest.raises(RequestError) as caught:
        translate({"model": "deepseek-v4-pro", **bad})
    assert caught.value.param == param and caught.value.status == 400


# ---- images -----------------------------------------------------------------------------------------------------------


def test_image_in_user_message_is_a_placeholder_for_a_text_only_model():
    body = codex_fixture("options/output_schema_verbosity_service_tier_image_request.json")
    parts = body["input"][3]["content"]
    assert [p["type"] for p in parts] == ["input_text", "input_image", "input_text", "input_text"]
    messages = messages_of(body)
    expected = "\n".join(IMAGE_PLACEHOLDER if p["type"] == "input_image" else p["text"] for p in parts)
    assert messages[3] == {"role": "user", "content": expected}
    assert "base64" not in dumps(messages).decode()


def test_image_in_user_message_is_an_image_part_for_an_image_model():
    body = codex_fixture("options/output_schema_verbosity_service_tier_image_request.json")
    parts = body["input"][3]["content"]
    messages = messages_of(body, model=VISION, profile=OPENAI)
    assert messages[3] == {"role": "user", "content": [
        {"type": "text", "text": parts[0]["text"]},
        {"type": "image_url", "image_url": {"url": parts[1]["image_url"], "detail": "high"}},
        {"type": "text", "text": parts[2]["text"]},
        {"type": "text", "text": parts[3]["text"]},
    ]}


def test_codex_already_replaced_the_image_for_a_text_only_catalog_entry():
    body = codex_fixture("options/image_with_text_only_model_request.json")
    messages = messages_of(body)
    assert isinstance(messages[3]["content"], str)
    assert messages[3]["content"] == fixture_text(body["input"][3]["content"])


def test_image_tool_output_is_a_placeholder_for_a_text_only_model():
    body = codex_fixture("view_image/turn2_request.json")
    fco = body["input"][-1]
    assert isinstance(fco["output"], list) and fco["output"][0]["type"] == "input_image"
    messages = messages_of(body)
    assert messages[-1] == {"role": "tool", "tool_call_id": fco["call_id"], "content": IMAGE_PLACEHOLDER}
    check_with_deepseek_rules(translate(body).body)


def test_image_tool_output_reaches_an_image_model_in_a_user_message():
    body = codex_fixture("view_image/turn2_request.json")
    fco = body["input"][-1]
    image = fco["output"][0]
    messages = messages_of(body, model=VISION, profile=OPENAI)
    assistant, tool, follow_up = messages[-3:]
    assert [c["id"] for c in assistant["tool_calls"]] == [fco["call_id"]]
    # Chat tool messages carry text only: the tool message points at the image, which follows as user content.
    assert tool["role"] == "tool" and tool["tool_call_id"] == fco["call_id"] and isinstance(tool["content"], str)
    assert "does not accept" not in tool["content"]
    assert follow_up["role"] == "user"
    image_parts = [p for p in follow_up["content"] if p["type"] == "image_url"]
    assert image_parts == [{"type": "image_url", "image_url": {"url": image["image_url"], "detail": "high"}}]
    assert any(fco["call_id"] in p.get("text", "") for p in follow_up["content"])
    assert all(set(m) <= {"role", "content", "tool_calls", "tool_call_id", "reasoning_content"} for m in messages)


def test_image_outputs_of_parallel_calls_follow_all_the_answers():
    img = {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
    body = body_with(user("look"), call("c1", "view_image"), call("c2", "view_image"),
                     {"type": "function_call_output", "call_id": "c1", "output": [img]},
                     {"type": "function_call_output", "call_id": "c2",
                      "output": [{"type": "input_text", "text": "second"}, img]})
    messages = messages_of(body, model=VISION, profile=OPENAI)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "user"]
    assert "second" in messages[3]["content"]
    assert [p["image_url"]["url"] for p in messages[4]["content"] if p["type"] == "image_url"] == [
        img["image_url"], img["image_url"]]


# ---- function calls and outputs ------------------------------------------------------------------------------------


def test_function_call_and_output_from_fixture():
    body = codex_fixture("normal/turn2_request.json")
    fc = next(i for i in body["input"] if i["type"] == "function_call")
    fco = next(i for i in body["input"] if i["type"] == "function_call_output")
    messages = messages_of(body)
    assert messages[-2] == {
        "role": "assistant", "content": "", "reasoning_content": "",
        "tool_calls": [{"id": fc["call_id"], "type": "function",
                        "function": {"name": fc["name"], "arguments": fc["arguments"]}}],
    }
    assert messages[-1] == {"role": "tool", "tool_call_id": fc["call_id"], "content": fco["output"]}


def test_consecutive_calls_are_one_assistant_message_answered_in_call_order():
    body = body_with(user("go"), reasoning_item("plan"), call("c1"), call("c2", "write_stdin", "{}"),
                     output("c2", "two"), output("c1", "one"), user("thanks"))
    messages = messages_of(body)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "user"]
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["c1", "c2"]
    assert messages[1]["reasoning_content"] == "plan"
    assert [(m["tool_call_id"], m["content"]) for m in messages[2:4]] == [("c1", "one"), ("c2", "two")]
    check_with_deepseek_rules(translate(body).body)


def test_assistant_text_then_calls_is_one_message():
    body = body_with(user("go"), {"type": "message", "role": "assistant", "content": "Running it."},
                     call("c1"), output("c1"))
    messages = messages_of(body)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["content"] == "Running it." and [c["id"] for c in messages[1]["tool_calls"]] == ["c1"]


def test_sequential_calls_are_separate_turns():
    body = body_with(user("go"), call("c1"), output("c1"), call("c2"), output("c2"))
    messages = messages_of(body)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "tool"]
    check_with_deepseek_rules(translate(body).body)


def test_missing_output_is_filled_before_the_next_message():
    body = body_with(user("go"), call("c1"), call("c2"), output("c1", "one"), user("stop"))
    messages = messages_of(body)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "user"]
    assert messages[3] == {"role": "tool", "tool_call_id": "c2", "content": NO_TOOL_OUTPUT}
    check_with_deepseek_rules(translate(body).body)


def test_call_at_the_very_end_without_output_is_answered():
    body = body_with(user("go"), call("c1"))
    messages = messages_of(body)
    assert messages[-1] == {"role": "tool", "tool_call_id": "c1", "content": NO_TOOL_OUTPUT}
    check_with_deepseek_rules(translate(body).body)


def test_stray_and_duplicate_outputs_become_user_text():
    body = body_with(user("go"), output("ghost", "boo"), call("c1"), output("c1", "one"), output("c1", "again"),
                     output("other", "x"))
    messages = messages_of(body)
    assert messages[1] == {"role": "user", "content": "Output of tool call ghost:\nboo"}
    assert messages[3] == {"role": "tool", "tool_call_id": "c1", "content": "one"}
    assert messages[4:] == [{"role": "user", "content": "Output of tool call c1:\nagain"},
                            {"role": "user", "content": "Output of tool call other:\nx"}]
    check_with_deepseek_rules(translate(body).body)


def test_every_tool_call_id_is_answered_in_every_fixture():
    for name in REQUEST_FIXTURES:
        messages = messages_of(codex_fixture(name))
        for index, message in enumerate(messages):
            for tool_call in message.get("tool_calls") or ():
                following = messages[index + 1: index + 1 + len(message["tool_calls"])]
                assert tool_call["id"] in [m.get("tool_call_id") for m in following], (name, tool_call["id"])


def test_array_output_text_parts_are_joined():
    body = body_with(user("go"), call("c1"), {"type": "function_call_output", "call_id": "c1", "output": [
        {"type": "input_text", "text": "line 1"}, {"type": "input_text", "text": "line 2"}]})
    assert messages_of(body)[-1]["content"] == "line 1\nline 2"


# ---- custom (freeform) tools ---------------------------------------------------------------------------------------


def test_custom_apply_patch_becomes_a_function_with_one_input_string():
    body = codex_fixture("normal/turn1_request.json")
    custom = next(t for t in body["tools"] if t["type"] == "custom")
    assert custom["name"] == "apply_patch" and custom["format"]["syntax"] == "lark"
    tools = translate(body).body["tools"]
    (tool,) = [t for t in tools if t["function"]["name"] == "apply_patch"]
    assert tool["type"] == "function"
    parameters = tool["function"]["parameters"]
    assert parameters["type"] == "object" and parameters["required"] == [CUSTOM_INPUT_ARG]
    assert list(parameters["properties"]) == [CUSTOM_INPUT_ARG]
    assert parameters["properties"][CUSTOM_INPUT_ARG]["type"] == "string"
    assert parameters["additionalProperties"] is False
    description = tool["function"]["description"]
    assert custom["format"]["definition"] in description  # the grammar, verbatim, so the model writes valid patches
    assert "lark" in description and custom["description"] in description
    assert "strict" not in tool["function"]


def test_custom_tool_call_replay_is_a_function_call_with_input_argument():
    body = codex_fixture("normal/turn3_request.json")
    ctc = next(i for i in body["input"] if i["type"] == "custom_tool_call")
    ctco = next(i for i in body["input"] if i["type"] == "custom_tool_call_output")
    messages = messages_of(body)
    assistant = next(m for m in messages if m.get("tool_calls") and m["tool_calls"][0]["id"] == ctc["call_id"])
    (tool_call,) = assistant["tool_calls"]
    assert tool_call["function"]["name"] == "apply_patch"
    assert json.loads(tool_call["function"]["arguments"]) == {"input": ctc["input"]}
    answer = messages[messages.index(assistant) + 1]
    assert answer == {"role": "tool", "tool_call_id": ctc["call_id"], "content": ctco["output"]}


def test_custom_tool_with_no_grammar_still_has_one_input_argument():
    tools, tool_map = translate_tools([{"type": "custom", "name": "notes", "description": "Write notes."}], DEEPSEEK)
    assert tools[0]["function"]["parameters"]["required"] == ["input"]
    assert tools[0]["function"]["description"].startswith("Write notes.")
    assert tool_map.origin("notes") == ToolOrigin("custom", "notes", None)


# ---- namespaces and hosted tools -----------------------------------------------------------------------------------


def test_namespace_tools_are_flattened_and_mapped_back():
    body = codex_fixture("normal/turn1_request.json")
    namespace = next(t for t in body["tools"] if t["type"] == "namespace")
    chat = translate(body)
    names = [t["function"]["name"] for t in chat.body["tools"]]
    for inner in namespace["tools"]:
        flat = f"{namespace['name']}__{inner['name']}"
        assert flat in names
        assert chat.tool_map.origin(flat) == ToolOrigin("function", inner["name"], namespace["name"])
        tool = chat.body["tools"][names.index(flat)]["function"]
        assert tool["parameters"] == inner["parameters"]
    assert "multi_agent_v1__close_agent" in names
    assert len(names) == len(set(names))


def test_namespaced_tui_mcp_tools_are_flattened():
    body = codex_fixture("tui/turn1_request.json")
    chat = translate(body)
    expected = [f"{t['name']}__{inner['name']}" for t in body["tools"] if t["type"] == "namespace" for inner in t["tools"]]
    names = [t["function"]["name"] for t in chat.body["tools"]]
    assert set(expected) <= set(names) and any(n.startswith("mcp__codex_tui__") for n in expected)
    check_with_deepseek_rules(chat.body)


def test_function_call_with_namespace_is_replayed_under_the_flat_name():
    body = body_with(user("go"), call("c1", "close_agent", '{"target":"a1"}', namespace="multi_agent_v1"),
                     output("c1"))
    body["tools"] = codex_fixture("normal/turn1_request.json")["tools"]
    messages = messages_of(body)
    assert messages[1]["tool_calls"][0]["function"] == {"name": "multi_agent_v1__close_agent",
                                                       "arguments": '{"target":"a1"}'}


def test_hosted_web_search_is_dropped_and_reported():
    body = codex_fixture("normal/turn1_request.json")
    assert {"type": "web_search"} in [{"type": t["type"]} for t in body["tools"]]
    chat = translate(body)
    assert chat.tool_map.dropped == ["web_search"]
    assert all(t["type"] == "function" for t in chat.body["tools"])
    assert all("web_search" not in t["function"]["name"] for t in chat.body["tools"])
    kept = [t for t in body["tools"] if t["type"] in ("function", "custom")]
    nested = [i for t in body["tools"] if t["type"] == "namespace" for i in t["tools"]]
    assert len(chat.body["tools"]) == len(kept) + len(nested)


def test_function_strict_is_dropped_for_deepseek_and_kept_for_openai():
    tool = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}, "strict": True}
    assert "strict" not in translate_tools([tool], DEEPSEEK)[0][0]["function"]
    assert translate_tools([tool], OPENAI)[0][0]["function"]["strict"] is True


def test_empty_tools_list_is_omitted_on_compaction_turns():
    body = codex_fixture("compaction/compaction_request.json")
    assert body["tools"] == [] and body["tool_choice"] == "auto"
    chat = translate(body)
    assert "tools" not in chat.body and "tool_choice" not in chat.body and "parallel_tool_calls" not in chat.body
    check_with_deepseek_rules(chat.body)


def test_only_hosted_tools_means_no_tools():
    body = body_with(user("hi"), tools=[{"type": "web_search"}], tool_choice={"type": "web_search"})
    chat = translate(body)
    assert "tools" not in chat.body and "tool_choice" not in chat.body
    assert chat.tool_map.dropped == ["web_search"]


# ---- tool_choice, parallel_tool_calls, limits, sampling ------------------------------------------------------------


@pytest.mark.parametrize("choice, expected", [
    ("auto", "auto"),
    ("none", "none"),
    ("required", "required"),
    ({"type": "function", "name": "exec_command"}, {"type": "function", "function": {"name": "exec_command"}}),
    ({"type": "custom", "name": "apply_patch"}, {"type": "function", "function": {"name": "apply_patch"}}),
    ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "exec_command"}]}, "required"),
    ({"type": "allowed_tools", "mode": "auto", "tools": []}, "auto"),
    ({"type": "web_search"}, "auto"),
])
def test_tool_choice_forms(choice, expected):
    body = codex_fixture("normal/turn1_request.json")
    body["tool_choice"] = choice
    assert translate(body).body["tool_choice"] == expected


def test_tool_choice_absent_is_not_sent():
    body = codex_fixture("normal/turn1_request.json")
    del body["tool_choice"]
    assert "tool_choice" not in translate(body).body


@pytest.mark.parametrize("choice", [{"type": "function", "name": "no_such_tool"}, 7, ["auto"]])
def test_bad_tool_choice_is_a_request_error(choice):
    body = codex_fixture("normal/turn1_request.json")
    body["tool_choice"] = choice
    with pytest.raises(RequestError) as caught:
        translate(body)
    assert caught.value.param == "tool_choice"


@pytest.mark.parametrize("value", [True, False])
def test_parallel_tool_calls_only_for_profiles_that_accept_it(value):
    body = codex_fixture("normal/turn1_request.json")
    body["parallel_tool_calls"] = value
    assert "parallel_tool_calls" not in translate(body).body  # DeepSeek has no such parameter
    model = ModelConfig(id="gpt", upstream="local", upstream_model="gpt-x", thinking=False)
    assert translate(body, model=model, profile=OPENAI).body["parallel_tool_calls"] is value


@pytest.mark.parametrize("requested, sent", [(1, 1), (1000, 1000), (393_216, 393_216), (10**9, 393_216)])
def test_max_output_tokens_becomes_max_tokens_clamped(requested, sent):
    chat = translate(body_with(user("hi"), max_output_tokens=requested))
    assert chat.body["max_tokens"] == sent == min(requested, PRO.max_output_tokens)
    check_with_deepseek_rules(chat.body)


def test_max_output_tokens_clamped_to_the_models_configured_limit():
    model = ModelConfig(id="small", upstream_model="deepseek-v4-flash", max_output_tokens=8192)
    assert translate(body_with(user("hi"), max_output_tokens=50_000), model=model).body["max_tokens"] == 8192


def test_no_max_output_tokens_no_max_tokens():
    assert "max_tokens" not in translate(body_with(user("hi"))).body


@pytest.mark.parametrize("value", [0, -5, "100", 1.5, True])
def test_invalid_max_output_tokens(value):
    with pytest.raises(RequestError) as caught:
        translate(body_with(user("hi"), max_output_tokens=value))
    assert caught.value.param == "max_output_tokens"


def test_temperature_and_top_p_pass_through():
    chat = translate(body_with(user("hi"), temperature=0.2, top_p=0.9))
    assert chat.body["temperature"] == 0.2 and chat.body["top_p"] == 0.9
    chat = translate(body_with(user("hi"), temperature=1))
    assert chat.body["temperature"] == 1 and "top_p" not in chat.body


@pytest.mark.parametrize("key", ["temperature", "top_p"])
@pytest.mark.parametrize("value", ["0.5", True, [1]])
def test_invalid_sampling_values(key, value):
    with pytest.raises(RequestError) as caught:
        translate(body_with(user("hi"), **{key: value}))
    assert caught.value.param == key


# ---- text.format ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["options/output_schema_verbosity_service_tier_image_request.json",
                                  "tui/thread_title_request.json"])
def test_json_schema_becomes_json_object_plus_the_schema_in_a_system_message(name):
    body = codex_fixture(name)
    fmt = body["text"]["format"]
    assert fmt["type"] == "json_schema"
    chat = translate(body)
    assert chat.body["response_format"] == {"type": "json_object"}
    instruction = chat.body["messages"][-1]
    assert instruction["role"] == "system"
    assert "JSON" in instruction["content"]
    assert json.dumps(fmt["schema"], separators=(",", ":")) in instruction["content"]
    assert fmt["name"] in instruction["content"]
    # the format adds a message at the end; everything before is what the same request without it gives
    without = copy.deepcopy(body)
    del without["text"]["format"]
    assert chat.body["messages"][:-1] == translate(without).body["messages"]
    check_with_deepseek_rules(chat.body)


def test_json_object_format_gets_an_instruction_mentioning_json():
    chat = translate(body_with(user("list three colours"), text={"format": {"type": "json_object"}}))
    assert chat.body["response_format"] == {"type": "json_object"}
    assert chat.body["messages"][-1]["role"] == "system" and "JSON" in chat.body["messages"][-1]["content"]
    check_with_deepseek_rules(chat.body)


@pytest.mark.parametrize("text", [{"format": {"type": "text"}}, {"verbosity": "medium"}, {}])
def test_plain_text_format_sends_no_response_format(text):
    chat = translate(body_with(user("hi"), text=text))
    assert "response_format" not in chat.body and len(chat.body["messages"]) == 1


def test_unknown_text_format_is_a_request_error():
    with pytest.raises(RequestError) as caught:
        translate(body_with(user("hi"), text={"format": {"type": "grammar"}}))
    assert caught.value.param == "text.format.type"


# ---- reasoning.effort ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("effort, fields", [
    ("none", {"thinking": {"type": "disabled"}}),
    ("minimal", {"thinking": {"type": "enabled"}, "reasoning_effort": "low"}),
    ("low", {"thinking": {"type": "enabled"}, "reasoning_effort": "low"}),
    ("medium", {"thinking": {"type": "enabled"}, "reasoning_effort": "high"}),
    ("high", {"thinking": {"type": "enabled"}, "reasoning_effort": "high"}),
    ("xhigh", {"thinking": {"type": "enabled"}, "reasoning_effort": "high"}),
    ("max", {"thinking": {"type": "enabled"}, "reasoning_effort": "max"}),
])
def test_reasoning_effort_on_the_deepseek_profile(effort, fields):
    chat = translate(body_with(user("hi"), reasoning={"effort": effort, "summary": "auto"}))
    sent = {key: chat.body[key] for key in ("thinking", "reasoning_effort") if key in chat.body}
    assert sent == fields
    assert chat.thinking is (effort != "none")


def test_no_effort_means_thinking_on_with_the_upstream_default_effort():
    body = codex_fixture("fallback_no_catalog/turn2_request.json")
    assert "effort" not in body["reasoning"]
    chat = translate(body)
    assert chat.body["thinking"] == {"type": "enabled"} and "reasoning_effort" not in chat.body
    assert chat.thinking


def test_model_without_thinking_sends_no_thinking_fields_and_no_reasoning_content():
    chat = translate(codex_fixture("normal/turn3_request.json"), model=NO_THINKING)
    assert "thinking" not in chat.body and "reasoning_effort" not in chat.body
    assert not chat.thinking
    assert all("reasoning_content" not in m for m in chat.body["messages"])


def test_per_model_effort_map():
    model = ModelConfig(id="m", upstream_model="deepseek-v4-pro", effort_map={**PRO.effort_map, "medium": "max"})
    chat = translate(body_with(user("hi"), reasoning={"effort": "medium"}), model=model)
    assert chat.body["reasoning_effort"] == "max"


# ---- streaming, unknown fields, stored state -----------------------------------------------------------------------


def test_include_usage_whenever_the_upstream_streams():
    chat = translate(codex_fixture("normal/turn1_request.json"))
    assert chat.body["stream"] is True and chat.body["stream_options"] == {"include_usage": True}
    assert chat.stream is True


def test_blocking_upstream_call_has_no_stream_options():
    chat = translate(codex_fixture("normal/turn1_request.json"), upstream_stream=False)
    assert chat.body["stream"] is False and "stream_options" not in chat.body
    assert chat.stream is True  # the client still gets SSE
    model = ModelConfig(id="m", upstream_model="deepseek-v4-pro", stream=False)
    assert translate(codex_fixture("normal/turn1_request.json"), model=model).body["stream"] is False


def test_upstream_model_name_is_used():
    model = ModelConfig(id="alias", upstream_model="deepseek-v4-flash")
    assert translate(body_with(user("hi")), model=model).body["model"] == "deepseek-v4-flash"


def test_codex_fields_are_not_forwarded():
    chat = translate(codex_fixture("options/output_schema_verbosity_service_tier_image_request.json"))
    for key in ("input", "include", "store", "prompt_cache_key", "client_metadata", "service_tier", "text",
                "reasoning", "instructions"):
        assert key not in chat.body


@pytest.mark.parametrize("field", ["frobnicate", "messages", "n"])
def test_unknown_top_level_field_is_rejected_with_its_name(field):
    with pytest.raises(RequestError) as caught:
        translate(body_with(user("hi"), **{field: 1}))
    assert caught.value.param == field and caught.value.status == 400 and field in caught.value.message


def test_previous_response_id_is_a_clear_400():
    with pytest.raises(RequestError) as caught:
        translate(body_with(user("hi"), previous_response_id="resp_123"))
    assert caught.value.status == 400 and caught.value.param == "previous_response_id"
    assert "previous_response_id" in caught.value.message


def test_null_previous_response_id_and_store_true_are_accepted():
    chat = translate(body_with(user("hi"), previous_response_id=None, store=True))
    assert chat.body["messages"] == [{"role": "user", "content": "hi"}] and "store" not in chat.body


def test_body_must_be_an_object():
    with pytest.raises(RequestError):
        translate_request([], PRO, DEEPSEEK, CODEC)


# ---- reasoning replay ----------------------------------------------------------------------------------------------


def test_our_encrypted_content_decodes_back_to_reasoning_content():
    body = body_with(user("go"), reasoning_item("I should list the files."), call("c1"), output("c1"))
    assert messages_of(body)[1]["reasoning_content"] == "I should list the files."


def test_reasoning_from_a_real_stream_round_trips_through_the_client():
    """What ResponseStream emits as a reasoning item, echoed back by Codex, becomes reasoning_content again."""
    body = codex_fixture("normal/turn1_request.json")
    chat = translate(body)
    stream = ResponseStream(model="deepseek-v4-pro", tool_map=chat.tool_map, codec=CODEC)
    stream.start()
    for delta in ({"reasoning_content": ""}, {"reasoning_content": "Need to "}, {"reasoning_content": "run ls."},
                  {"tool_calls": [{"index": 0, "id": "call_x", "type": "function",
                                   "function": {"name": "exec_command", "arguments": '{"cmd":"ls"}'}}]}):
        stream.feed({"choices": [{"index": 0, "delta": delta}]})
    stream.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    stream.finish()
    # Codex echoes output items verbatim (plus the output it ran)
    next_body = copy.deepcopy(body)
    next_body["input"] += stream.response["output"] + [output("call_x", "a.txt")]
    messages = messages_of(next_body)
    assert messages[-2]["reasoning_content"] == "Need to run ls."
    assert messages[-2]["tool_calls"][0]["function"] == {"name": "exec_command", "arguments": '{"cmd":"ls"}'}
    check_with_deepseek_rules(translate(next_body).body)


def test_plain_reasoning_text_content_is_accepted():
    body = codex_fixture("reasoning_content/turn3_request.json")
    reasoning = [i for i in body["input"] if i["type"] == "reasoning"]
    assert all(r["encrypted_content"] is None for r in reasoning)
    messages = messages_of(body)
    with_calls = [m for m in messages if m.get("tool_calls")]
    assert [m["reasoning_content"] for m in with_calls] == [
        "".join(p["text"] for p in r["content"]) for r in reasoning]
    assert with_calls[0]["reasoning_content"] == "RAW THINKING: the user wants a file; call the tool."


@pytest.mark.parametrize("name", ["normal/turn3_request.json", "minimal_sse/turn3_request.json",
                                  "resume/second_user_turn_request.json"])
def test_foreign_encrypted_content_is_ignored(name):
    body = codex_fixture(name)
    blobs = [i["encrypted_content"] for i in body["input"] if i["type"] == "reasoning"]
    assert blobs and all(b.startswith("gAAAA") for b in blobs)
    text = dumps(translate(body).body).decode()
    assert "gAAAA" not in text and "mockEncrypted" not in text
    assert all(m["reasoning_content"] == "" for m in messages_of(body) if m["role"] == "assistant")


def test_blob_from_another_secret_is_ignored():
    other = ReasoningCodec(b"someone else").encode("not for you")
    body = body_with(user("go"), reasoning_item(blob=other), call("c1"), output("c1"))
    assert messages_of(body)[1]["reasoning_content"] == ""


def test_cache_fallback_by_call_id_when_the_reasoning_item_was_dropped():
    body = codex_fixture("normal/turn3_request.json")
    body["input"] = [i for i in body["input"] if i["type"] != "reasoning"]
    calls = [i["call_id"] for i in body["input"] if i["type"] in ("function_call", "custom_tool_call")]
    cache = ReasoningCache()
    for call_id in calls:
        cache.put(call_id, f"why {call_id}")
    messages = messages_of(body, cache=cache)
    assert [m["reasoning_content"] for m in messages if m.get("tool_calls")] == [f"why {c}" for c in calls]
    # without the cache there is nothing to replay
    assert [m["reasoning_content"] for m in messages_of(body) if m.get("tool_calls")] == ["", ""]


def test_cache_fallback_when_the_client_sent_a_foreign_blob():
    body = codex_fixture("normal/turn2_request.json")
    fc = next(i for i in body["input"] if i["type"] == "function_call")
    cache = ReasoningCache()
    cache.put(fc["call_id"], "cached thoughts")
    assert messages_of(body, cache=cache)[-2]["reasoning_content"] == "cached thoughts"


def test_cache_fallback_for_a_call_joining_an_assistant_text_message():
    body = body_with(user("go"), {"type": "message", "role": "assistant", "content": "Let me look."}, call("c1"),
                     output("c1"))
    cache = ReasoningCache()
    cache.put("c1", "cached")
    assert messages_of(body, cache=cache)[1]["reasoning_content"] == "cached"


def test_replayed_blob_wins_over_the_cache():
    body = body_with(user("go"), reasoning_item("from the blob"), call("c1"), output("c1"))
    cache = ReasoningCache()
    cache.put("c1", "from the cache")
    assert messages_of(body, cache=cache)[1]["reasoning_content"] == "from the blob"


def test_cache_is_not_used_when_thinking_is_disabled():
    cache = ReasoningCache()
    cache.put("c1", "cached")
    body = body_with(user("go"), call("c1"), output("c1"), reasoning={"effort": "none"})
    assert "reasoning_content" not in messages_of(body, cache=cache)[1]


@pytest.mark.parametrize("name", REQUEST_FIXTURES)
def test_every_assistant_message_has_reasoning_content_in_thinking_mode(name):
    messages = messages_of(codex_fixture(name))
    for message in messages:
        if message["role"] == "assistant":
            assert isinstance(message.get("reasoning_content"), str), name
        else:
            assert "reasoning_content" not in message


def test_reasoning_attaches_to_the_next_assistant_message_only():
    body = body_with(user("a"), reasoning_item("first"), {"type": "message", "role": "assistant", "content": "x"},
                     user("b"), call("c1"), output("c1"))
    messages = messages_of(body)
    assert messages[1]["reasoning_content"] == "first"
    assert messages[3]["reasoning_content"] == ""


def test_assistant_content_is_never_null():
    for name in REQUEST_FIXTURES:
        for message in messages_of(codex_fixture(name)):
            assert message["content"] is not None


# ---- determinism ---------------------------------------------------------------------------------------------------


def turn_files(directory: str) -> list[str]:
    files = sorted((CODEX_FIXTURES / directory).glob("turn*_request.json"))
    assert len(files) >= 2
    return [f"{directory}/{path.name}" for path in files]


def messages_prefix_bytes(messages: list[dict]) -> bytes:
    raw = dumps(messages)
    assert raw.endswith(b"]")
    return raw[:-1]


@pytest.mark.parametrize("model", [PRO, VISION], ids=["deepseek", "images"])
@pytest.mark.parametrize("directory", MULTI_TURN_DIRS)
def test_each_turn_is_a_byte_prefix_of_the_next(directory, model):
    profile = DEEPSEEK if model is PRO else OPENAI
    turns = [translate(codex_fixture(name), model=model, profile=profile).body for name in turn_files(directory)]
    for earlier, later in itertools.pairwise(turns):
        before, after = earlier["messages"], later["messages"]
        assert len(after) > len(before)
        for a, b in zip(before, after[:len(before)], strict=True):  # the earlier turn's messages, unchanged
            assert dumps(a) == dumps(b)
        assert messages_prefix_bytes(after).startswith(messages_prefix_bytes(before))
        assert dumps(earlier["tools"]) == dumps(later["tools"])
        assert {k: v for k, v in earlier.items() if k not in ("messages",)} == \
            {k: v for k, v in later.items() if k not in ("messages",)}


def test_prefix_holds_with_our_own_reasoning_blobs():
    """Turn 2 and turn 3 replay the same blob: the assistant message carries the same bytes both times."""
    first = body_with(user("go"), reasoning_item("plan A"), call("c1"), output("c1", "done"))
    second = copy.deepcopy(first)
    second["input"] += [reasoning_item("plan B"), call("c2"), output("c2", "done too"), user("thanks")]
    before, after = messages_of(first), messages_of(second)
    assert messages_prefix_bytes(after).startswith(messages_prefix_bytes(before))
    assert after[3]["reasoning_content"] == "plan B"


@pytest.mark.parametrize("name", REQUEST_FIXTURES)
def test_same_input_twice_gives_identical_bytes(name):
    body = codex_fixture(name)
    assert dumps(translate(body).body) == dumps(translate(codex_fixture(name)).body)


def test_fixture_dirs_exist():
    for directory in MULTI_TURN_DIRS:
        assert Path(CODEX_FIXTURES / directory).is_dir()


# ---- tool names the upstream would refuse ---------------------------------------------------------------------


def test_long_or_odd_tool_names_are_shortened_and_mapped_back():
    long_tool = "get_the_status_of_a_worktree_creation_job_that_is_still_running"
    tools = [
        {"type": "namespace", "name": "mcp__my_company_internal_server", "tools": [
            {"type": "function", "name": long_tool, "parameters": {"type": "object"}}]},
        {"type": "function", "name": "files.read", "parameters": {"type": "object"}},
    ]
    body = {"model": "deepseek-v4-pro", "input": "hi", "tools": tools}
    translated = translate(body)
    names = [t["function"]["name"] for t in translated.body["tools"]]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", n) for n in names), names
    assert names[1] != "files_read" and names[1].startswith("files_read_")  # a digest keeps it apart
    # A call under the upstream's name comes back as the client's own tool.
    stream = ResponseStream(model="m", tool_map=translated.tool_map, codec=CODEC)
    stream.start()
    stream.feed({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": names[0], "arguments": "{}"}}]}}]})
    item = [e for e in stream.finish() if e["type"] == "response.output_item.done"][0]["item"]
    assert (item["name"], item["namespace"]) == (long_tool, "mcp__my_company_internal_server")
    # The same call replayed in history gets the same upstream name (byte-stable requests).
    history = {**body, "input": [
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "call_1", "name": long_tool,
         "namespace": "mcp__my_company_internal_server", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "ok"}]}
    replayed = translate(history).body["messages"]
    assert replayed[1]["tool_calls"][0]["function"]["name"] == names[0]
    assert flat_tool_name("exec_command") == "exec_command"  # valid names are left exactly as they are


@pytest.mark.parametrize("kind", [["message"], {"a": 1}, 7])
def test_an_input_item_whose_type_is_not_a_string_is_a_request_error(kind):
    # The doors' schema rejects these first; the translator itself must not crash on them either (unhashable key).
    body = {"model": "deepseek-v4-pro", "input": [{"type": kind, "role": "user", "content": "hi"}]}
    with pytest.raises(RequestError) as caught:
        translate(body)
    assert caught.value.param == "input[0].type"
