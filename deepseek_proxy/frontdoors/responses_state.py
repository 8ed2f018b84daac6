"""The Responses API's state on the proxy's store: `previous_response_id`, `item_reference`, and what is stored.

    body = expand_stored_context(body, store)   # the body as if the client had sent the whole conversation

    context = resolve_context(body, store)      # the same, in parts: the history and this request's own items
    translate_request(context.body_for(body), ...)
    ... stream the reply ...
    store_finished_response(store, final_response, context)   # store: true, once the last event was sent

Both the HTTP door (responses.py) and the WebSocket door (responses_ws.py) call this before translation, so the
translator (translate/responses_request.py) only ever sees complete, self-contained requests. It reads the store
(`get_conversation`, `get_items`: the only store calls before the upstream call) and nothing else; it never
mutates the body it is given.

Errors are RequestErrors in OpenAI's shape, so each door renders them as it renders any bad request:
- an unknown, deleted or expired `previous_response_id` (or any earlier turn of its chain expired) →
  404 `previous_response_not_found`, never a silently shortened history;
- an `item_reference` to an id the store does not hold → 404 `not_found` on `input[i]`;
- the store cannot be reached → StoreUnavailable propagates (the door answers 503).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ..store import ResponseTooLarge, Store, StoredResponse, StoreError
from ..translate.errors import RequestError

log = logging.getLogger("deepseek_proxy.responses")

Item = dict[str, Any]

# The id prefix OpenAI gives each input item type (items the client sent without an id get one before storing).
_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "custom_tool_call": "ctc",
              "custom_tool_call_output": "ctco", "reasoning": "rs"}


RACE_GRACE_SECONDS = 0.05  # cooperative under gevent: other greenlets run meanwhile


@dataclass
class StoredContext:
    """A request's input, resolved against the store."""

    history: list[Item]  # the conversation previous_response_id continues (input + output items, oldest first)
    own_items: list[Item]  # this request's input items, item references resolved, each with an id
    previous_response_id: str | None

    def body_for(self, body: dict[str, Any]) -> dict[str, Any]:
        """`body` with the whole conversation in `input` and no state references left."""
        return {**body, "input": self.history + self.own_items, "previous_response_id": None}


def expand_stored_context(body: dict[str, Any], store: Store) -> dict[str, Any]:
    """The request `body` with `previous_response_id` expanded to the stored conversation and every
    `item_reference` replaced by the item it names: what the translator can read. A body without either comes
    back as it is (no store call at all). Raises RequestError (404) for ids the store does not hold."""
    if not needs_store(body):
        return body
    return resolve_context(body, store).body_for(body)


def needs_store(body: dict[str, Any]) -> bool:
    """Whether the body refers to stored state (so expanding it needs the store)."""
    if body.get("previous_response_id") is not None:
        return True
    items = body.get("input")
    return isinstance(items, list) and any(isinstance(item, dict) and item.get("type") == "item_reference"
                                           for item in items)


def resolve_context(body: dict[str, Any], store: Store | None) -> StoredContext:
    """The body's input resolved: the stored history it continues and its own items (references replaced, ids
    given). `store` may be None only when `needs_store(body)` is false."""
    previous = body.get("previous_response_id")
    history: list[Item] = []
    if previous is not None:
        assert store is not None
        conversation = store.get_conversation(previous)
        if conversation is None:
            # The previous reply may have reached its client a moment before its write reached a shared store
            # (the door stores after the last event is sent): one short second look before a 404.
            time.sleep(RACE_GRACE_SECONDS)
            conversation = store.get_conversation(previous)
        if conversation is None:
            raise RequestError(f"Previous response with id '{previous}' not found.", param="previous_response_id",
                               code="previous_response_not_found", status=404)
        for record in conversation:
            history += record.input_items or []
            history += record.output_items
    return StoredContext(history=history, own_items=_own_items(body.get("input"), store),
                         previous_response_id=previous)


def store_finished_response(store: Store, response: dict[str, Any], context: StoredContext) -> bool:
    """Store a finished reply (`store: true`) with this request's own input items, chained to the response it
    continued. Call it once the last event has been sent. Never raises: a response too large for the store, or a
    store that cannot be reached, is logged and the reply stands (it was already served). True when stored."""
    record = StoredResponse(id=response["id"], response=response, input_items=context.own_items,
                            model=response["model"], created_at=response["created_at"],
                            previous_response_id=context.previous_response_id)
    try:
        store.put_response(record)
    except ResponseTooLarge as exc:
        log.warning("response %s served but not stored: %s", response["id"], exc)
        return False
    except StoreError as exc:
        log.warning("response %s served but not stored: the store is unavailable (%s)", response["id"], exc)
        return False
    return True


def _own_items(items: Any, store: Store | None) -> list[Item]:
    if isinstance(items, str):
        return [{"id": new_item_id("message"), "type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": items}]}]
    if items is None:
        return []
    if not isinstance(items, list):
        raise RequestError("`input` must be a string or an array of items", param="input")
    references = [item["id"] for item in items
                  if isinstance(item, dict) and item.get("type") == "item_reference"
                  and isinstance(item.get("id"), str)]
    found = store.get_items(references) if references and store is not None else {}
    if store is not None and len(found) < len(set(references)):
        time.sleep(RACE_GRACE_SECONDS)  # as for previous_response_id
        found = store.get_items(references)
    out: list[Item] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            out.append(item)
            continue
        if item.get("type") == "item_reference":
            stored = found.get(item.get("id"))  # type: ignore[arg-type]
            if stored is None:
                raise RequestError(f"Item with id '{item.get('id')}' not found.", param=f"input[{index}]",
                                   code="not_found", status=404)
            out.append(stored)
            continue
        out.append(_with_id(item))
    return out


def _with_id(item: Item) -> Item:
    """The item in the shape the input_items listing shows: a type and an id (OpenAI lists every input item with
    one), message content as parts."""
    kind = item.get("type") or ("message" if "role" in item else None)
    if kind is None or (item.get("id") and "type" in item and not isinstance(item.get("content"), str)):
        return item
    shaped = {**item, "type": kind}
    if not shaped.get("id"):
        shaped["id"] = new_item_id(kind)
    if kind == "message" and isinstance(shaped.get("content"), str):
        part = "output_text" if shaped.get("role") == "assistant" else "input_text"
        text_part: Item = {"type": part, "text": shaped["content"]}
        if part == "output_text":
            text_part["annotations"] = []
        shaped["content"] = [text_part]
    return shaped


def new_item_id(kind: str) -> str:
    return f"{_ID_PREFIX.get(kind, 'item')}_{uuid.uuid4().hex}"
