"""Stored responses on the real server (issue 11): `store`, `previous_response_id`, `item_reference`, GET / DELETE /
input_items, the full Response object, reasoning summaries, a restart (SQLite) and two instances sharing a Redis.
Clients: the official openai SDK and raw HTTP; upstream: the fake DeepSeek, which (like DeepSeek in thinking mode)
rejects an assistant tool-call turn sent back without its reasoning."""

from __future__ import annotations

import json
import time

import openai
import pytest
import requests

from tests.fakes.fake_deepseek import Reply
from tests.integration.strict_events import (
    validate_event,
    validate_open_responses,
    validate_response,
)
from tests.sse_frames import sse

MODEL = "deepseek-v4-pro"
TOOLS = [{"type": "function", "name": "exec_command", "description": "run a command",
          "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}]


def user(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def stream(proxy, body: dict) -> list[dict]:
    """POST a streamed create; every event validated against the openai SDK's models (no unknown fields)."""
    with requests.post(proxy.base_url + "/v1/responses", json={**body, "stream": True}, stream=True,
                       timeout=30) as response:
        assert response.status_code == 200, response.text
        events = [data for _, data in sse(response)]
    for event in events:
        validate_event(event)
    return events


def post(proxy, body: dict, headers: dict | None = None) -> requests.Response:
    return requests.post(proxy.base_url + "/v1/responses", json=body, headers=headers, timeout=30)


def sdk(proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url + "/v1", api_key="unused", max_retries=0)


def tool_turn(proxy, upstream, *, reasoning="I should list the files.", **extra) -> dict:
    """Turn 1: the model thinks, then calls exec_command. Returns the final Response object."""
    upstream.script(Reply.tool_calls([("exec_command", {"cmd": "ls"})], reasoning=reasoning))
    events = stream(proxy, {"model": MODEL, "input": [user("what is here?")], "tools": TOOLS, **extra})
    assert events[-1]["type"] == "response.completed"
    return events[-1]["response"]


def assistant_turn(messages: list[dict]) -> dict:
    return next(m for m in messages if m["role"] == "assistant")


# ---- previous_response_id ------------------------------------------------------------------------------------------


def test_previous_response_id_sends_the_whole_stored_history_reasoning_included(proxy, upstream):
    first = tool_turn(proxy, upstream)
    call = next(item for item in first["output"] if item["type"] == "function_call")
    upstream.script(Reply.text("Two files.", reasoning="Summarise."))

    second = stream(proxy, {"model": MODEL, "previous_response_id": first["id"], "tools": TOOLS,
                            "input": [{"type": "function_call_output", "call_id": call["call_id"],
                                       "output": "a.txt b.txt"}]})[-1]["response"]

    assert second["status"] == "completed" and second["previous_response_id"] == first["id"]
    messages = upstream.chat_requests[-1].body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[0]["content"] == "what is here?"
    assistant = assistant_turn(messages)
    assert assistant["reasoning_content"] == "I should list the files."
    assert assistant["tool_calls"][0]["id"] == call["call_id"]
    assert messages[2] == {"role": "tool", "tool_call_id": call["call_id"], "content": "a.txt b.txt"}
    assert upstream.rejections == []

    # A third turn continues the chain: turn 1 and turn 2 (input and output) both come back, in order.
    upstream.script(Reply.text("You are welcome.", reasoning=None))
    sdk(proxy).responses.create(model=MODEL, previous_response_id=second["id"], input="thanks")
    roles = [m["role"] for m in upstream.chat_requests[-1].body["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant", "user"]


def test_instructions_are_not_carried_over_from_the_previous_response(proxy, upstream):
    upstream.script(Reply.text("Hi.", reasoning=None), Reply.text("Again.", reasoning=None))
    client = sdk(proxy)
    first = client.responses.create(model=MODEL, input="hello", instructions="Be terse.")
    client.responses.create(model=MODEL, input="again", previous_response_id=first.id, instructions="Be kind.")
    messages = upstream.chat_requests[-1].body["messages"]
    assert [m["content"] for m in messages if m["role"] == "system"] == ["Be kind."]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["hello", "again"]


def test_an_unknown_previous_response_is_a_404_in_openais_shape(proxy, upstream):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(proxy).responses.create(model=MODEL, input="hi", previous_response_id="resp_nope")
    error = caught.value.body
    assert error["code"] == "previous_response_not_found" and error["param"] == "previous_response_id"
    assert error["type"] == "invalid_request_error" and "resp_nope" in error["message"]
    assert upstream.chat_requests == []


def test_store_false_keeps_nothing(proxy, upstream):
    upstream.script(Reply.text("Not kept.", reasoning=None))
    response = post(proxy, {"model": MODEL, "input": "hi", "store": False}).json()
    assert response["store"] is False
    assert requests.get(f"{proxy.base_url}/v1/responses/{response['id']}", timeout=10).status_code == 404
    again = post(proxy, {"model": MODEL, "input": "more", "previous_response_id": response["id"]})
    assert again.status_code == 404 and again.json()["error"]["code"] == "previous_response_not_found"


# ---- item_reference ------------------------------------------------------------------------------------------------


def test_item_references_resolve_to_the_items_we_issued(proxy, upstream):
    """What the Vercel AI SDK sends by default: earlier output items by id, not by value."""
    first = tool_turn(proxy, upstream, reasoning="Check the directory.")
    reasoning, call = first["output"]
    upstream.script(Reply.text("Done.", reasoning=None))
    stream(proxy, {"model": MODEL, "tools": TOOLS, "input": [
        user("what is here?"),
        {"type": "item_reference", "id": reasoning["id"]},
        {"type": "item_reference", "id": call["id"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "a.txt"},
    ]})
    assistant = assistant_turn(upstream.chat_requests[-1].body["messages"])
    assert assistant["reasoning_content"] == "Check the directory."
    assert assistant["tool_calls"][0]["function"]["name"] == "exec_command"
    assert upstream.rejections == []


def test_an_unknown_item_reference_is_a_404(proxy, upstream):
    response = post(proxy, {"model": MODEL, "input": [user("hi"), {"type": "item_reference", "id": "rs_unknown"}]})
    assert response.status_code == 404
    assert response.json()["error"] == {"message": "Item with id 'rs_unknown' not found.",
                                        "type": "invalid_request_error", "param": "input[1]", "code": "not_found"}
    assert upstream.chat_requests == []


# ---- GET / DELETE / input_items ------------------------------------------------------------------------------------


def test_get_returns_the_stored_response_and_delete_removes_it(proxy, upstream):
    final = tool_turn(proxy, upstream)
    url = f"{proxy.base_url}/v1/responses/{final['id']}"

    got = requests.get(url, timeout=10)
    assert got.status_code == 200 and got.json() == final
    validate_response(got.json())
    assert sdk(proxy).responses.retrieve(final["id"]).output[1].type == "function_call"

    with requests.get(url, params={"stream": "true"}, stream=True, timeout=10) as replay:
        assert replay.headers["content-type"].startswith("text/event-stream")
        events = [data for _, data in sse(replay)]
    for event in events:
        validate_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[-1]["response"] == final
    assert [e["item"] for e in events if e["type"] == "response.output_item.done"] == final["output"]
    later = [data for _, data in sse(requests.get(url, params={"stream": "true", "starting_after": 3},
                                                   stream=True, timeout=10))]
    assert [e["sequence_number"] for e in later] == list(range(4, len(events)))

    deleted = requests.delete(url, timeout=10)
    assert deleted.status_code == 200
    assert deleted.json() == {"id": final["id"], "object": "response", "deleted": True}
    for method in (requests.get, requests.delete):
        gone = method(url, timeout=10)
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "not_found" and final["id"] in gone.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        sdk(proxy).responses.retrieve(final["id"])


def test_a_non_streamed_response_is_stored_too(proxy, upstream):
    upstream.script(Reply.text("Kept.", reasoning=None))
    created = sdk(proxy).responses.create(model=MODEL, input="hi")
    assert created.to_dict()["store"] is True
    assert sdk(proxy).responses.retrieve(created.id).output_text == "Kept."


def test_input_items_paginate_as_the_api_does(proxy, upstream):
    upstream.script(Reply.text("Five.", reasoning=None))
    texts = [f"m{n}" for n in range(5)]
    created = post(proxy, {"model": MODEL, "input": [user(t) for t in texts]}).json()
    url = f"{proxy.base_url}/v1/responses/{created['id']}/input_items"

    def page(**params) -> dict:
        response = requests.get(url, params=params, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def listed(body: dict) -> list[str]:
        return [item["content"][0]["text"] for item in body["data"]]

    everything = page()
    assert everything["object"] == "list" and everything["has_more"] is False
    assert listed(everything) == texts[::-1]  # newest first by default
    assert all(item["id"].startswith("msg_") for item in everything["data"])
    assert everything["first_id"] == everything["data"][0]["id"]
    assert everything["last_id"] == everything["data"][-1]["id"]

    first = page(order="asc", limit=2)
    assert listed(first) == ["m0", "m1"] and first["has_more"] is True
    second = page(order="asc", limit=2, after=first["last_id"])
    assert listed(second) == ["m2", "m3"] and second["has_more"] is True
    third = page(order="asc", limit=2, after=second["last_id"])
    assert listed(third) == ["m4"] and third["has_more"] is False
    before = page(order="asc", before=second["last_id"])
    assert listed(before) == ["m0", "m1", "m2"]

    # The SDK's auto-pagination walks the same cursors.
    assert [i.content[0].text for i in sdk(proxy).responses.input_items.list(created["id"], limit=2,
                                                                             order="asc")] == texts

    bad_cursor = requests.get(url, params={"after": "msg_nope"}, timeout=10)
    assert bad_cursor.status_code == 400 and bad_cursor.json()["error"]["param"] == "after"
    bad_limit = requests.get(url, params={"limit": 101}, timeout=10)
    assert bad_limit.status_code == 400 and bad_limit.json()["error"]["param"] == "limit"
    bad_order = requests.get(url, params={"order": "sideways"}, timeout=10)
    assert bad_order.status_code == 400 and bad_order.json()["error"]["param"] == "order"
    missing = requests.get(f"{proxy.base_url}/v1/responses/resp_nope/input_items", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def poll(proxy, response_id: str, until: set[str], timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = requests.get(f"{proxy.base_url}/v1/responses/{response_id}", timeout=10).json()
        if response["status"] in until or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def test_a_background_response_runs_after_the_reply_and_is_polled(proxy, upstream):
    upstream.script(Reply.text("Done in the background.", reasoning="Work.", delay=0.02))
    created = post(proxy, {"model": MODEL, "input": "work", "background": True})
    assert created.status_code == 200
    first = created.json()
    validate_response(first)
    assert first["status"] == "in_progress" and first["background"] is True and first["output"] == []

    final = poll(proxy, first["id"], {"completed", "failed"})
    assert final["status"] == "completed", final
    validate_response(final)
    assert final["output"][-1]["content"][0]["text"] == "Done in the background."
    assert sdk(proxy).responses.retrieve(first["id"]).output_text == "Done in the background."


def test_a_background_response_can_be_cancelled(proxy, upstream):
    upstream.script(Reply.text(" ".join(["word"] * 400), reasoning=None, delay=0.05))  # a 20 s reply
    first = post(proxy, {"model": MODEL, "input": "slow", "background": True}).json()
    assert upstream.wait_for(lambda fake: len(fake.chat_requests) == 1, 5.0)
    cancelled = sdk(proxy).responses.cancel(first["id"])
    assert cancelled.status == "cancelled"
    assert upstream.wait_for_disconnects(1, timeout=5.0), "the upstream call was closed"
    time.sleep(0.3)
    assert requests.get(f"{proxy.base_url}/v1/responses/{first['id']}", timeout=10).json()["status"] == "cancelled"
    again = requests.post(f"{proxy.base_url}/v1/responses/{first['id']}/cancel", timeout=10)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_background_refusals_and_cancel_errors(proxy, upstream):
    streamed = post(proxy, {"model": MODEL, "input": "hi", "background": True, "stream": True})
    assert streamed.status_code == 400 and streamed.json()["error"]["param"] == "stream"
    unstored = post(proxy, {"model": MODEL, "input": "hi", "background": True, "store": False})
    assert unstored.status_code == 400 and unstored.json()["error"]["param"] == "store"
    upstream.script(Reply.text("Hi.", reasoning=None))
    created = post(proxy, {"model": MODEL, "input": "hi"}).json()
    cancel = requests.post(f"{proxy.base_url}/v1/responses/{created['id']}/cancel", timeout=10)
    assert cancel.status_code == 400 and "background" in cancel.json()["error"]["message"]
    assert requests.post(f"{proxy.base_url}/v1/responses/resp_nope/cancel", timeout=10).status_code == 404
    assert upstream.chat_requests and len(upstream.chat_requests) == 1


# ---- the Response object -------------------------------------------------------------------------------------------


def test_every_snapshot_carries_the_full_response_object(proxy, upstream):
    upstream.script(Reply.text("Hi.", reasoning="Greet."))
    events = stream(proxy, {"model": MODEL, "input": "hi", "tools": TOOLS})
    snapshots = [e["response"] for e in events if "response" in e]
    stored = requests.get(f"{proxy.base_url}/v1/responses/{snapshots[-1]['id']}", timeout=10).json()
    for snapshot in [*snapshots, stored]:
        validate_response(snapshot)  # strict: the SDK's model, plus the Open Responses-only fields typed
        for name in ("presence_penalty", "frequency_penalty", "temperature", "top_p"):
            assert type(snapshot[name]) is float, name
        assert snapshot["temperature"] == 1.0 and snapshot["top_p"] == 1.0
        assert snapshot["top_logprobs"] == 0 and snapshot["service_tier"] == "default"
        assert snapshot["store"] is True and snapshot["background"] is False
        for name in ("max_tool_calls", "safety_identifier", "prompt_cache_key"):
            assert name in snapshot and snapshot[name] is None
        assert snapshot["tools"][0]["strict"] is False
    # The Open Responses check is a real one: what the proxy sent before issue 11 fails it.
    for broken in ({**stored, "temperature": None}, {k: v for k, v in stored.items() if k != "completed_at"}):
        with pytest.raises(AssertionError):
            validate_open_responses(broken)
    assert [s["completed_at"] for s in snapshots[:-1]] == [None] * (len(snapshots) - 1)
    assert isinstance(snapshots[-1]["completed_at"], int)
    assert snapshots[-1]["completed_at"] >= snapshots[-1]["created_at"]


def test_request_settings_are_echoed_with_their_types(proxy, upstream):
    upstream.script(Reply.text("Hi.", reasoning=None))
    response = post(proxy, {"model": MODEL, "input": "hi", "temperature": 0, "top_p": 0.5, "max_tool_calls": 3,
                            "prompt_cache_key": "k", "safety_identifier": "u1", "top_logprobs": 2,
                            "tools": [{**TOOLS[0], "strict": True}]}).json()
    validate_response(response)
    assert response["temperature"] == 0.0 and type(response["temperature"]) is float
    assert response["top_p"] == 0.5 and response["max_tool_calls"] == 3 and response["top_logprobs"] == 2
    assert response["prompt_cache_key"] == "k" and response["safety_identifier"] == "u1"
    assert response["tools"][0]["strict"] is True


# ---- reasoning summaries -------------------------------------------------------------------------------------------


def test_reasoning_streams_as_a_summary_when_asked_and_still_replays(proxy, upstream):
    upstream.script(Reply.tool_calls([("exec_command", {"cmd": "ls"})], reasoning="Look first."))
    events = stream(proxy, {"model": MODEL, "input": [user("what is here?")], "tools": TOOLS, "store": False,
                            "reasoning": {"effort": "high", "summary": "auto"}})
    types = [e["type"] for e in events]
    assert "response.reasoning_text.delta" not in types
    summary_events = [t for t in types if "reasoning_summary" in t]
    assert summary_events[0] == "response.reasoning_summary_part.added"
    assert summary_events[-2:] == ["response.reasoning_summary_text.done", "response.reasoning_summary_part.done"]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_summary_text.delta")
    assert deltas == "Look first."
    reasoning, call = events[-1]["response"]["output"]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Look first."}]
    assert reasoning["encrypted_content"].startswith("dsp1.")
    assert events[-1]["response"]["reasoning"]["summary"] == "auto"

    # Replayed as Codex does (items verbatim): the reasoning reaches the upstream unchanged.
    upstream.script(Reply.text("Done.", reasoning=None))
    stream(proxy, {"model": MODEL, "tools": TOOLS, "store": False, "input": [
        user("what is here?"), reasoning, call,
        {"type": "function_call_output", "call_id": call["call_id"], "output": "a.txt"}]})
    assert assistant_turn(upstream.chat_requests[-1].body["messages"])["reasoning_content"] == "Look first."
    assert upstream.rejections == []


# ---- restart and scale-out -----------------------------------------------------------------------------------------


def test_stored_responses_survive_a_restart(fake_deepseek, start_proxy):
    """SQLite (the default store, in the user data dir): stop the server, start it again, continue."""
    fake_deepseek.reset()
    before = start_proxy(fake_deepseek.base_url)
    first = tool_turn(before, fake_deepseek, reasoning="Persist me.")
    before.stop()

    after = start_proxy(fake_deepseek.base_url)  # same HOME, so the same data dir and store file
    assert requests.get(f"{after.base_url}/v1/responses/{first['id']}", timeout=10).json() == first
    call = first["output"][1]
    fake_deepseek.script(Reply.text("Continued.", reasoning=None))
    stream(after, {"model": MODEL, "previous_response_id": first["id"], "tools": TOOLS,
                   "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "x"}]})
    assert assistant_turn(fake_deepseek.chat_requests[-1].body["messages"])["reasoning_content"] == "Persist me."
    assert fake_deepseek.rejections == []


def test_two_instances_share_one_redis(fake_deepseek, start_proxy, redis_server):
    fake_deepseek.reset()
    config = f'[store]\nurl = "{redis_server.url}"\n'
    a = start_proxy(fake_deepseek.base_url, config)
    b = start_proxy(fake_deepseek.base_url, config)

    # Created on A, fetched and continued on B.
    first = tool_turn(a, fake_deepseek, reasoning="Shared thought.")
    assert requests.get(f"{b.base_url}/v1/responses/{first['id']}", timeout=10).json() == first
    call = first["output"][1]
    fake_deepseek.script(Reply.text("From B.", reasoning=None))
    second = stream(b, {"model": MODEL, "previous_response_id": first["id"], "tools": TOOLS,
                        "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "x"}]})
    assert second[-1]["response"]["status"] == "completed"
    assert assistant_turn(fake_deepseek.chat_requests[-1].body["messages"])["reasoning_content"] == "Shared thought."
    assert requests.get(f"{a.base_url}/v1/responses/{second[-1]['response']['id']}", timeout=10).status_code == 200

    # Codex-style (store: false) on A; the client drops the reasoning item; B still replays the reasoning, from
    # the fallback cache the two instances share through Redis.
    fake_deepseek.script(Reply.tool_calls([("exec_command", {"cmd": "pwd"})], reasoning="Where am I?"))
    codex_turn = stream(a, {"model": MODEL, "store": False, "input": [user("where?")], "tools": TOOLS})
    call = next(i for i in codex_turn[-1]["response"]["output"] if i["type"] == "function_call")
    assert requests.get(f"{b.base_url}/v1/responses/{codex_turn[-1]['response']['id']}",
                        timeout=10).status_code == 404  # store: false kept nothing
    fake_deepseek.script(Reply.text("In /work.", reasoning=None))
    stream(b, {"model": MODEL, "store": False, "tools": TOOLS, "input": [
        user("where?"), {k: v for k, v in call.items() if k != "id"},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "/work"}]})
    assert assistant_turn(fake_deepseek.chat_requests[-1].body["messages"])["reasoning_content"] == "Where am I?"
    assert fake_deepseek.rejections == []
    json.dumps(first)  # the stored object is plain JSON


def test_an_unreachable_store_is_a_503_only_for_requests_that_need_it(fake_deepseek, start_proxy):
    from tests.conftest import free_port

    fake_deepseek.reset()
    # A config key: client keys made with `keys add` live in the store too, so without one the proxy cannot tell
    # that none exist and refuses every request while the store is down (fail closed, ops/keys.py).
    proxy = start_proxy(fake_deepseek.base_url, f'[server]\nclient_keys = ["team-key"]\n'
                                                f'[store]\nurl = "redis://127.0.0.1:{free_port()}/0"\n')
    key = {"Authorization": "Bearer team-key"}
    assert post(proxy, {"model": MODEL, "input": "hi"}).status_code == 401
    needs_it = post(proxy, {"model": MODEL, "input": "hi", "previous_response_id": "resp_1"}, key)
    assert needs_it.status_code == 503, needs_it.text
    assert needs_it.json()["error"]["code"] == "store_unavailable"
    assert fake_deepseek.chat_requests == []

    fake_deepseek.script(Reply.text("Served anyway.", reasoning=None))
    served = post(proxy, {"model": MODEL, "input": "hi"}, key)  # store: true by default; storing it fails afterwards
    assert served.status_code == 200 and served.json()["output"][-1]["content"][0]["text"] == "Served anyway."
    time.sleep(0.5)
    assert "served but not stored" in proxy.log()
