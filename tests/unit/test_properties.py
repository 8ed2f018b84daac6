"""Property-based tests (hypothesis) of the translators.

- Any request the validation layer accepts translates without an exception other than RequestError, the upstream
  body and the echoed Response serialize, and a Codex-shaped history is accepted by the fake DeepSeek's own rules.
- Any chunk sequence fed to ResponseStream yields a well-formed event sequence: SDK-valid events in order, every
  delta after its item's output_item.added, and exactly one terminal event (completed, incomplete or failed), last.
"""

from __future__ import annotations

import copy
import json

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepseek_proxy.config import ModelConfig, default_models
from deepseek_proxy.frontdoors.openapi import openapi_document
from deepseek_proxy.frontdoors.responses import _echo_fields
from deepseek_proxy.frontdoors.responses_validation import validate_responses_request
from deepseek_proxy.jsonfast import dumps, loads
from deepseek_proxy.translate.errors import RequestError
from deepseek_proxy.translate.reasoning import ReasoningCache, ReasoningCodec
from deepseek_proxy.translate.responses_request import translate_request
from deepseek_proxy.translate.responses_stream import ResponseStream
from deepseek_proxy.upstream.prepare import prepare_request
from deepseek_proxy.upstream.profiles import profile_named
from tests.unit.request_translation import check_with_deepseek_rules
from tests.unit.test_responses_stream import CODEX_TOOLS, check_events, new_stream

CODEC = ReasoningCodec(b"property-test-secret")
PRO = default_models()["deepseek-v4-pro"]
MODELS = [PRO, ModelConfig(id="plain", upstream_model="deepseek-v4-flash", thinking=False),
          ModelConfig(id="vision", upstream="local", upstream_model="gpt-vision", images=True, thinking=False)]
PROFILES = [profile_named("deepseek"), profile_named("openai")]
SETTINGS = settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))

# ---- requests ------------------------------------------------------------------------------------------------------

text = st.text(max_size=40)
ids = st.sampled_from(["call_1", "call_2", "call_3", "call_x"])
text_part = st.builds(lambda kind, t: {"type": kind, "text": t},
                      st.sampled_from(["input_text", "output_text", "text", "summary_text", "reasoning_text"]), text)
image_part = st.builds(lambda url, detail: {"type": "input_image", "image_url": url, "detail": detail},
                       st.sampled_from(["data:image/png;base64,AAAA", "https://example.test/a.png"]),
                       st.sampled_from(["low", "high", "auto", "original"]))
other_part = st.sampled_from([{"type": "input_file", "file_id": "file_1"}, {"type": "refusal", "refusal": "no"},
                              {"type": "something_new"}])
parts = st.lists(st.one_of(text_part, image_part, other_part), max_size=3)
content = st.one_of(text, parts)

message = st.builds(lambda role, c, typed: {**({"type": "message"} if typed else {}), "role": role, "content": c},
                    st.sampled_from(["user", "assistant", "system", "developer"]), content, st.booleans())
reasoning = st.builds(
    lambda t, encoded, extra: {"type": "reasoning", "summary": [], **extra,
                               "encrypted_content": CODEC.encode(t) if encoded else None,
                               "content": None if encoded else [{"type": "reasoning_text", "text": t}]},
    text, st.booleans(), st.sampled_from([{}, {"id": "rs_1"}]))
function_call = st.builds(lambda i, name, args, ns: {"type": "function_call", "call_id": i, "name": name,
                                                     "arguments": args, **({"namespace": ns} if ns else {})},
                          ids, st.sampled_from(["exec_command", "view_image", "close_agent", "invented tool"]),
                          st.sampled_from(['{"cmd":"ls"}', "{}", "", "not json"]),
                          st.sampled_from([None, "multi_agent_v1"]))
custom_call = st.builds(lambda i, inp: {"type": "custom_tool_call", "call_id": i, "name": "apply_patch", "input": inp},
                        ids, text)
tool_output = st.builds(lambda i, kind, out: {"type": kind, "call_id": i, "output": out},
                        ids, st.sampled_from(["function_call_output", "custom_tool_call_output"]), content)


def unique_call_ids(history: list[dict]) -> list[dict]:
    """A client never sends two calls with one call_id (outputs may still name any id, or an unknown one)."""
    seen: set[str] = set()
    out = []
    for item in history:
        if item.get("type") in ("function_call", "custom_tool_call"):
            while item["call_id"] in seen:
                item = {**item, "call_id": item["call_id"] + "_again"}
            seen.add(item["call_id"])
        out.append(item)
    return out


items = st.lists(st.one_of(message, reasoning, function_call, custom_call, tool_output), max_size=12).map(unique_call_ids)

tool_choice = st.sampled_from([None, "auto", "none", "required", {"type": "function", "name": "exec_command"},
                               {"type": "custom", "name": "apply_patch"}, {"type": "web_search"},
                               {"type": "allowed_tools", "mode": "required", "tools": []}])
text_config = st.sampled_from([None, {"format": {"type": "text"}}, {"format": {"type": "json_object"}},
                               {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}}},
                               {"verbosity": "low"}])
codex_requests = st.fixed_dictionaries(
    {"model": st.just("deepseek-v4-pro"), "input": st.one_of(text.filter(bool), items)},
    optional={
        "instructions": text, "tools": st.just(CODEX_TOOLS), "tool_choice": tool_choice,
        "parallel_tool_calls": st.booleans(), "stream": st.booleans(), "store": st.booleans(),
        "reasoning": st.fixed_dictionaries({}, optional={
            "effort": st.sampled_from(["none", "minimal", "low", "medium", "high", "xhigh", "max", None]),
            "summary": st.sampled_from(["auto", "concise", "detailed", None])}),
        "text": text_config, "temperature": st.floats(0, 2), "top_p": st.floats(0, 1),
        "max_output_tokens": st.integers(1, 10**9), "metadata": st.dictionaries(text.map(lambda s: s[:64]), text,
                                                                               max_size=16),
        "include": st.just(["reasoning.encrypted_content"]), "prompt_cache_key": text,
    },
)


def as_received(body):
    """`body` as the front door sees it: written as JSON, then parsed by the proxy's own codec (orjson), which
    e.g. reads integers past 64 bits as floats. None: not something a client can send."""
    try:
        return loads(json.dumps(body))
    except (ValueError, TypeError):
        return None


def translate_or_refuse(body: dict, model: ModelConfig, profile) -> None:
    """The front door's steps up to the upstream call. Only RequestError may come out."""
    original = copy.deepcopy(body)
    try:
        validate_responses_request(body)
        chat = translate_request(body, model, profile, CODEC, upstream_stream=bool(body.get("stream")))
        # The upstream layer's clean-up, as the relay applies it before sending.
        chat.body = prepare_request(chat.body, model=model, profile=profile, thinking=chat.thinking,
                                    cache=ReasoningCache())
    except RequestError as error:
        assert error.status in (400, 404) and error.message
        return
    finally:
        assert body == original, "neither validation nor translation modifies the client's body"
    dumps(chat.body)  # what goes upstream serializes
    stream = ResponseStream(model=model.id, tool_map=chat.tool_map, codec=CODEC, response_fields=_echo_fields(body))
    dumps(stream.start() + stream.finish())  # and so does the Response that echoes the request


@SETTINGS
@given(body=codex_requests, model=st.sampled_from(MODELS), profile=st.sampled_from(PROFILES))
def test_any_codex_shaped_request_translates_or_is_refused_cleanly(body, model, profile):
    translate_or_refuse(body, model, profile)


@SETTINGS
@given(body=codex_requests)
def test_a_translated_codex_history_passes_the_fake_deepseeks_rules(body):
    try:
        validate_responses_request(body)
        chat = translate_request(body, PRO, PROFILES[0], CODEC, upstream_stream=True)
        chat.body = prepare_request(chat.body, model=PRO, profile=PROFILES[0], thinking=chat.thinking,
                                    cache=ReasoningCache())
    except RequestError:
        return
    check_with_deepseek_rules(chat.body)


# Anything the served OpenAPI document allows, valid and invalid, generated by schemathesis from the schema.
_CREATE = schemathesis.openapi.from_dict(openapi_document(["deepseek-v4-pro"]))["/v1/responses"]["POST"]


@settings(SETTINGS, max_examples=100)
@given(case=_CREATE.as_strategy(), model=st.sampled_from(MODELS), profile=st.sampled_from(PROFILES))
def test_any_request_the_schema_allows_translates_or_is_refused_cleanly(case, model, profile):
    body = as_received(case.body)
    if isinstance(body, dict):
        translate_or_refuse(body, model, profile)


@settings(SETTINGS, max_examples=100)
@given(case=_CREATE.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE))
def test_any_request_the_schema_forbids_is_refused_or_translated_cleanly(case):
    body = as_received(case.body)
    try:
        validate_responses_request(body)
    except RequestError:
        return
    translate_or_refuse(body, PRO, PROFILES[0])


# ---- streams -------------------------------------------------------------------------------------------------------

tool_names = st.sampled_from(["exec_command", "apply_patch", "multi_agent_v1__close_agent", "invented", ""])
fragment = st.sampled_from(['{"cmd":', '"ls"}', '{"input":"*** Begin', ' Patch\\n"}', "", "raw text", "\\u00e9"])
tool_call_delta = st.builds(
    lambda index, call_id, name, args: {
        **({"index": index} if index is not None else {}), **({"id": call_id, "type": "function"} if call_id else {}),
        "function": {**({"name": name} if call_id else {}), "arguments": args}},
    st.one_of(st.none(), st.integers(0, 3)), st.one_of(st.none(), ids), tool_names, fragment)
delta = st.fixed_dictionaries({}, optional={
    "role": st.just("assistant"), "reasoning_content": st.one_of(st.none(), text), "content": st.one_of(st.none(), text),
    "tool_calls": st.lists(tool_call_delta, max_size=2)})
usage = st.builds(lambda p, c, cached: {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
                                        "prompt_cache_hit_tokens": cached, "prompt_tokens_details": {"cached_tokens": cached}},
                  st.integers(0, 10**6), st.integers(0, 10**5), st.integers(0, 1000))
finish = st.sampled_from([None, None, None, "stop", "length", "tool_calls", "content_filter",
                          "insufficient_system_resource"])
chunk = st.one_of(
    st.builds(lambda d, f: {"choices": [{"index": 0, "delta": d, "finish_reason": f}]}, delta, finish),
    st.builds(lambda u: {"choices": [], "usage": u}, usage),
    st.just({"choices": [{"index": 1, "delta": {"content": "n=2 is never asked for"}}]}),
    st.just({"choices": []}),
)


@settings(SETTINGS, max_examples=300)
@given(chunks=st.lists(chunk, max_size=25), end=st.sampled_from(["finish", "fail"]),
       keepalives=st.lists(st.integers(0, 25), max_size=3))
def test_any_chunk_sequence_gives_a_well_formed_event_sequence(chunks, end, keepalives):
    stream = new_stream()
    events = stream.start()
    for position, c in enumerate(chunks):
        if position in keepalives:
            events += stream.keepalive()
        events += stream.feed(c)
    events += stream.finish() if end == "finish" else stream.fail("server_error", "the upstream broke")
    check_events(events)  # SDK-valid, in order, deltas after added, exactly one terminal event and it is last
    assert stream.finished and stream.response["status"] in ("completed", "incomplete", "failed")
    dumps(events)


@settings(SETTINGS, max_examples=150)
@given(reasoning=st.one_of(st.none(), text), content=st.one_of(st.none(), text),
       calls=st.lists(st.tuples(ids, tool_names, fragment), max_size=3), finish=finish)
def test_any_complete_reply_replays_as_a_well_formed_event_sequence(reasoning, content, calls, finish):
    message = {"role": "assistant", "content": content, "reasoning_content": reasoning,
               "tool_calls": [{"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                              for i, n, a in calls] or None}
    completion = {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    stream = new_stream()
    events = stream.start() + stream.replay(completion)
    check_events(events)
    assert stream.response["output"] == events[-1]["response"]["output"]
