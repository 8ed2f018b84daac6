"""The prefix-break detector (deepseek_proxy/core/prefix.py): conversation keys per door, fingerprints of the
upstream prompt, and where a new prompt stops continuing the last one. Claude Code cases use the captured requests
(tests/fixtures/claude-code/) translated by translate/messages_request.py, as the door will send them upstream."""

from __future__ import annotations

import copy
import json

import pytest

from deepseek_proxy.config import default_models
from deepseek_proxy.core.prefix import (
    LruFingerprints,
    PrefixBreak,
    PrefixTracker,
    PromptFingerprint,
    StoreFingerprints,
    find_break,
    fingerprint,
    first_messages_key,
    gemini_conversation_key,
    messages_conversation_key,
    prompt_parts,
    responses_conversation_key,
)
from deepseek_proxy.store import open_store
from deepseek_proxy.store.base import StoreError
from deepseek_proxy.translate.messages_models import resolve_model
from deepseek_proxy.translate.messages_request import translate_messages_request
from deepseek_proxy.translate.reasoning import ReasoningCodec
from deepseek_proxy.upstream.profiles import profile_named
from tests.conftest import CLAUDE_FIXTURES, FIXTURES
from tests.fakes.fake_deepseek import PromptCache, prompt_tokens

CODEC = ReasoningCodec(b"unit-test-secret")
DEEPSEEK = profile_named("deepseek")
MODELS = default_models()
BILLING = "x-anthropic-billing-header: cc_version=2.1.197.{suffix}; cc_entrypoint=sdk-cli;"
SESSION = ["p_default_turn1", "p_default_turn2_after_tool", "p_default_turn3_parallel_tools"]


def claude_body(name: str) -> dict:
    return json.loads((CLAUDE_FIXTURES / f"{name}.json").read_text())["body"]


def upstream(body: dict) -> dict:
    return translate_messages_request(copy.deepcopy(body), resolve_model(body["model"], MODELS), DEEPSEEK,
                                      CODEC).body


def with_billing(body: dict, suffix: str, nonce: str | None = None) -> dict:
    body = copy.deepcopy(body)
    body["system"][0] = {"type": "text", "text": BILLING.format(suffix=suffix) + (f" cch={nonce};" if nonce else "")}
    return body


def chat(messages, tools=(), model="deepseek-v4-pro") -> dict:
    return {"model": model, "messages": list(messages), "tools": list(tools), "stream": True}


LONG_SYSTEM = {"role": "system", "content": "You are a coding agent working in a repository. " * 60}
TOOLS = [{"type": "function", "function": {"name": f"tool_{i}", "description": f"Tool number {i}. " * 20,
                                           "parameters": {"type": "object", "properties": {}}}} for i in range(3)]


def history(turns: int) -> list[dict]:
    out: list[dict] = [LONG_SYSTEM]
    for n in range(turns):
        out += [{"role": "user", "content": f"Please do step {n}."},
                {"role": "assistant", "content": f"Step {n} done: edited module_{n}.py. " * 10}]
    return out


# ---- conversation keys ----------------------------------------------------------------------------------------------


def test_codex_key_is_prompt_cache_key_else_the_session_header():
    request = json.loads((FIXTURES / "codex" / "normal" / "turn3_request.json").read_text())
    assert responses_conversation_key(request, {}) == "responses:" + request["prompt_cache_key"]
    assert responses_conversation_key({"input": []}, {"Session-Id": "s-1"}) == "responses:s-1"
    assert responses_conversation_key({"input": []}, {}) is None


def test_claude_code_key_is_the_session_in_metadata_user_id_else_its_session_header():
    body = claude_body("p_default_turn1")
    session = json.loads(body["metadata"]["user_id"])["session_id"]
    assert messages_conversation_key(body, {}) == "messages:" + session
    assert messages_conversation_key({"metadata": {"user_id": "not json"}},
                                     {"X-Claude-Code-Session-Id": "abc"}) == "messages:abc"
    assert messages_conversation_key({"metadata": {"user_id": 7}}, None) is None


def test_gemini_has_no_session_on_the_gemini_api_so_the_first_messages_key_stands_in():
    request = json.loads((FIXTURES / "gemini-cli" / "stream_turn1.json").read_text())
    assert gemini_conversation_key(request["body"], request["headers"]) is None
    assert gemini_conversation_key({"request": {"contents": []}, "session_id": "g-1"}) == "gemini:g-1"
    a, b = chat(history(1)), chat(history(3))
    assert first_messages_key(a) == first_messages_key(b)  # later turns keep the key
    assert first_messages_key(a) != first_messages_key(chat([LONG_SYSTEM, {"role": "user", "content": "other"}]))
    edited_system = [{"role": "system", "content": "Today is Friday."}, *history(1)[1:]]
    assert first_messages_key(chat(edited_system)) == first_messages_key(a)  # a system edit is a break, not a new key


# ---- fingerprints and breaks ----------------------------------------------------------------------------------------


def test_reading_order_is_leading_system_then_tools_then_the_conversation():
    late = {"role": "system", "content": "Plan mode is on."}
    parts, lead, tools = prompt_parts(chat([LONG_SYSTEM, {"role": "user", "content": "hi"}, late], TOOLS))
    assert (lead, tools) == (1, 3)
    assert [json.loads(p) for p in parts] == [LONG_SYSTEM, *TOOLS, {"role": "user", "content": "hi"}, late]
    labels = [fingerprint(chat([LONG_SYSTEM, {"role": "user", "content": "hi"}, late], TOOLS)).label(i)
              for i in range(5)]
    assert labels == ["system", "tools", "tools", "tools", "message 1"]


def test_a_grown_conversation_extends_and_a_shorter_one_is_no_break():
    old, new = fingerprint(chat(history(2), TOOLS)), fingerprint(chat(history(4), TOOLS))
    assert find_break(old, new) is None
    assert find_break(new, old) is None
    assert find_break(old, old) is None


def test_a_change_in_message_n_is_found_there():
    messages = history(4)
    changed = copy.deepcopy(messages)
    changed[5]["content"] = "Something else."
    found = find_break(fingerprint(chat(messages, TOOLS)), fingerprint(chat(changed, TOOLS)))
    assert found is not None and found.what == "message 5"
    before = sum(len(p) for p in prompt_parts(chat(messages[:5], TOOLS))[0])
    assert found.position == before
    assert found.previous_length == fingerprint(chat(messages, TOOLS)).length


def test_a_change_deep_inside_a_long_system_prompt_is_placed_to_within_a_block():
    old_system = {"role": "system", "content": "x" * 5000 + " date: Monday " + "y" * 500}
    new_system = {"role": "system", "content": "x" * 5000 + " date: Friday " + "y" * 500}
    tail = [{"role": "user", "content": "hi"}]
    found = find_break(fingerprint(chat([old_system, *tail])), fingerprint(chat([new_system, *tail])))
    assert found is not None and found.what == "system"
    change = len('{"content":"') + 5000 + len(" date: ")
    assert change - 1024 < found.position <= change


def test_reordered_tools_break_at_tools():
    messages = history(3)
    found = find_break(fingerprint(chat(messages, TOOLS)),
                       fingerprint(chat(messages, [TOOLS[2], TOOLS[0], TOOLS[1]])))
    assert found is not None and found.what == "tools"
    assert found.position == len(prompt_parts(chat(messages, TOOLS))[0][0])  # right after the system prompt
    assert found.lost_bytes > 0


def test_the_detector_agrees_with_the_cache_model_on_where_the_break_is():
    """Both read the prompt in the same order: the fake's hits stop at the part the detector names."""
    messages = history(3)
    cache = PromptCache(block_tokens=1)
    cache.lookup("k", chat(messages, TOOLS))
    _, hit = cache.lookup("k", chat(messages, [TOOLS[1], TOOLS[0], TOOLS[2]]))
    system_only = len(prompt_tokens(chat(messages[:1], [])))
    assert system_only <= hit < system_only + 20  # the system prompt and a few tokens of the first tool's framing


def test_fingerprints_are_compact():
    big = chat(history(40), TOOLS)
    fp = fingerprint(big)
    assert fp.size() < fp.length / 10  # 12 bytes per message or tool, 8 per KB


def test_a_fingerprint_survives_its_text_form():
    fp = fingerprint(chat(history(3), TOOLS))
    assert PromptFingerprint.from_json(fp.to_json()) == fp
    assert PromptFingerprint.from_json("{") is None and PromptFingerprint.from_json('{"v":2}') is None


# ---- Claude Code, through the Messages translator ------------------------------------------------------------------


@pytest.mark.parametrize("variant", [("a1f", None, "9c0", None), ("abc", "1a2b3", "abc", "ffe01")],
                         ids=["per-session suffix", "cch nonce"])
def test_claude_code_requests_differing_only_in_the_billing_block_give_identical_prompts(variant):
    suffix_a, nonce_a, suffix_b, nonce_b = variant
    for name in SESSION:
        first = upstream(with_billing(claude_body(name), suffix_a, nonce_a))
        second = upstream(with_billing(claude_body(name), suffix_b, nonce_b))
        assert prompt_parts(first) == prompt_parts(second)
        tracker = PrefixTracker()
        assert tracker.observe("messages:s", first) is None
        assert tracker.observe("messages:s", second) is None
        assert find_break(fingerprint(first), fingerprint(second)) is None


def test_a_claude_code_session_extends_turn_after_turn_with_its_mid_conversation_system_message_in_place():
    tracker = PrefixTracker()
    bodies = [with_billing(claude_body(name), "a1f") for name in SESSION]
    assert bodies[0]["messages"][1]["role"] == "system"  # Claude Code's mid-conversation system entry
    for body in bodies:
        request = upstream(body)
        assert request["messages"][2]["role"] == "system"  # kept after the first user message, not hoisted
        assert tracker.observe(messages_conversation_key(body), request) is None


def test_hoisting_claude_codes_mid_conversation_system_message_would_be_a_break():
    turn1 = upstream(with_billing(claude_body(SESSION[0]), "a1f"))
    turn2 = upstream(with_billing(claude_body(SESSION[1]), "a1f"))
    messages = turn2["messages"]
    hoisted = dict(turn2, messages=[messages[0], messages[2], messages[1], *messages[3:]])
    tracker = PrefixTracker()
    tracker.observe("k", turn1)
    found = tracker.observe("k", hoisted)
    assert found is not None and found.what == "system"


def test_a_tool_list_reordered_by_the_client_is_detected_at_tools():
    turn1, turn2 = (with_billing(claude_body(name), "a1f") for name in SESSION[:2])
    turn2["tools"] = [turn2["tools"][1], turn2["tools"][0], *turn2["tools"][2:]]
    tracker = PrefixTracker()
    assert tracker.observe(messages_conversation_key(turn1), upstream(turn1)) is None
    found = tracker.observe(messages_conversation_key(turn2), upstream(turn2))
    assert isinstance(found, PrefixBreak) and found.what == "tools"


# ---- the tracker's memory --------------------------------------------------------------------------------------------


def test_threads_of_one_conversation_do_not_break_each_other():
    tracker = PrefixTracker()
    main = history(2)
    sub = [{"role": "system", "content": "You are the Explore sub-agent. " * 50}, {"role": "user", "content": "go"}]
    assert tracker.observe("k", chat(main, TOOLS)) is None
    assert tracker.observe("k", chat(sub)) is None  # nothing in common: another thread
    assert tracker.observe("k", chat(history(3), TOOLS)) is None  # the main thread extends its own last prompt
    assert tracker.observe("k", chat(history(3), TOOLS, model="deepseek-v4-flash")) is None  # another model's cache
    found = tracker.observe("k", chat(history(3), TOOLS[::-1]))
    assert found is not None and found.what == "tools"


def test_the_in_process_memory_is_bounded():
    memory = LruFingerprints(max_conversations=2)
    tracker = PrefixTracker(memory)
    for key in ("a", "b", "c"):
        tracker.observe(key, chat(history(1)))
    assert len(memory) == 2 and memory.get("a") is None and memory.get("c") is not None
    assert tracker.observe("a", chat(history(1), TOOLS)) is None  # forgotten: nothing to compare with


def test_the_store_backed_memory_is_shared_and_tolerates_failures(tmp_path):
    from deepseek_proxy.config import StoreConfig

    store = open_store(StoreConfig(url=f"sqlite:///{tmp_path}/store.db"))
    try:
        first, second = PrefixTracker(StoreFingerprints(store)), PrefixTracker(StoreFingerprints(store))
        assert first.observe("k", chat(history(2), TOOLS)) is None
        found = second.observe("k", chat(history(2), TOOLS[::-1]))  # another worker sees the first one's prompt
        assert found is not None and found.what == "tools"
    finally:
        store.close()

    class Broken:
        def get_reasoning(self, key):
            raise StoreError("down")

        def put_reasoning(self, key, text):
            raise StoreError("down")

    assert PrefixTracker(StoreFingerprints(Broken())).observe("k", chat(history(1))) is None


def test_a_system_message_added_mid_conversation_in_place_extends_the_prompt():
    tracker = PrefixTracker()
    before = history(2)
    steered = [*before, {"role": "system", "content": "Plan mode is on."}, {"role": "user", "content": "go on"}]
    assert tracker.observe(None, chat(before, TOOLS)) is None  # no session named: the first-messages key
    assert tracker.observe(None, chat(steered, TOOLS)) is None
    hoisted = [before[0], steered[-2], *before[1:], steered[-1]]
    found = tracker.observe(None, chat(hoisted, TOOLS))
    assert found is not None and found.what == "system"
