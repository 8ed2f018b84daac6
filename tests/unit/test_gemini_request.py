"""Gemini GenerateContentRequest → Chat Completions request: issue 13's request and reasoning rules, checked on the
requests the real Gemini CLI sent (tests/fixtures/gemini-cli/) and on small hand-made histories.

Expected values are built from the fixture's own parts (or written out by hand), never copied from the translator's
output. Every translation is also checked by the fake DeepSeek's own rule checker.
"""

from __future__ import annotations

import base64
import json

import pytest

from deepseek_proxy.config import ModelConfig
from deepseek_proxy.jsonfast import dumps
from deepseek_proxy.translate.errors import RequestError
from deepseek_proxy.translate.gemini_request import (
    SKIP_SIGNATURE,
    decode_signature,
    encode_signature,
    json_schema,
    translate_gemini_request,
)
from deepseek_proxy.translate.gemini_stream import GeminiStream
from deepseek_proxy.translate.messages_request import (
    REASONING_PLACEHOLDER,
    reasoning_key,
)
from deepseek_proxy.translate.reasoning import ReasoningCache, ReasoningCodec
from deepseek_proxy.translate.responses_request import IMAGE_PLACEHOLDER, NO_TOOL_OUTPUT
from deepseek_proxy.translate.tools import flat_tool_name
from tests.conftest import GEMINI_FIXTURES
from tests.fakes.fake_deepseek import Rejection
from tests.unit.request_translation import (
    CODEC,
    DEEPSEEK,
    PRO,
    VISION,
    captured_requests_with,
    check_with_deepseek_rules,
    translated_untouched,
)

REQUEST_FIXTURES = captured_requests_with(GEMINI_FIXTURES, "contents")
PNG = base64.b64encode(b"\x89PNG fake").decode()


def fixture_body(name: str) -> dict:
    return json.loads((GEMINI_FIXTURES / f"{name}.json").read_text())["body"]


def translate(body, model=PRO, profile=DEEPSEEK, cache=None, **kwargs):
    return translated_untouched(translate_gemini_request, body, model, profile, CODEC, cache, **kwargs)


def user(*parts) -> dict:
    return {"role": "user", "parts": [p if isinstance(p, dict) else {"text": p} for p in parts]}


def model_turn(*parts) -> dict:
    return {"role": "model", "parts": list(parts)}


def call(name, args, call_id=None, signature=None) -> dict:
    part: dict = {"functionCall": {"name": name, "args": args, **({"id": call_id} if call_id else {})}}
    if signature:
        part["thoughtSignature"] = signature
    return part


def response(name, output, call_id=None) -> dict:
    return {"functionResponse": {"name": name, "response": {"output": output}, **({"id": call_id} if call_id else {})}}


TOOLS = [{"functionDeclarations": [
    {"name": "run_shell_command", "description": "Run a command",
     "parametersJsonSchema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}},
    {"name": "read_file", "description": "Read a file",
     "parametersJsonSchema": {"type": "object", "properties": {"file_path": {"type": "string"}}}},
]}]


# --------------------------------------------------------------------------------------------------------------------
# The captured Gemini CLI requests
# --------------------------------------------------------------------------------------------------------------------


def test_every_request_fixture_is_found():
    assert set(REQUEST_FIXTURES) == {"router_classifier_generateContent", "stream_turn1",
                                     "stream_turn3_parallel_function_responses", "deepseek_model_turn1",
                                     "deepseek_model_turn3"}


@pytest.mark.parametrize("name", REQUEST_FIXTURES)
def test_every_fixture_translates_and_passes_deepseeks_rules(name):
    body = fixture_body(name)
    chat = translate(body)
    check_with_deepseek_rules(chat.body)
    system = "\n".join(p["text"] for p in body["systemInstruction"]["parts"])
    assert chat.body["messages"][0] == {"role": "system", "content": system}
    declared = [d["name"] for t in body.get("tools", []) for d in t["functionDeclarations"]]
    assert [t["function"]["name"] for t in chat.body.get("tools", [])] == [flat_tool_name(n) for n in declared]
    assert all("strict" not in t["function"] for t in chat.body.get("tools", []))  # DeepSeek's beta-only field
    assert "top_k" not in chat.body  # DeepSeek takes no top_k
    assert chat.body["temperature"] == body["generationConfig"]["temperature"]
    assert chat.body["top_p"] == body["generationConfig"]["topP"]


@pytest.mark.parametrize("name", ["stream_turn3_parallel_function_responses", "deepseek_model_turn3"])
def test_parallel_function_responses_answer_every_call_in_call_order(name):
    body = fixture_body(name)
    chat = translate(body)
    messages = chat.body["messages"]
    calls = [p["functionCall"] for c in body["contents"] if c["role"] == "model" for p in c["parts"]]
    emitted = [tc for m in messages if m["role"] == "assistant" for tc in m["tool_calls"]]
    assert [tc["id"] for tc in emitted] == [c["id"] for c in calls]  # the client's ids, kept
    assert [json.loads(tc["function"]["arguments"]) for tc in emitted] == [c["args"] for c in calls]
    outputs = {p["functionResponse"]["id"]: p["functionResponse"]["response"]["output"]
               for c in body["contents"] for p in c["parts"] if "functionResponse" in p}
    tool_messages = [m for m in messages if m["role"] == "tool"]
    assert [(m["tool_call_id"], m["content"]) for m in tool_messages] == [(c["id"], outputs[c["id"]]) for c in calls]
    # The signatures in the fixture are the mock's, not ours: the turns are repaired, and with repair off DeepSeek
    # refuses the request, which is what the repair is for.
    assert [m["reasoning_content"] for m in messages if m["role"] == "assistant"] == [REASONING_PLACEHOLDER] * 2
    with pytest.raises(Rejection) as refused:
        check_with_deepseek_rules(translate(body, repair="off").body)
    assert refused.value.reason == "missing_reasoning_content"


def test_parallel_responses_listed_out_of_order_still_follow_the_calls():
    body = fixture_body("stream_turn3_parallel_function_responses")
    body["contents"][-1]["parts"].reverse()
    forward = translate(fixture_body("stream_turn3_parallel_function_responses")).body
    assert dumps(translate(body).body) == dumps(forward)


def test_turn_one_is_a_byte_prefix_of_turn_three():
    first = translate(fixture_body("stream_turn1")).body
    third = translate(fixture_body("stream_turn3_parallel_function_responses")).body
    assert dumps(third["tools"]) == dumps(first["tools"])
    assert dumps(third["messages"][: len(first["messages"])]) == dumps(first["messages"])


def test_router_call_gets_json_object_with_the_schema_stated():
    body = fixture_body("router_classifier_generateContent")
    chat = translate(body)
    assert chat.body["response_format"] == {"type": "json_object"}
    last = chat.body["messages"][-1]
    assert last["role"] == "system" and "json" in last["content"].lower()
    # The router's schema uses Gemini's upper-case types even in responseJsonSchema: JSON Schema's lower-case ones.
    stated = json.loads(last["content"].split("\n", 1)[1])
    assert stated == {"type": "object", "properties": {
        "complexity_reasoning": {"type": "string", "description": "Brief explanation for the score."},
        "complexity_score": {"type": "integer", "description": "Complexity score from 1-100."}},
        "required": ["complexity_reasoning", "complexity_score"]}
    # Two user contents in a row stay two messages (merging would rewrite the first one next time).
    assert [m["role"] for m in chat.body["messages"]] == ["system", "user", "user", "system"]


def test_next_speaker_style_request_without_the_word_json_passes():
    body = {"contents": [user("Who speaks next? Answer with the schema.")],
            "generationConfig": {"responseMimeType": "application/json", "responseSchema": {
                "type": "OBJECT", "properties": {"next_speaker": {"type": "STRING", "enum": ["user", "model"]},
                                                 "reasoning": {"type": "STRING", "nullable": True}},
                "required": ["reasoning", "next_speaker"], "propertyOrdering": ["reasoning", "next_speaker"]}}}
    chat = translate(body, allow_thinking=False)
    check_with_deepseek_rules(chat.body)
    assert chat.body["thinking"] == {"type": "disabled"}
    stated = json.loads(chat.body["messages"][-1]["content"].split("\n", 1)[1])
    assert stated["properties"] == {"next_speaker": {"type": "string", "enum": ["user", "model"]},
                                    "reasoning": {"type": ["string", "null"]}}


# --------------------------------------------------------------------------------------------------------------------
# Reasoning through thoughtSignature
# --------------------------------------------------------------------------------------------------------------------


def test_signature_is_standard_base64_and_authenticated():
    signature = encode_signature(CODEC, "I think, therefore")
    base64.b64decode(signature, validate=True)  # Gemini CLI checks this
    assert decode_signature(CODEC, signature) == "I think, therefore"
    assert decode_signature(ReasoningCodec(b"another-secret"), signature) is None
    assert decode_signature(CODEC, "c2lnLWdlbWluaS0w") is None  # a foreign (mock) signature
    assert decode_signature(CODEC, SKIP_SIGNATURE) is None
    tampered = base64.b64encode(base64.b64decode(signature)[:-2] + b"AA").decode()
    assert decode_signature(CODEC, tampered) is None
    urlsafe = signature.replace("+", "-").replace("/", "_").rstrip("=")
    assert decode_signature(CODEC, urlsafe) == "I think, therefore"


def _reply(chunks, tool_map, include_thoughts=True):
    stream = GeminiStream(model="gemini-3.8-flash", tool_map=tool_map, codec=CODEC, include_thoughts=include_thoughts)
    for chunk in chunks:
        stream.feed(chunk)
    stream.finish()
    return stream


def _delta(**delta):
    return {"choices": [{"index": 0, "delta": delta}]}


def test_reasoning_round_trips_through_the_signature_and_the_prefix_holds():
    first_body = {"contents": [user("create out.txt")], "tools": TOOLS,
                  "generationConfig": {"thinkingConfig": {"includeThoughts": True}}}
    first = translate(first_body)
    stream = _reply([
        _delta(reasoning_content="Use the "), _delta(reasoning_content="shell."),
        _delta(tool_calls=[{"index": 0, "id": "call_00_a", "function": {"name": "run_shell_command", "arguments": ""}}]),
        _delta(tool_calls=[{"index": 0, "function": {"arguments": '{"command": "echo hi > out.txt"}'}}]),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ], first.tool_map)
    # Gemini CLI keeps the non-thought parts (the functionCall part with its signature) and drops the thought parts.
    kept = [p for p in stream.response["candidates"][0]["content"]["parts"] if not p.get("thought")]
    second_body = {**first_body, "contents": [
        *first_body["contents"], {"role": "model", "parts": kept},
        user(response("run_shell_command", "done", "call_00_a"))]}
    second = translate(second_body)
    check_with_deepseek_rules(second.body)
    assistant = second.body["messages"][len(first.body["messages"])]
    assert assistant["reasoning_content"] == "Use the shell."
    assert assistant["tool_calls"] == [{"id": "call_00_a", "type": "function", "function": {
        "name": "run_shell_command", "arguments": '{"command":"echo hi > out.txt"}'}}]
    assert second.repaired_turns == []
    assert dumps(second.body["messages"][: len(first.body["messages"])]) == dumps(first.body["messages"])


def test_skipped_signature_falls_back_to_the_reasoning_cache_then_the_repair():
    cache = ReasoningCache()
    tool_map = translate({"contents": [user("x")], "tools": TOOLS}).tool_map
    stream = _reply([
        _delta(reasoning_content="Check twice."),
        _delta(tool_calls=[{"index": 0, "id": "c1", "function": {"name": "read_file", "arguments": '{"file_path":"a"}'}}]),
        _delta(tool_calls=[{"index": 1, "id": "c2", "function": {"name": "read_file", "arguments": '{"file_path":"b"}'}}]),
    ], tool_map)
    for key, reasoning in stream.reasoning_entries():
        cache.put(key, reasoning)
    # What Gemini CLI sends on --resume: the signature replaced by the skip marker, on the first call only.
    history = [user("x"), model_turn(call("read_file", {"file_path": "a"}, "c1", SKIP_SIGNATURE),
                                     call("read_file", {"file_path": "b"}, "c2")),
               user(response("read_file", "A", "c1"), response("read_file", "B", "c2"))]
    body = {"contents": history, "tools": TOOLS}
    restored = translate(body, cache=cache)
    assert restored.body["messages"][1]["reasoning_content"] == "Check twice."
    assert restored.repaired_turns == [1]
    placeholder = translate(body)  # no cache: the placeholder
    assert placeholder.body["messages"][1]["reasoning_content"] == REASONING_PLACEHOLDER
    check_with_deepseek_rules(placeholder.body)
    assert "reasoning_content" not in translate(body, cache=cache, repair="off").body["messages"][1]


def test_a_text_answer_resumed_without_its_signature_keeps_the_prefix_byte_for_byte():
    """Gemini CLI's --resume replaces every earlier thoughtSignature with the skip marker, those of turns that
    answered in text too; their reasoning comes back from the cache, so the resumed prompt is the cached one."""
    cache = ReasoningCache()
    tool_map = translate({"contents": [user("q")], "tools": TOOLS}).tool_map
    stream = _reply([_delta(reasoning_content="Say hi."), _delta(content="Hi"), _delta(content=" there.")], tool_map)
    for key, reasoning in stream.reasoning_entries():
        cache.put(key, reasoning)
    signature = encode_signature(CODEC, "Say hi.")  # what the stream put on the reply's first text part
    live = [user("q"), model_turn({"text": "Hi there.", "thoughtSignature": signature}), user("next")]
    resumed = [user("q"), model_turn({"text": "Hi there.", "thoughtSignature": SKIP_SIGNATURE}), user("next")]
    before = translate({"contents": live, "tools": TOOLS}, cache=cache)
    after = translate({"contents": resumed, "tools": TOOLS}, cache=cache)
    assert before.body["messages"][1]["reasoning_content"] == "Say hi."
    assert dumps(after.body["messages"]) == dumps(before.body["messages"])
    assert after.repaired_turns == [1]
    # another text is another turn: nothing restored (no reasoning is better than a wrong one)
    other = [user("q"), model_turn({"text": "Hello.", "thoughtSignature": SKIP_SIGNATURE}), user("next")]
    assert "reasoning_content" not in translate({"contents": other, "tools": TOOLS}, cache=cache).body["messages"][1]


def test_thought_parts_are_dropped_but_their_text_is_the_reasoning_when_no_signature_is_ours():
    history = [user("q"), model_turn({"text": "pondering", "thought": True}, {"text": "answer"}), user("more")]
    chat = translate({"contents": history}, repair="always")
    assert chat.body["messages"][1] == {"role": "assistant", "content": "answer", "reasoning_content": "pondering"}
    signed = model_turn({"text": "visible thought", "thought": True, "thoughtSignature": encode_signature(CODEC, "R")},
                        {"text": "answer"})
    chat = translate({"contents": [user("q"), signed, user("more")]})
    assert chat.body["messages"][1]["reasoning_content"] == "R"  # our signature wins over the thought text


def test_text_turns_are_repaired_only_with_repair_always():
    history = [user("q"), model_turn({"text": "a"}), user("b")]
    assert "reasoning_content" not in translate({"contents": history}).body["messages"][1]
    assert translate({"contents": history}, repair="always").body["messages"][1]["reasoning_content"] == (
        REASONING_PLACEHOLDER)
    with pytest.raises(ValueError):
        translate({"contents": history}, repair="sometimes")


# --------------------------------------------------------------------------------------------------------------------
# Function calls and responses
# --------------------------------------------------------------------------------------------------------------------


def test_a_call_without_a_response_gets_a_placeholder_answer():
    history = [user("q"), model_turn(call("read_file", {"file_path": "a"}, "c1"), call("read_file", {}, "c2")),
               user(response("read_file", "A", "c1"), "and now?")]
    chat = translate({"contents": history, "tools": TOOLS}, repair="fallback")
    check_with_deepseek_rules(chat.body)
    assert [(m["role"], m.get("tool_call_id"), m["content"]) for m in chat.body["messages"][2:]] == [
        ("tool", "c1", "A"), ("tool", "c2", NO_TOOL_OUTPUT), ("user", None, "and now?")]


def test_calls_without_ids_are_paired_by_name_and_get_stable_ids():
    history = [user("q"), model_turn(call("read_file", {"file_path": "a"}), call("run_shell_command", {"command": "ls"}),
                                     call("read_file", {"file_path": "b"})),
               user(response("run_shell_command", "files"), response("read_file", "A"), response("read_file", "B"))]
    chat = translate({"contents": history, "tools": TOOLS})
    check_with_deepseek_rules(chat.body)
    ids = [tc["id"] for tc in chat.body["messages"][1]["tool_calls"]]
    assert ids == ["call_1_0", "call_1_1", "call_1_2"]
    assert [(m["tool_call_id"], m["content"]) for m in chat.body["messages"][2:]] == [
        ("call_1_0", "A"), ("call_1_1", "files"), ("call_1_2", "B")]


def test_a_response_repeated_on_resume_is_dropped_and_a_stray_one_becomes_text():
    history = [user("q"), model_turn(call("read_file", {"file_path": "a"}, "c1")), user(response("read_file", "A", "c1")),
               model_turn({"text": "ok"}), user(response("read_file", "A", "c1"), response("read_file", "Z", "zz"))]
    chat = translate({"contents": history, "tools": TOOLS})
    check_with_deepseek_rules(chat.body)
    assert chat.body["messages"][-1] == {"role": "user", "content": "Output of tool call zz:\nZ"}


def test_error_responses_and_structured_responses():
    history = [user("q"), model_turn(call("read_file", {}, "c1"), call("read_file", {}, "c2")),
               user({"functionResponse": {"id": "c1", "name": "read_file", "response": {"error": "no such file"}}},
                    {"functionResponse": {"id": "c2", "name": "read_file", "response": {"lines": 3, "ok": True}}})]
    messages = translate({"contents": history, "tools": TOOLS}).body["messages"]
    assert messages[2]["content"] == "[tool error] no such file"
    assert json.loads(messages[3]["content"]) == {"lines": 3, "ok": True}


def test_a_function_call_in_a_user_turn_is_refused():
    with pytest.raises(RequestError):
        translate({"contents": [user(call("read_file", {}, "c1"))]})


# --------------------------------------------------------------------------------------------------------------------
# Media
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["inlineData", "inline_data"])
def test_images_become_data_urls_or_a_placeholder(key):
    mime_key = "mimeType" if key == "inlineData" else "mime_type"
    body = {"contents": [user("what is this?", {key: {mime_key: "image/png", "data": PNG}})]}
    vision = translate(body, model=VISION).body["messages"][0]["content"]
    assert vision == [{"type": "text", "text": "what is this?"},
                      {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]
    text_only = translate(body).body
    check_with_deepseek_rules(text_only)
    assert text_only["messages"][0]["content"] == f"what is this?\n{IMAGE_PLACEHOLDER}"


def test_file_data_and_other_media_become_short_placeholders():
    body = {"contents": [user({"fileData": {"mimeType": "application/pdf", "fileUri": "https://x/y.pdf"}},
                              {"inlineData": {"mimeType": "audio/wav", "data": "AAAA"}})]}
    content = translate(body).body["messages"][0]["content"]
    assert "https://x/y.pdf" in content and "audio/wav" in content and "AAAA" not in content


# --------------------------------------------------------------------------------------------------------------------
# Tools, toolConfig, generationConfig, thinkingConfig
# --------------------------------------------------------------------------------------------------------------------


def test_openapi_parameters_become_json_schema():
    declaration = {"name": "mcp.server/tool", "description": "d", "parameters": {
        "type": "OBJECT", "properties": {
            "when": {"type": "STRING", "format": "date-time", "nullable": True},
            "mode": {"type": "STRING", "enum": ["a", "b"]},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "min_items": 1},
            "either": {"anyOf": [{"type": "INTEGER"}, {"type": "BOOLEAN"}]}},
        "required": ["mode"], "propertyOrdering": ["mode", "when", "tags", "either"]}}
    chat = translate({"contents": [user("q")], "tools": [{"functionDeclarations": [declaration]},
                                                         {"googleSearch": {}}, {"codeExecution": {}}]})
    check_with_deepseek_rules(chat.body)
    function = chat.body["tools"][0]["function"]
    assert function["name"] == flat_tool_name("mcp.server/tool") != "mcp.server/tool"
    assert chat.tool_map.origin(function["name"]).name == "mcp.server/tool"
    assert function["parameters"] == {"type": "object", "properties": {
        "when": {"type": ["string", "null"], "format": "date-time"},
        "mode": {"type": "string", "enum": ["a", "b"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "either": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}}, "required": ["mode"]}
    assert chat.tool_map.dropped == ["googleSearch", "codeExecution"]


def test_json_schema_keeps_lower_case_schemas_as_written():
    schema = fixture_body("stream_turn1")["tools"][0]["functionDeclarations"][-1]["parametersJsonSchema"]
    assert json_schema(schema) == schema


@pytest.mark.parametrize(("config", "choice", "offered"), [
    ({"mode": "AUTO"}, None, 2),
    ({"mode": "NONE"}, "none", 2),
    ({"mode": "ANY"}, "required", 2),
    ({"mode": "ANY", "allowedFunctionNames": ["read_file"]},
     {"type": "function", "function": {"name": "read_file"}}, 1),
    ({"mode": "AUTO", "allowedFunctionNames": ["read_file"]}, None, 1),
])
def test_tool_config(config, choice, offered):
    chat = translate({"contents": [user("q")], "tools": TOOLS, "toolConfig": {"functionCallingConfig": config}})
    check_with_deepseek_rules(chat.body)
    assert chat.body.get("tool_choice") == choice
    assert len(chat.body["tools"]) == offered
    # A forced call runs without thinking: DeepSeek has been seen to refuse tool_choice forcing in thinking mode.
    assert chat.thinking is (config["mode"] != "ANY")


def test_tool_config_naming_an_unknown_function_is_refused():
    with pytest.raises(RequestError) as error:
        translate({"contents": [user("q")], "tools": TOOLS,
                   "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["nope"]}}})
    assert "nope" in error.value.message


def test_generation_config():
    chat = translate({"contents": [user("q")], "generationConfig": {
        "temperature": 0.2, "topP": 0.5, "topK": 3, "maxOutputTokens": 10_000_000, "stopSequences": ["END", ""],
        "candidateCount": 1, "presencePenalty": 0.1}}, upstream_stream=False)
    body = chat.body
    assert (body["temperature"], body["top_p"], body["presence_penalty"]) == (0.2, 0.5, 0.1)
    assert "top_k" not in body
    assert body["max_tokens"] == PRO.max_output_tokens
    assert body["stop"] == ["END"] and chat.stop_sequences == ("END",)
    assert body["stream"] is False and "stream_options" not in body
    check_with_deepseek_rules(body)


@pytest.mark.parametrize("config", [{"candidateCount": 2}, {"maxOutputTokens": 0}, {"temperature": "hot"},
                                    {"responseMimeType": "text/html"}, {"stopSequences": "END"},
                                    {"thinkingConfig": {"thinkingLevel": "EXTREME"}},
                                    {"thinkingConfig": {"thinkingBudget": -5}}])
def test_bad_generation_config_is_a_clear_400(config):
    with pytest.raises(RequestError) as error:
        translate({"contents": [user("q")], "generationConfig": config})
    assert error.value.status == 400 and error.value.param and error.value.param.startswith("generationConfig")


@pytest.mark.parametrize(("thinking_config", "fields", "include"), [
    (None, {"thinking": {"type": "enabled"}}, False),
    ({"includeThoughts": True}, {"thinking": {"type": "enabled"}}, True),
    ({"thinkingBudget": 0, "includeThoughts": True}, {"thinking": {"type": "disabled"}}, False),
    ({"thinkingBudget": -1}, {"thinking": {"type": "enabled"}}, False),
    ({"thinkingBudget": 512}, {"thinking": {"type": "enabled"}, "reasoning_effort": "low"}, False),
    ({"thinkingBudget": 4096}, {"thinking": {"type": "enabled"}, "reasoning_effort": "high"}, False),
    ({"thinkingBudget": 32768}, {"thinking": {"type": "enabled"}, "reasoning_effort": "high"}, False),
    ({"thinkingLevel": "LOW"}, {"thinking": {"type": "enabled"}, "reasoning_effort": "low"}, False),
    ({"thinkingLevel": "MINIMAL"}, {"thinking": {"type": "enabled"}, "reasoning_effort": "low"}, False),
    ({"thinkingLevel": "HIGH", "includeThoughts": True},
     {"thinking": {"type": "enabled"}, "reasoning_effort": "high"}, True),
])
def test_thinking_config(thinking_config, fields, include):
    config = {"thinkingConfig": thinking_config} if thinking_config is not None else {}
    chat = translate({"contents": [user("q")], "generationConfig": config})
    assert {k: chat.body[k] for k in ("thinking", "reasoning_effort") if k in chat.body} == fields
    assert chat.include_thoughts is include
    assert chat.thinking is (fields["thinking"]["type"] == "enabled")


def test_a_model_that_maps_max_to_max():
    model = ModelConfig(id="m", upstream_model="deepseek-v4-pro", effort_map={"high": "max"})
    chat = translate({"contents": [user("q")], "generationConfig": {"thinkingConfig": {"thinkingLevel": "HIGH"}}},
                     model=model)
    assert chat.body["reasoning_effort"] == "max"


@pytest.mark.parametrize("body", [[], {"contents": []}, {"contents": [{"role": "system", "parts": []}]},
                                  {"contents": [user("q")], "tools": {"functionDeclarations": []}},
                                  {"contents": [{"role": "user", "parts": [{"weird": 1}]}]},
                                  {"contents": [user("q")], "systemInstruction": 7},
                                  {"contents": [{"role": "user", "parts": []}], "systemInstruction": "S"},
                                  {"contents": [user("q"), model_turn(response("read_file", "A", "c1"))]}])
def test_malformed_bodies_are_request_errors(body):
    with pytest.raises(RequestError):
        translate(body)


def test_unknown_top_level_fields_are_reported_not_refused():
    chat = translate({"contents": [user("q")], "safetySettings": [], "futureField": 1})
    assert chat.unknown_fields == ["futureField"]


def test_snake_case_spellings_are_read_too():
    camel = translate({"contents": [user("q")], "systemInstruction": {"parts": [{"text": "S"}]},
                       "generationConfig": {"maxOutputTokens": 5, "thinkingConfig": {"thinkingBudget": 0}}})
    snake = translate({"contents": [user("q")], "system_instruction": {"parts": [{"text": "S"}]},
                       "generation_config": {"max_output_tokens": 5, "thinking_config": {"thinking_budget": 0}}})
    assert dumps(camel.body) == dumps(snake.body)


def test_on_resume_the_cached_reasoning_beats_the_trimmed_thought_text():
    cache = ReasoningCache()
    cache.put(reasoning_key([("c1", "read_file", {"file_path": "a"})]), "  exact reasoning\n")
    turn = model_turn({"text": "exact reasoning", "thought": True},
                      call("read_file", {"file_path": "a"}, "c1", SKIP_SIGNATURE))
    body = {"contents": [user("q"), turn, user(response("read_file", "A", "c1"))], "tools": TOOLS}
    assert translate(body, cache=cache).body["messages"][1]["reasoning_content"] == "  exact reasoning\n"
    assert translate(body).body["messages"][1]["reasoning_content"] == "exact reasoning"
    assert translate(body, cache=cache, repair="off").body["messages"][1]["reasoning_content"] == "exact reasoning"


def test_a_response_with_an_unknown_id_is_paired_by_name_but_a_repeat_is_not():
    history = [user("q"), model_turn(call("read_file", {"file_path": "a"}, "c1")), user(response("read_file", "A", "c1")),
               model_turn(call("read_file", {"file_path": "b"}, "c2")),
               user(response("read_file", "A", "c1"), response("read_file", "B", "client-made-id"))]
    messages = translate({"contents": history, "tools": TOOLS}).body["messages"]
    assert [(m["tool_call_id"], m["content"]) for m in messages if m["role"] == "tool"] == [("c1", "A"), ("c2", "B")]
    assert messages[-1]["role"] == "tool"  # the repeat of c1's answer is dropped, not sent as text


def test_forced_calls_switch_off_thoughts_too():
    chat = translate({"contents": [user("q")], "tools": TOOLS, "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
                      "generationConfig": {"thinkingConfig": {"includeThoughts": True}}})
    assert (chat.thinking, chat.include_thoughts) == (False, False)


def test_enum_output_states_the_values_without_json_mode():
    chat = translate({"contents": [user("pick")], "generationConfig": {
        "responseMimeType": "text/x.enum", "responseSchema": {"type": "STRING", "enum": ["red", "blue"]}}})
    assert "response_format" not in chat.body
    assert chat.body["messages"][-1]["role"] == "system" and "red, blue" in chat.body["messages"][-1]["content"]
    check_with_deepseek_rules(chat.body)
    with pytest.raises(RequestError):
        translate({"contents": [user("pick")], "generationConfig": {"responseMimeType": "text/x.enum"}})


def test_json_without_a_schema_still_names_json():
    chat = translate({"contents": [user("list three colours")],
                      "generationConfig": {"responseMimeType": "application/json"}})
    assert chat.body["response_format"] == {"type": "json_object"}
    check_with_deepseek_rules(chat.body)
