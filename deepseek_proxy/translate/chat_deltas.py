"""Reading Chat Completions chunks, once for the stream translators that turn them into another API's events
(MessagesStream, GeminiStream, ResponseStream). Pure: no I/O.

A chunk may carry usage (the last one, when asked for) and choices; only choice 0 is read (n > 1 is never
requested). Its delta — or its `message`, in the chunks `completion_as_chunks` makes of a complete reply — brings
reasoning, text and tool-call fragments, in that order, and finally a finish_reason. A subclass says what each
piece becomes in its API's events; how the pieces are found is here. So are the parts of the door-stream contract
(frontdoors/relay.DoorStream) that do not depend on the API: `replay`, `finish_reason`, and `finish` turning an
upstream out of capacity into a failure.
"""

from __future__ import annotations

from typing import Any

from ..core.chat import completion_as_chunks

# DeepSeek's finish_reason when it ran out of capacity mid-reply: the reply is a failure, not an answer.
OVERLOADED_REASON = "insufficient_system_resource"
OVERLOADED_MESSAGE = "The upstream ran out of capacity (insufficient_system_resource); try again."


class ChatDeltaReader:
    finished: bool
    _finish_reason: str | None
    _usage: dict | None
    _final: Any

    # ---- what a subclass says ----------------------------------------------------------------------------------
    def feed(self, chunk: dict) -> list[Any]:
        raise NotImplementedError

    def fail(self, kind: str, message: str) -> list[Any]:
        raise NotImplementedError

    def _finish(self) -> list[Any]:
        """The events that end a reply that ended normally (see finish)."""
        raise NotImplementedError

    def _reasoning_delta(self, text: str, out: list) -> None:
        raise NotImplementedError

    def _text_delta(self, text: str, out: list) -> None:
        raise NotImplementedError

    def _tool_call_delta(self, call: dict, out: list) -> None:
        raise NotImplementedError

    def _finished_choice(self, choice: dict) -> None:
        """The choice that carried the finish_reason (already recorded): what else it says, if anything."""

    # ---- shared ------------------------------------------------------------------------------------------------
    def _read(self, chunk: dict, out: list) -> None:
        """Record the chunk's usage, hand its pieces to the subclass in order (adding to `out`), record the
        finish_reason."""
        usage = chunk.get("usage")
        if usage:
            self._usage = usage
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n > 1 is never requested
            delta = choice.get("delta") or choice.get("message") or {}
            reasoning = delta.get("reasoning_content")
            if reasoning:
                self._reasoning_delta(reasoning, out)
            content = delta.get("content")
            if content:
                self._text_delta(content, out)
            for call in delta.get("tool_calls") or ():
                self._tool_call_delta(call, out)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
                self._finished_choice(choice)

    def finish(self) -> list[Any]:
        """The upstream ended the reply: its last events (`_finish`), or a failure when the upstream ran out of
        capacity; nothing after the stream has ended."""
        if self.finished:
            return []
        if self._finish_reason == OVERLOADED_REASON:
            return self.fail("overloaded", OVERLOADED_MESSAGE)
        return self._finish()

    def replay(self, completion: dict) -> list[Any]:
        """A complete (non-streamed) chat.completion: every event its stream would have produced, finish included."""
        out: list[Any] = []
        for chunk in completion_as_chunks(completion):
            out += self.feed(chunk)  # type: ignore[arg-type]  # a ChatChunk is a dict
        return out + self.finish()

    @property
    def finish_reason(self) -> str | None:
        """The upstream's finish_reason, once it has sent one."""
        return self._finish_reason

    def _end_with_error(self, error: Any) -> list[Any]:
        """A failure mid-reply, for an API whose stream ends with one error object: that object, once; nothing
        after the stream has ended. There is then no final reply."""
        if self.finished:
            return []
        self.finished = True
        self._final = None
        return [error]
