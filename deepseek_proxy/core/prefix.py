"""Prefix-break detection: where did this conversation's upstream prompt stop being a continuation of the last one?

DeepSeek bills the longest prefix a request shares with the account's earlier requests at the cache-hit price, so
every byte the proxy changes in front of the newest turn is paid again, in full, on every later turn. This module
notices when that happens. Pure: no I/O, no clock; the tracker keeps a bounded in-process memory.

What is compared: the Chat Completions request the proxy sends upstream, read the way DeepSeek's chat template
renders it (``prompt_parts``): the leading system messages first, then the tool definitions (the template appends
them to the system prompt), then the rest of the conversation in its order, where a mid-conversation system message
stays in place. Each message is serialized with sorted keys (DeepSeek parses the body, so key order inside a message
does not reach the prompt, but every value does); each tool definition as sent (the template prints its JSON). The
model is part of the fingerprint: the cache is per model, so a model switch starts a new thread, not a break.

The fingerprint of a prompt is compact: one 8-byte digest per part (each message, each tool) with its end offset,
and a chain of 8-byte digests of fixed-size blocks (``BLOCK_BYTES``) of the concatenated parts, which places a
change inside a long part (a 20 KB system prompt) to within a block. Offsets are bytes of that canonical
serialization (about 3.5 bytes per DeepSeek token), not of the HTTP body.

One conversation key can carry several threads: Claude Code's sub-agents and side calls (title, compaction) share
its session id but not its prompt. A new prompt is compared with the thread it shares the most with; sharing
nothing at all means a new thread, not a break.

Conversation keys come from the client's request (``*_conversation_key``), with ``first_messages_key`` of the Chat
request as the fallback when a client names no session.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

BLOCK_BYTES = 1024  # ~290 DeepSeek tokens: a 100 KB prompt costs ~800 bytes of block digests
DIGEST_BYTES = 8
FIRST_MESSAGES = 2  # the fallback key hashes at most this many leading user messages


# --------------------------------------------------------------------------------------------------------------------
# Conversation keys, one function per door (pure: the client's body and headers in, a key or None out)
# --------------------------------------------------------------------------------------------------------------------


def _header(headers: Any, name: str) -> str | None:
    """A header by case-insensitive name from a dict or a werkzeug Headers object (None when absent or empty)."""
    if headers is None:
        return None
    getter = getattr(headers, "get", None)
    value = getter(name) if getter is not None else None
    if value is None and isinstance(headers, dict):
        lowered = name.lower()
        value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == lowered), None)
    return value.strip() or None if isinstance(value, str) else None


MAX_KEY_CHARS = 128  # a client's session id longer than this is kept as its hash (keys go to the store and the log)


def _key(door: str, session: str) -> str:
    session = session.strip()
    if len(session) > MAX_KEY_CHARS:
        session = "h" + hashlib.blake2b(session.encode("utf-8", "replace"), digest_size=16).hexdigest()
    return f"{door}:{session}"


def responses_conversation_key(body: Any, headers: Any = None) -> str | None:
    """Codex: ``prompt_cache_key`` (its thread id), else its ``session-id`` / ``thread-id`` headers."""
    if isinstance(body, dict):
        key = body.get("prompt_cache_key")
        if isinstance(key, str) and key.strip():
            return _key("responses", key)
    for name in ("session-id", "thread-id", "session_id"):
        value = _header(headers, name)
        if value:
            return _key("responses", value)
    return None


def messages_conversation_key(body: Any, headers: Any = None) -> str | None:
    """Claude Code: ``session_id`` inside ``metadata.user_id`` (a JSON string), else ``X-Claude-Code-Session-Id``."""
    metadata = body.get("metadata") if isinstance(body, dict) else None
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user_id, str):
        try:
            parsed = json.loads(user_id)
        except ValueError:
            parsed = None
        session = parsed.get("session_id") if isinstance(parsed, dict) else None
        if isinstance(session, str) and session.strip():
            return _key("messages", session)
    value = _header(headers, "x-claude-code-session-id")
    return _key("messages", value) if value else None


def gemini_conversation_key(body: Any, headers: Any = None) -> str | None:
    """Gemini CLI names no session on the Gemini API (the captured 0.61.0 requests carry none; only Code Assist has
    a ``session_id``): use it when a body has one, else the caller falls back to ``first_messages_key``."""
    if isinstance(body, dict):
        for holder in (body, body.get("request")):
            session = holder.get("session_id") if isinstance(holder, dict) else None
            if isinstance(session, str) and session.strip():
                return _key("gemini", session)
    return None


def first_messages_key(chat_body: dict) -> str:
    """The fallback: a hash of the model and the leading user messages (at most FIRST_MESSAGES) of the upstream
    request, usually the client's context and the task. Only user messages: the first request of a tool loop has no
    assistant reply yet, and its key must be the next request's. System messages are left out so that a system prompt
    that changes, or a system message moved to the front, is seen as a break of the same conversation rather than a
    new one."""
    messages = [m for m in chat_body.get("messages") or [] if not (isinstance(m, dict) and m.get("role") == "system")]
    head: list = [chat_body.get("model")]
    for message in messages[:FIRST_MESSAGES]:
        if not (isinstance(message, dict) and message.get("role") == "user"):
            break
        head.append(message)
    return "first:" + hashlib.blake2b(orjson.dumps(head, option=orjson.OPT_SORT_KEYS), digest_size=12).hexdigest()


def anthropic_prompt(messages_body: dict) -> dict:
    """An Anthropic Messages request (the pass-through mode's upstream body) in the Chat form the fingerprint reads:
    its `system` as one leading system message, its tools, its messages, without their ``cache_control`` markers
    (request metadata, not prompt text: Claude Code moves the marker to the newest block on every turn). A copy:
    run it after the reply, not before the request."""
    system = messages_body.get("system")
    lead = [{"role": "system", "content": _unmarked(system)}] if system else []
    messages = messages_body.get("messages")
    return {"model": messages_body.get("model"), "tools": _unmarked(messages_body.get("tools") or []),
            "messages": lead + (_unmarked(messages) if isinstance(messages, list) else [])}


def _unmarked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _unmarked(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_unmarked(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------------------------------------


def _leading_system_count(messages: list) -> int:
    lead = 0
    while lead < len(messages) and isinstance(messages[lead], dict) and messages[lead].get("role") == "system":
        lead += 1
    return lead


def prompt_parts(chat_body: dict) -> tuple[list[bytes], int, int]:
    """The prompt in DeepSeek's reading order, one serialized part per system message, tool and message; with the
    number of leading system messages and of tools (which say what each part is)."""
    messages = chat_body.get("messages") or []
    tools = chat_body.get("tools") or []
    lead = _leading_system_count(messages)
    parts = [orjson.dumps(m, option=orjson.OPT_SORT_KEYS) for m in messages[:lead]]
    parts += [orjson.dumps(tool) for tool in tools]
    parts += [orjson.dumps(m, option=orjson.OPT_SORT_KEYS) for m in messages[lead:]]
    return parts, lead, len(tools)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


@dataclass(frozen=True)
class PromptFingerprint:
    """What is remembered of one upstream prompt (see the module docstring)."""

    model: str
    lead_systems: int  # parts [0, lead_systems) are the leading system messages
    tools: int  # then this many tool definitions; the rest are messages lead_systems, lead_systems + 1, ...
    part_ends: array  # array('I'): end offset of each part in the concatenation
    part_digests: bytes  # DIGEST_BYTES per part
    block_digests: bytes  # DIGEST_BYTES per whole block, each chained over everything before it
    block_bytes: int

    @property
    def length(self) -> int:
        return self.part_ends[-1] if self.part_ends else 0

    @property
    def parts(self) -> int:
        return len(self.part_ends)

    def part_digest(self, index: int) -> bytes:
        return self.part_digests[index * DIGEST_BYTES : (index + 1) * DIGEST_BYTES]

    def part_start(self, index: int) -> int:
        return self.part_ends[index - 1] if index else 0

    def label(self, index: int) -> str:
        """What part `index` is: "system", "tools", or "message N" (N indexes the Chat request's messages)."""
        if index < self.lead_systems:
            return "system"
        if index < self.lead_systems + self.tools:
            return "tools"
        return f"message {index - self.tools}"

    def size(self) -> int:
        """Bytes held (digests and offsets), for sizing the memory."""
        return len(self.part_digests) + len(self.block_digests) + self.part_ends.itemsize * len(self.part_ends)

    # ---- a compact, versioned text form for a shared store ---------------------------------------------------------
    def to_json(self) -> str:
        return orjson.dumps({
            "v": 1, "model": self.model, "lead": self.lead_systems, "tools": self.tools, "block": self.block_bytes,
            "ends": list(self.part_ends), "parts": self.part_digests.hex(), "blocks": self.block_digests.hex(),
        }).decode()

    @classmethod
    def from_json(cls, text: str) -> PromptFingerprint | None:
        try:
            data = orjson.loads(text)
            if data.get("v") != 1:
                return None
            return cls(data["model"], int(data["lead"]), int(data["tools"]), array("I", data["ends"]),
                       bytes.fromhex(data["parts"]), bytes.fromhex(data["blocks"]), int(data["block"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, OverflowError):
            return None


def fingerprint(chat_body: dict, block_bytes: int = BLOCK_BYTES) -> PromptFingerprint:
    """The fingerprint of an upstream Chat Completions request body."""
    parts, lead, tools = prompt_parts(chat_body)
    ends = array("I")
    offset = 0
    for part in parts:
        offset += len(part)
        ends.append(offset)
    whole = b"".join(parts)
    chain = bytearray()
    previous = b""
    for start in range(0, len(whole) - block_bytes + 1, block_bytes):
        previous = _digest(previous + whole[start : start + block_bytes])
        chain += previous
    return PromptFingerprint(str(chat_body.get("model") or ""), lead, tools, ends,
                             b"".join(_digest(part) for part in parts), bytes(chain), block_bytes)


@dataclass(frozen=True)
class PrefixBreak:
    """The new prompt stopped following the previous one of its conversation at `position` (bytes of the canonical
    serialization, to within a block inside a long part), in `what` ("system", "tools" or "message N"); the
    previous prompt was `previous_length` bytes, so about `previous_length - position` bytes that DeepSeek had
    cached are billed again."""

    position: int
    what: str
    previous_length: int

    @property
    def lost_bytes(self) -> int:
        return max(0, self.previous_length - self.position)


def _common_prefix(a: Any, b: Any, limit: int) -> int:
    """The length of the longest common prefix of the sequences a and b, at most `limit`: a binary search over
    slice comparisons, which run in C (a Python loop over a 1 MB prompt's thousand parts costs milliseconds)."""
    low, high = 0, limit  # a[:low] == b[:low]; the answer is in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def shared_parts(old: PromptFingerprint, new: PromptFingerprint) -> int:
    """How many leading parts the two prompts have in common (same kind, same bytes)."""
    limit = min(old.parts, new.parts)
    # Same kind: the labels agree up to the first place the leading-system or tool counts differ.
    if old.lead_systems != new.lead_systems:
        limit = min(limit, old.lead_systems, new.lead_systems)
    elif old.tools != new.tools:
        limit = min(limit, old.lead_systems + min(old.tools, new.tools))
    limit = _common_prefix(old.part_ends, new.part_ends, limit)
    return _common_prefix(old.part_digests, new.part_digests, limit * DIGEST_BYTES) // DIGEST_BYTES


def kind_of(label: str) -> str:
    """The kind of a part's label: "system", "tools" or "message" ("message 12" → "message")."""
    return label.split(" ", 1)[0]


def find_break(old: PromptFingerprint, new: PromptFingerprint) -> PrefixBreak | None:
    """Where `new` first differs from `old`, or None when `new` extends `old` (or is a prefix of it: a retry or a
    shorter side call loses nothing that was cached)."""
    shared = shared_parts(old, new)
    if shared == min(old.parts, new.parts):
        return None
    start = old.part_start(shared)
    # Inside the differing part, the block chain narrows the change down (blocks wholly within it that still match).
    position = start
    if old.block_bytes == new.block_bytes:
        block = old.block_bytes
        # The chain's common byte prefix, in whole digests: the blocks before the first that differs.
        same_blocks = _common_prefix(old.block_digests, new.block_digests,
                                     min(len(old.block_digests), len(new.block_digests))) // DIGEST_BYTES
        limit = min(old.part_ends[shared], new.part_ends[shared])  # both have this part: shared < min(parts)
        position = max(start, min(same_blocks * block, limit))
    # What changed, by the earlier kind in reading order of the two prompts' parts there: a system message moved to
    # the front is "system" (the old prompt had a tool there), tools dropped (Codex's compaction request) or added
    # are "tools" (a message on the other side); otherwise both say the same.
    what = min(old.label(shared), new.label(shared), key=lambda label: _KIND_ORDER[kind_of(label)])
    return PrefixBreak(position, what, old.length)


_KIND_ORDER = {"system": 0, "tools": 1, "message": 2}


# --------------------------------------------------------------------------------------------------------------------
# Memory: the last prompt per conversation thread
# --------------------------------------------------------------------------------------------------------------------


class FingerprintMemory(Protocol):
    """Where the tracker keeps each conversation's threads (most recent first). In-process: ``LruFingerprints``;
    shared between workers: ``StoreFingerprints``."""

    def get(self, key: str) -> list[PromptFingerprint] | None: ...

    def put(self, key: str, threads: list[PromptFingerprint]) -> None: ...


class LruFingerprints:
    """A bounded in-process memory: at most `max_conversations` keys, least recently used dropped first."""

    def __init__(self, max_conversations: int = 2048):
        self.max_conversations = max_conversations
        self._entries: OrderedDict[str, list[PromptFingerprint]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> list[PromptFingerprint] | None:
        threads = self._entries.get(key)
        if threads is not None:
            self._entries.move_to_end(key)
        return threads

    def put(self, key: str, threads: list[PromptFingerprint]) -> None:
        self._entries[key] = threads
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_conversations:
            self._entries.popitem(last=False)


class StoreFingerprints:
    """The memory on the response store (deepseek_proxy.store), so every worker sees every conversation. It rides on
    the store's reasoning table (a string per key, with the reasoning TTL) under a ``prefix:`` namespace. Like
    ReasoningCacheAdapter, a store failure is read as "nothing remembered": detection is advice, never a failure."""

    NAMESPACE = "prefix:"

    def __init__(self, store: Any):
        self.store = store

    def get(self, key: str) -> list[PromptFingerprint] | None:
        from ..store.base import StoreError

        try:
            text = self.store.get_reasoning(self.NAMESPACE + key)
        except StoreError:
            return None
        if not text:
            return None
        try:
            items = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        threads = [PromptFingerprint.from_json(item) for item in items if isinstance(item, str)]
        return [thread for thread in threads if thread is not None] or None

    def put(self, key: str, threads: list[PromptFingerprint]) -> None:
        from ..store.base import StoreError

        try:
            self.store.put_reasoning(self.NAMESPACE + key, orjson.dumps([t.to_json() for t in threads]).decode())
        except StoreError:
            pass


class PrefixTracker:
    """Remembers the last upstream prompt of each conversation thread and reports prefix breaks.

    Not thread-safe on its own: a gevent worker runs one greenlet at a time between I/O, and nothing here does I/O
    with the in-process memory."""

    def __init__(self, memory: FingerprintMemory | None = None, *, threads_per_conversation: int = 4,
                 block_bytes: int = BLOCK_BYTES):
        self.memory = memory if memory is not None else LruFingerprints()
        self.threads_per_conversation = threads_per_conversation
        self.block_bytes = block_bytes

    def observe(self, key: str | None, chat_body: dict) -> PrefixBreak | None:
        """Compare `chat_body` (the upstream request) with the last prompt of its conversation thread, remember it in
        that thread's place, and return the break, if any. `key` None: the fallback key of the request is used."""
        key = key or first_messages_key(chat_body)
        new = fingerprint(chat_body, self.block_bytes)
        threads = list(self.memory.get(key) or ())
        best_index, best_shared = None, 0
        for index, old in enumerate(threads):
            if old.model != new.model:
                continue
            shared = shared_parts(old, new)
            # Same first block: the same thread even if the very first part changed deep inside (a date in the
            # system prompt); nothing at all in common: another thread of the conversation (a sub-agent).
            if shared == 0 and not (old.block_digests[:DIGEST_BYTES]
                                    and old.block_digests[:DIGEST_BYTES] == new.block_digests[:DIGEST_BYTES]):
                continue
            if best_index is None or shared > best_shared:
                best_index, best_shared = index, shared
        found = None
        if best_index is not None:
            found = find_break(threads[best_index], new)
            if found is None:  # the new prompt continues (or repeats) the thread: it takes the thread's place
                threads.pop(best_index)
            # After a break the old prompt stays a thread of its own: the upstream's cache still holds it, and a
            # later prompt that shares more with it (the turn after Codex's tool-less compaction request shares the
            # system prompt and tools with the turns before it) is compared with it.
        threads.insert(0, new)
        self.memory.put(key, threads[: self.threads_per_conversation])
        return found
