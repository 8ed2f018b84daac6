"""The Responses door's state, unit by unit: expand_stored_context (previous_response_id, item_reference) on a
MemoryStore, reasoning summaries and the stored-response replay in the stream translator, and the reasoning
fallback cache shared through a store."""

from __future__ import annotations

import copy

import pytest

from deepseek_proxy.frontdoors.common import SharedReasoningCache
from deepseek_proxy.frontdoors.responses_state import (
    expand_stored_context,
    needs_store,
    resolve_context,
    store_finished_response,
)
from deepseek_proxy.store import ReasoningCacheAdapter, StoredResponse
from deepseek_proxy.store.memory import MemoryStore
from deepseek_proxy.translate.errors import RequestError
from deepseek_proxy.translate.reasoning import ReasoningCache
from deepseek_proxy.translate.responses_stream import ResponseStream, replay_events
from tests.unit.test_responses_stream import (
    CODEC,
    TOOL_MAP,
    check_events,
    chunk,
    counter_ids,
    new_stream,
    run,
)


def memory_store() -> MemoryStore:
    return MemoryStore(ttl_seconds=3600, reasoning_ttl_seconds=3600, max_response_bytes=2**20)


def user(text: str) -> dict:
    return {"id": f"msg_{text}", "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


REASONING = {"id": "rs_1", "type": "reasoning", "summary": [], "encrypted_content": "dsp1.x.y"}
CALL = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "ls", "arguments": "{}"}


def stored(store: MemoryStore, response_id: str, input_items: list[dict], output: list[dict],
           previous: str | None = None) -> None:
    store.put_response(StoredResponse(id=response_id, response={"id": response_id, "output": output},
                                      input_items=input_items, model="m", created_at=1,
                                      previous_response_id=previous))


def test_a_body_without_state_references_is_returned_as_it_is_without_the_store():
    body = {"model": "m", "input": [user("hi")]}
    assert not needs_store(body)
    assert expand_stored_context(body, None) is body  # type: ignore[arg-type]


def test_previous_response_id_expands_to_the_whole_chain_in_order():
    store = memory_store()
    stored(store, "resp_1", [user("one")], [REASONING, CALL])
    output = {"type": "function_call_output", "call_id": "call_1", "output": "x", "id": "fco_1"}
    stored(store, "resp_2", [output], [{"id": "msg_a", "type": "message", "role": "assistant", "content": []}],
           previous="resp_1")
    body = {"model": "m", "previous_response_id": "resp_2", "input": "next", "instructions": "new"}
    original = copy.deepcopy(body)

    expanded = expand_stored_context(body, store)

    assert body == original, "the caller's body is not changed"
    assert expanded["previous_response_id"] is None and expanded["instructions"] == "new"
    items = expanded["input"]
    assert [i.get("id") for i in items[:5]] == ["msg_one", "rs_1", "fc_1", "fco_1", "msg_a"]
    assert items[5]["role"] == "user" and items[5]["content"] == [{"type": "input_text", "text": "next"}]
    assert items[5]["id"].startswith("msg_")


def test_unknown_previous_response_is_a_404_never_a_shorter_history():
    store = memory_store()
    stored(store, "resp_1", [user("one")], [])
    stored(store, "resp_2", [user("two")], [], previous="resp_1")
    store.delete_response("resp_1")  # an earlier turn gone: the chain cannot be rebuilt
    for missing in ("resp_nope", "resp_2"):
        with pytest.raises(RequestError) as caught:
            expand_stored_context({"model": "m", "previous_response_id": missing, "input": "x"}, store)
        assert (caught.value.status, caught.value.code, caught.value.param) == (
            404, "previous_response_not_found", "previous_response_id")


def test_item_references_are_replaced_by_the_stored_items():
    store = memory_store()
    stored(store, "resp_1", [user("one")], [REASONING, CALL])
    body = {"model": "m", "input": [user("one"), {"type": "item_reference", "id": "rs_1"},
                                    {"type": "item_reference", "id": "fc_1"}]}
    assert needs_store(body)
    assert expand_stored_context(body, store)["input"] == [user("one"), REASONING, CALL]
    with pytest.raises(RequestError) as caught:
        expand_stored_context({"model": "m", "input": [{"type": "item_reference", "id": "rs_2"}]}, store)
    assert (caught.value.status, caught.value.code, caught.value.param) == (404, "not_found", "input[0]")


def test_own_items_get_ids_and_typed_content_for_the_listing():
    context = resolve_context({"input": [{"role": "user", "content": "hi"},
                                         {"role": "assistant", "content": "hello"},
                                         {"type": "function_call_output", "call_id": "c", "output": "o"}]}, None)
    first, second, third = context.own_items
    assert first["type"] == "message" and first["id"].startswith("msg_")
    assert first["content"] == [{"type": "input_text", "text": "hi"}]
    assert second["content"] == [{"type": "output_text", "text": "hello", "annotations": []}]
    assert third["id"].startswith("fco_") and third["output"] == "o"


# ---- reasoning summaries and replay --------------------------------------------------------------------------------


def summary_stream() -> ResponseStream:
    fields = {k: v for k, v in new_stream()._base.items()
              if k not in ("id", "object", "created_at", "model", "completed_at")}  # the same echoed settings
    return ResponseStream(model="deepseek-v4-pro", tool_map=TOOL_MAP, codec=CODEC, response_id="resp_test",
                          created_at=1_700_000_000, make_id=counter_ids(), summaries=True, response_fields=fields)


def test_summaries_stream_reasoning_as_summary_parts_and_keep_the_replayable_item():
    events, stream = run([chunk(reasoning_content="Think "), chunk(reasoning_content="hard."),
                          chunk(content="Answer."), chunk(finish="stop")], summary_stream())
    kinds = [e["type"] for e in events]
    assert "response.reasoning_text.delta" not in kinds
    reasoning_kinds = [k for k in kinds if "reasoning" in k]
    assert reasoning_kinds == ["response.reasoning_summary_part.added", "response.reasoning_summary_text.delta",
                               "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
                               "response.reasoning_summary_part.done"]
    item = stream.response["output"][0]
    assert item["summary"] == [{"type": "summary_text", "text": "Think hard."}]
    assert item["content"] == [{"type": "reasoning_text", "text": "Think hard."}]
    assert CODEC.decode(item["encrypted_content"]) == "Think hard."


@pytest.mark.parametrize("summaries", [False, True])
def test_a_stored_response_replays_as_a_valid_stream_ending_in_the_same_object(summaries):
    stream = summary_stream() if summaries else new_stream()
    _, stream = run([chunk(reasoning_content="Plan."), chunk(content="Hi."),
                     chunk(tool_calls=[{"index": 0, "id": "call_9", "type": "function",
                                        "function": {"name": "exec_command", "arguments": '{"cmd":"ls"}'}}]),
                     chunk(finish="tool_calls")], stream)
    final = stream.response
    replayed = replay_events(final)
    check_events(replayed)  # SDK models, SDK accumulation, item lifecycle
    assert replayed[-1]["response"] == final
    delta_kind = "response.reasoning_summary_text.delta" if summaries else "response.reasoning_text.delta"
    assert [e["delta"] for e in replayed if e["type"] == delta_kind] == ["Plan."]


def test_completed_at_is_set_only_when_completed():
    events, stream = run([chunk(content="x"), chunk(finish="stop")])
    assert all(e["response"]["completed_at"] is None for e in events[:-1] if "response" in e)
    assert isinstance(stream.response["completed_at"], int)
    _, cut = run([chunk(content="x"), chunk(finish="length")])
    assert cut.response["completed_at"] is None


# ---- the reasoning fallback cache across instances ----------------------------------------------------------------


def test_the_shared_reasoning_cache_lets_another_instance_find_the_reasoning():
    store = memory_store()  # stands for the Redis both instances use
    on_a = SharedReasoningCache(ReasoningCache(), ReasoningCacheAdapter(store))
    on_b = SharedReasoningCache(ReasoningCache(), ReasoningCacheAdapter(store))
    on_a.put("call_1", "thought")
    assert on_b.get("call_1") == "thought"
    assert on_b.local.get("call_1") == "thought", "kept locally after the first shared read"
    assert on_b.get("call_2") is None


def test_a_finished_response_is_stored_with_its_own_items_or_logged_when_too_large(caplog):
    store = memory_store()
    stored(store, "resp_1", [user("one")], [])
    context = resolve_context({"previous_response_id": "resp_1", "input": "two"}, store)
    response = {"id": "resp_2", "model": "m", "created_at": 1, "output": []}
    assert store_finished_response(store, response, context)
    record = store.get_response("resp_2", with_input=True)
    assert record is not None and record.previous_response_id == "resp_1"
    assert record.input_items == context.own_items  # not the expanded history
    assert [r.id for r in store.get_conversation("resp_2") or []] == ["resp_1", "resp_2"]

    tiny = MemoryStore(ttl_seconds=3600, reasoning_ttl_seconds=3600, max_response_bytes=10)
    assert not store_finished_response(tiny, {**response, "id": "resp_3"}, context)
    assert tiny.get_response("resp_3") is None
    assert "served but not stored" in caplog.text


def test_a_missing_or_malformed_input_is_a_clear_error_not_a_crash():
    assert resolve_context({"previous_response_id": None}, None).own_items == []
    with pytest.raises(RequestError) as caught:
        resolve_context({"input": 5}, None)
    assert caught.value.param == "input" and caught.value.status == 400
