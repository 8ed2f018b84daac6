"""Prefix-break detection for each request (issue 14): the pure detector (core/prefix.py) wired to the request's
scope, the log and /metrics.

    watch = PrefixWatch.from_config(config.ops, store)     # one per app (Ops.prefix)
    watch.after_reply(scope)                               # RequestScope.finish, for a 200 reply only

The scope carries the conversation key its door computed from the client's request (`scope.conversation`) and the
Chat request as it went upstream (`scope.prompt`, handed over by upstream.chat's `on_prepared` hook through the
gate). After the reply, the prompt's fingerprint is compared with the conversation's previous one; a break is one
WARNING line on the `deepseek_proxy.prefix` logger (request id, door, conversation key, where, lost bytes; never
message content) and one count in `deepseek_proxy_prefix_breaks_total{door, what}` (+ the lost bytes in
`deepseek_proxy_prefix_break_lost_bytes_total{door}`); every comparison counts in
`deepseek_proxy_prefix_checks_total{door}` (breaks / checks: how often a door's prompts break).

Off the time-to-first-token path: fingerprinting a 1 MB prompt costs a few ms (the README's figure), so under the
gevent worker it runs in a greenlet of its own, which starts once the request's greenlet waits for the network (its
reply, terminating chunk included, is written by then). Without gevent (tests, another server) it runs at once.

Only replies that completed (status 200) update the memory: a refused or broken request was not cached upstream.
Detection is advice: any failure in it is logged at debug and swallowed, never a failed request.

Memory: "store" (default) keeps the fingerprints on the response store (core/prefix.py StoreFingerprints), so with
several gunicorn workers every turn of a conversation is compared with the turn before it, whichever worker served
either; "process" keeps them in each worker (an LRU of 2048 conversations), which with N workers compares a turn
with the last one *that worker* saw: still no false breaks (a conversation only grows), but a break is reported by
each worker that later serves the conversation, and not at all by a worker that never saw it before. Measured
(`python -m bench.prefix_cost`, p50 on a shared 2-core machine): for a 1 MB agent prompt, fingerprint and
comparison take 3.4 ms with the memory in the process and 3.8 ms with it in SQLite (a ~40 KB fingerprint per
thread); for the captured 11 KB Codex turn, 0.04 ms and 0.08 ms. The store's accuracy is worth its ~0.4 ms.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.prefix import (
    LruFingerprints,
    PrefixBreak,
    PrefixTracker,
    StoreFingerprints,
    first_messages_key,
    kind_of,  # the bounded label of a break's place in /metrics
)
from .logs import redact_text
from .metrics import prefix_break, prefix_checked

if TYPE_CHECKING:
    from ..config import OpsConfig
    from .request import RequestScope

log = logging.getLogger("deepseek_proxy.prefix")

BYTES_PER_TOKEN = 3.5  # DeepSeek's tokenizer on code and English, about
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")


def built_prompt(prompt: Any) -> dict | None:
    """The prompt itself: a door may hand over the function that builds it (the pass-through's Anthropic body as
    the detector reads it), called here once. Never raises: None when it cannot be built."""
    try:
        prompt = prompt() if callable(prompt) else prompt
    except Exception:  # an odd body the proxy still sent: nothing to compare rather than a failed request
        log.debug("the upstream prompt could not be rebuilt", exc_info=True)
        return None
    return prompt if isinstance(prompt, dict) else None


def fallback_conversation(prompt: dict | None) -> str | None:
    """The key of a request whose client names no conversation: a hash of its first messages (never raises)."""
    if prompt is None:
        return None
    try:
        return first_messages_key(prompt)
    except Exception:  # an odd body the proxy still sent: no key rather than a failed request
        log.debug("no fallback conversation key", exc_info=True)
        return None


def loggable_key(key: str) -> str:
    """A conversation key as it may appear in a log line: one short token, nothing secret-looking."""
    return _UNPRINTABLE.sub("?", redact_text(key))[:120]


def _run_soon(task: Callable[[], None]) -> None:
    """`task` in a greenlet of its own under a gevent-patched worker, else at once."""
    try:
        from gevent import monkey, spawn

        if monkey.is_module_patched("socket"):
            spawn(task)
            return
    except ImportError:
        pass
    task()


class PrefixWatch:
    """The app's prefix-break detector. `tracker` None: detection is off and `after_reply` does nothing."""

    def __init__(self, tracker: PrefixTracker | None, *, run: Callable[[Callable[[], None]], None] = _run_soon):
        self.tracker = tracker
        self._run = run

    @classmethod
    def from_config(cls, config: OpsConfig, store: Any) -> PrefixWatch:
        if not config.detect_prefix_breaks:
            return cls(None)
        memory = StoreFingerprints(store) if config.prefix_memory == "store" else LruFingerprints()
        return cls(PrefixTracker(memory))

    def after_reply(self, scope: RequestScope) -> None:
        """Compare the scope's upstream prompt with its conversation's last one, soon (see the module docstring)."""
        if self.tracker is None:
            return
        prompt = scope.prompt
        if prompt is None:
            return
        request_id, door, conversation = scope.request_id, scope.door, scope.conversation

        def later() -> None:
            self.observe(prompt, request_id=request_id, door=door, conversation=conversation)

        self._run(later)

    def observe(self, prompt: dict | Callable[[], dict], *, request_id: str, door: str,
                conversation: str | None) -> PrefixBreak | None:
        """Now: the break this prompt (or the function that builds it) makes in its conversation (logged and
        counted), or None. Never raises."""
        if self.tracker is None:
            return None
        try:
            if callable(prompt):
                prompt = prompt()
            key = conversation or first_messages_key(prompt)
            found = self.tracker.observe(key, prompt)
            prefix_checked(door=door)
            if found is not None:
                self._report(found, request_id=request_id, door=door, conversation=key)
            return found
        except Exception:  # advice only: a detector fault must never reach the request
            log.debug("prefix-break detection failed for %s", request_id, exc_info=True)
            return None

    @staticmethod
    def _report(found: PrefixBreak, *, request_id: str, door: str, conversation: str) -> None:
        lost = found.lost_bytes
        log.warning("prefix break: conversation %s changed at %s (byte %d of the previous %d-byte prompt); ~%d "
                    "cached tokens are read again at the cache-miss price (%d bytes) door=%s request_id=%s",
                    loggable_key(conversation), found.what, found.position, found.previous_length,
                    round(lost / BYTES_PER_TOKEN), lost, door, request_id)
        prefix_break(door=door, what=kind_of(found.what), lost_bytes=lost)
