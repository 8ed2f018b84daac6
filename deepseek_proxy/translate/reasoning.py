"""Carrying DeepSeek's reasoning through a client that only echoes opaque items.

In thinking mode DeepSeek rejects an earlier assistant tool-call turn sent back without its `reasoning_content`.
Codex asks for `include: ["reasoning.encrypted_content"]` and returns every reasoning item verbatim on the next
turn, so the reasoning text travels inside `encrypted_content`: compressed, authenticated with the server's secret
and versioned, so a forged or foreign blob (e.g. a real OpenAI one) is recognised and ignored, never trusted.

The encoding is deterministic (no random nonce): the same reasoning always gives the same blob, which keeps the
whole request byte-stable from turn to turn for the upstream's prefix cache.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import zlib
from collections import OrderedDict

VERSION = "dsp1"
_TAG_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ReasoningCodec:
    """encode(text) → "dsp1.<payload>.<tag>"; decode(blob) → text, or None when it is not ours or was altered."""

    def __init__(self, secret: bytes):
        if not secret:
            raise ValueError("the reasoning codec needs a non-empty secret")
        self._secret = secret

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, VERSION.encode() + b"." + payload, hashlib.sha256).digest()[:_TAG_BYTES]

    def encode(self, reasoning: str) -> str:
        payload = zlib.compress(reasoning.encode("utf-8"), 6)
        return f"{VERSION}.{_b64(payload)}.{_b64(self._tag(payload))}"

    def decode(self, blob: str | None) -> str | None:
        if not isinstance(blob, str) or not blob.startswith(VERSION + "."):
            return None
        try:
            _, payload_b64, tag_b64 = blob.split(".")
            payload = _unb64(payload_b64)
            if not hmac.compare_digest(_unb64(tag_b64), self._tag(payload)):
                return None
            return zlib.decompress(payload).decode("utf-8")
        except (ValueError, zlib.error, UnicodeDecodeError):
            return None


class ReasoningCache:
    """Bounded LRU of call_id → reasoning text, for clients that drop reasoning items between turns.

    Per process; it is the fallback, the blob in `encrypted_content` is the primary carrier.
    """

    def __init__(self, max_entries: int = 20_000):
        self._max = max_entries
        self._data: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, call_id: str, reasoning: str) -> None:
        with self._lock:
            self._data[call_id] = reasoning
            self._data.move_to_end(call_id)
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def get(self, call_id: str) -> str | None:
        with self._lock:
            reasoning = self._data.get(call_id)
            if reasoning is not None:
                self._data.move_to_end(call_id)  # least *recently used* is evicted first
            return reasoning

    def __len__(self) -> int:
        return len(self._data)
