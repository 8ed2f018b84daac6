"""Property-based tests (hypothesis) of the Gemini translators: any body built from Gemini's own vocabulary, well
formed or not, translates or is refused with a RequestError (the door's 400), never another exception (a 500);
what translates is deterministic and passes the fake DeepSeek's rules; any upstream chunk sequence gives responses
the google-genai SDK validates."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from deepseek_proxy.config import default_models
from deepseek_proxy.jsonfast import dumps
from deepseek_proxy.translate.errors import RequestError
from deepseek_proxy.translate.gemini_request import (
    SKIP_SIGNATURE,
    encode_signature,
    translate_gemini_request,
)
from deepseek_proxy.translate.gemini_stream import GeminiStream
from deepseek_proxy.translate.reasoning import ReasoningCodec
from deepseek_proxy.translate.tools import ToolMap
from deepseek_proxy.upstream.prepare import prepare_request
from deepseek_proxy.upstream.profiles import profile_named
from tests.conftest import FAKE_KEY
from tests.fakes.fake_deepseek import DeepSeekRules

SETTINGS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
CODEC = ReasoningCodec(b"property-secret")
PROFILES = [profile_named("deepseek"), profile_named("openai")]
MODELS = list(default_models().values())

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=8))
junk = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                    max_leaves=6)
names = st.sampled_from(["read_file", "run_shell_command", "mcp.x/y", ""])
ids = st.one_of(st.none(), st.sampled_from(["c1", "c2", "c3"]))
signatures = st.one_of(st.none(), st.just(SKIP_SIGNATURE), st.just("c2lnLWdlbWluaS0w"),
                       st.just(encode_signature(CODEC, "reasoning")), st.text(max_size=6))
parts = st.one_of(
    st.builds(lambda t: {"text": t}, st.text(max_size=10)),
    st.builds(lambda t: {"text": t, "thought": True}, st.text(max_size=10)),
    st.builds(lambda n, a, i, s: {"functionCall": {k: v for k, v in {"name": n, "args": a, "id": i}.items()
                                                   if v is not None}, **({"thoughtSignature": s} if s else {})},
              names, st.one_of(st.none(), st.dictionaries(st.text(max_size=4), scalars, max_size=2)), ids, signatures),
    st.builds(lambda n, r, i: {"functionResponse": {k: v for k, v in {"name": n, "response": r, "id": i}.items()
                                                    if v is not None}}, names, junk, ids),
    st.builds(lambda m, d: {"inlineData": {"mimeType": m, "data": d}}, st.sampled_from(["image/png", "audio/wav"]),
              st.just("AAAA")),
    junk,
)
good_parts = st.one_of(
    st.builds(lambda t: {"text": t}, st.text(max_size=10)),
    st.builds(lambda t: {"text": t, "thought": True}, st.text(max_size=10)),
    st.builds(lambda n, a, i, s: {"functionCall": {"name": n, "args": a, **({"id": i} if i else {})},
                                  **({"thoughtSignature": s} if s else {})},
              st.sampled_from(["read_file", "run_shell_command"]),
              st.dictionaries(st.text(max_size=4), scalars, max_size=2), ids, signatures),
    st.builds(lambda n, r, i: {"functionResponse": {"name": n, "response": {"output": r}, **({"id": i} if i else {})}},
              st.sampled_from(["read_file", "run_shell_command"]), st.text(max_size=5), ids),
)
good_contents = st.lists(st.builds(lambda r, p: {"role": r, "parts": p}, st.sampled_from(["user", "model"]),
                                   st.lists(good_parts, max_size=3)), min_size=1, max_size=6).map(
    # a function call is only allowed in a model turn
    lambda cs: [{"role": c["role"], "parts": [p for p in c["parts"] if c["role"] == "model" or "functionCall" not in p]}
                for c in cs])
good_bodies = st.fixed_dictionaries({"contents": good_contents, "tools": st.just([{"functionDeclarations": [
    {"name": "read_file", "parameters": {"type": "OBJECT", "properties": {"path": {"type": "STRING"}}}},
    {"name": "run_shell_command", "parametersJsonSchema": {"type": "object"}}]}])},
    optional={"generationConfig": st.fixed_dictionaries({}, optional={
        "thinkingConfig": st.fixed_dictionaries({}, optional={"thinkingBudget": st.integers(-1, 40000)}),
        "responseMimeType": st.just("application/json")})})
contents = st.lists(st.one_of(
    st.builds(lambda r, p: {"role": r, "parts": p}, st.sampled_from(["user", "model", "user", "model", "tool"]),
              st.lists(parts, max_size=4)),
    junk), max_size=6)
declarations = st.lists(st.builds(lambda n, s: {"name": n, "parametersJsonSchema": s} if isinstance(s, dict) and s
                                  else {"name": n, "parameters": {"type": "OBJECT", "properties": {}}},
                                  names, junk), max_size=3)
generation = st.one_of(st.none(), junk, st.fixed_dictionaries({}, optional={
    "temperature": scalars, "maxOutputTokens": st.one_of(st.integers(-1, 10**7), scalars),
    "candidateCount": st.integers(0, 2), "stopSequences": st.one_of(st.lists(st.text(max_size=3), max_size=2), junk),
    "responseMimeType": st.sampled_from(["application/json", "text/plain", "text/x.enum", "image/png"]),
    "responseSchema": junk, "thinkingConfig": st.one_of(junk, st.fixed_dictionaries({}, optional={
        "thinkingBudget": st.integers(-2, 40000), "thinkingLevel": st.sampled_from(["LOW", "HIGH", "x"]),
        "includeThoughts": scalars}))}))
bodies = st.one_of(junk, good_bodies, st.fixed_dictionaries({"contents": contents}, optional={
    "systemInstruction": st.one_of(junk, st.builds(lambda p: {"role": "user", "parts": p}, st.lists(parts, max_size=2))),
    "tools": st.one_of(junk, st.lists(st.builds(lambda d: {"functionDeclarations": d}, declarations), max_size=2)),
    "toolConfig": st.one_of(junk, st.builds(lambda m, a: {"functionCallingConfig": {"mode": m, **(
        {"allowedFunctionNames": a} if a else {})}}, st.sampled_from(["AUTO", "ANY", "NONE", "x"]),
        st.lists(names, max_size=2))),
    "generationConfig": generation,
}))


@SETTINGS
@given(body=bodies, model=st.sampled_from(MODELS), profile=st.sampled_from(PROFILES),
       repair=st.sampled_from(["off", "fallback", "always"]))
def test_any_body_translates_or_is_a_request_error(body, model, profile, repair):
    original = copy.deepcopy(body)
    try:
        chat = translate_gemini_request(body, model, profile, CODEC, repair=repair)
    except RequestError as error:
        assert error.status == 400 and error.message
        event("refused")
        return
    event("translated")
    assert body == original
    again = translate_gemini_request(copy.deepcopy(body), model, profile, CODEC, repair=repair)
    assert dumps(again.body) == dumps(chat.body)
    assert any(message["role"] != "system" for message in chat.body["messages"])
    if profile.name == "deepseek" and repair != "off":
        # What goes upstream: the translation after the upstream layer's clean-up, which every door gets (a
        # functionResponse that answers no call of the history becomes a user message there).
        sent = prepare_request(chat.body, model=model, profile=profile, thinking=chat.thinking, cache=None)
        DeepSeekRules(FAKE_KEY, thinking_default=True).check_chat(dumps(sent), "/chat/completions")


fragments = st.text(alphabet='{}":, ab1', max_size=6)
deltas = st.lists(st.one_of(
    st.builds(lambda t: {"reasoning_content": t}, st.text(max_size=5)),
    st.builds(lambda t: {"content": t}, st.text(max_size=5)),
    st.builds(lambda i, new, f: {"tool_calls": [{"index": i, **({"id": f"call_{i}", "function": {
        "name": "read_file", "arguments": f}} if new else {"function": {"arguments": f}})}]},
        st.integers(0, 2), st.booleans(), fragments),
), max_size=12)


@SETTINGS
@given(deltas=deltas, finish=st.sampled_from([None, "stop", "length", "tool_calls", "content_filter"]),
       include=st.booleans(), with_usage=st.booleans())
def test_any_upstream_stream_gives_responses_the_sdk_validates(deltas, finish, include, with_usage):
    from google.genai import types

    stream = GeminiStream(model="gemini-x", tool_map=ToolMap(), codec=CODEC, include_thoughts=include)
    out = []
    for delta in deltas:
        out += stream.feed({"choices": [{"index": 0, "delta": delta}]}) + stream.keepalive()
    out += stream.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
                        **({"usage": {"prompt_tokens": 5, "completion_tokens": 3}} if with_usage else {})})
    out += stream.finish()
    for obj in [*out, stream.response]:
        types.GenerateContentResponse.model_validate(obj)
    assert "finishReason" in out[-1]["candidates"][0]
    sent_calls = [p["functionCall"]["id"] for o in out for c in o.get("candidates", [])
                  for p in c.get("content", {}).get("parts", []) if "functionCall" in p]
    assert len(sent_calls) == len(set(sent_calls))  # each call once
