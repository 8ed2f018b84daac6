"""Issue 14, on the translators: Claude Code request pairs that differ only in the billing block give byte-identical
upstream bodies, in both Messages modes (translated to Chat, or passed through to DeepSeek's /anthropic), for every
captured Claude Code request, streamed and not.

The billing block (`x-anthropic-billing-header: cc_version=2.1.197.<3 hex>; cc_entrypoint=…;`, and in some
releases a `cch=…;` nonce) is Claude Code's first system block. Its `cc_version` suffix follows the session's first
prompt and its entrypoint the way Claude Code was started, so two sessions in the same project rarely share it; left
in, it would sit in front of the whole cached system prompt and tools. Only that block goes: a block that merely
mentions the header, a header block that is not first, and a plain-string system prompt are the client's own text.
"""

from __future__ import annotations

import copy
import json

import pytest

from deepseek_proxy.config import default_models
from deepseek_proxy.jsonfast import dumps
from deepseek_proxy.translate.messages_models import resolve_model
from deepseek_proxy.translate.messages_passthrough import repair_passthrough_body
from deepseek_proxy.translate.messages_request import translate_messages_request
from deepseek_proxy.translate.reasoning import ReasoningCodec
from deepseek_proxy.upstream.profiles import profile_named
from tests.conftest import CLAUDE_FIXTURES

CODEC = ReasoningCodec(b"unit-test-secret")
DEEPSEEK = profile_named("deepseek")
MODELS = default_models()
HEADER = "x-anthropic-billing-header:"
# (first, second) billing lines of a pair: another session (version suffix), another entrypoint, a sub-agent, and a
# per-request nonce alone.
PAIRS = {
    "session suffix": (f"{HEADER} cc_version=2.1.197.1c0; cc_entrypoint=sdk-cli;",
                       f"{HEADER} cc_version=2.1.197.66a; cc_entrypoint=sdk-cli;"),
    "entrypoint": (f"{HEADER} cc_version=2.1.197.1c0; cc_entrypoint=sdk-cli;",
                   f"{HEADER} cc_version=2.1.197.1c0; cc_entrypoint=cli;"),
    "subagent": (f"{HEADER} cc_version=2.1.197.ed9; cc_entrypoint=cli;",
                 f"{HEADER} cc_version=2.1.197.3b7; cc_entrypoint=cli; cc_is_subagent=true;"),
    "cch nonce": (f"{HEADER} cc_version=2.1.197.1c0; cc_entrypoint=cli; cch=1a2b3;",
                  f"{HEADER} cc_version=2.1.197.1c0; cc_entrypoint=cli; cch=ffe01;"),
}
MESSAGE_FIXTURES = sorted(
    path.stem for path in CLAUDE_FIXTURES.glob("*.json")
    if (json.loads(path.read_text()).get("path") if path.stem != "index" else None) == "/v1/messages"
)


def fixture_body(name: str) -> dict:
    return json.loads((CLAUDE_FIXTURES / f"{name}.json").read_text())["body"]


def with_billing_line(body: dict, line: str, *, stream: bool) -> dict:
    """The captured request with its (redacted) first system block replaced by `line`, streamed or not."""
    body = copy.deepcopy(body)
    assert body["system"][0]["text"].startswith("<redacted"), "the capture's first block is the billing line"
    body["system"][0] = {"type": "text", "text": line}
    body["stream"] = stream
    return body


def translated_bytes(body: dict, *, upstream_stream: bool) -> bytes:
    """What the translating mode sends (the door passes upstream_stream = model.stream and the client's stream)."""
    model = resolve_model(body["model"], MODELS)
    return dumps(translate_messages_request(copy.deepcopy(body), model, DEEPSEEK, CODEC,
                                            upstream_stream=upstream_stream).body)


def passthrough_bytes(body: dict) -> bytes:
    return dumps(repair_passthrough_body(copy.deepcopy(body))[0])


def test_every_captured_messages_request_is_covered():
    assert len(MESSAGE_FIXTURES) >= 15 and "p_default_turn3_parallel_tools" in MESSAGE_FIXTURES


def upstream_bytes(mode: str, body: dict) -> bytes:
    if mode == "translate":
        return translated_bytes(body, upstream_stream=body["stream"])
    return passthrough_bytes(body)


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "not-streamed"])
@pytest.mark.parametrize("pair", list(PAIRS), ids=list(PAIRS))
@pytest.mark.parametrize("mode", ["translate", "anthropic"])
def test_billing_only_pairs_give_identical_upstream_bytes(mode, pair, stream):
    for name in MESSAGE_FIXTURES:
        body = fixture_body(name)
        first, second = (upstream_bytes(mode, with_billing_line(body, line, stream=stream)) for line in PAIRS[pair])
        assert first == second, name
        assert HEADER.encode() not in first, name
        sent = json.loads(first)
        assert sent["stream"] is stream
        # Everything else of the system prompt is still there, in front (passed through: cache_control included).
        if mode == "translate":
            rest = "\n".join(b["text"] for b in body["system"][1:])
            assert sent["messages"][0] == {"role": "system", "content": rest}, name
        else:
            assert sent["system"] == body["system"][1:], name


def test_the_billing_block_drop_changes_nothing_else_of_a_passed_through_body():
    body = with_billing_line(fixture_body("p_default_turn2_after_tool"), PAIRS["cch nonce"][0], stream=True)
    sent, repaired = repair_passthrough_body(body)
    assert repaired == []
    assert {**sent, "system": body["system"]} == body


# ---- what is kept: only a FIRST block that STARTS with the header is Claude Code's attribution -----------------------


def system_variants() -> dict[str, tuple[list | str, list[str]]]:
    """name → (the client's system prompt, the texts that must reach the upstream)."""
    line = PAIRS["session suffix"][0]
    prompt = {"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}}
    mention = {"type": "text", "text": f"Never print the {line} line you may see."}
    indented = {"type": "text", "text": " " + line}
    return {
        "mentioned later in a block": ([prompt, mention], [prompt["text"], mention["text"]]),
        "header block not first": ([prompt, {"type": "text", "text": line}], [prompt["text"], line]),
        "not at the very start of the text": ([indented, prompt], [indented["text"], prompt["text"]]),
        "a plain-string system prompt": (f"{line}\nYou are a coding agent.", [f"{line}\nYou are a coding agent."]),
        "the first of two header blocks": ([{"type": "text", "text": line}, {"type": "text", "text": line}, prompt],
                                           [line, prompt["text"]]),
    }


def small_body(system: list | str) -> dict:
    return {"model": "claude-sonnet-4-5", "max_tokens": 1000, "system": system,
            "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("variant", list(system_variants()))
def test_the_translator_keeps_system_text_that_is_not_the_leading_billing_block(variant):
    system, kept = system_variants()[variant]
    sent = json.loads(translated_bytes(small_body(system), upstream_stream=True))
    assert sent["messages"][0] == {"role": "system", "content": "\n".join(kept)}


@pytest.mark.parametrize("variant", list(system_variants()))
def test_the_passthrough_keeps_system_text_that_is_not_the_leading_billing_block(variant):
    system, kept = system_variants()[variant]
    sent = json.loads(passthrough_bytes(small_body(system)))
    texts = [sent["system"]] if isinstance(sent["system"], str) else [b["text"] for b in sent["system"]]
    assert texts == kept
