"""translate/chat_deltas.py: how the stream translators read Chat chunks (choice 0 only, the pieces in order, usage,
finish_reason), seen through a subclass that records what it is handed."""

from __future__ import annotations

from deepseek_proxy.translate.chat_deltas import OVERLOADED_MESSAGE, ChatDeltaReader


class Recorder(ChatDeltaReader):
    def __init__(self):
        self.finished = False
        self._finish_reason = None
        self._usage = None
        self._final = {"done": True}
        self.finished_choices: list[dict] = []

    def feed(self, chunk):
        out: list = []
        self._read(chunk, out)
        return out

    def _finish(self):
        self.finished = True
        return [("finish", self._finish_reason)]

    def fail(self, kind, message):
        return self._end_with_error(("fail", kind, message))

    def _reasoning_delta(self, text, out):
        out.append(("reasoning", text))

    def _text_delta(self, text, out):
        out.append(("text", text))

    def _tool_call_delta(self, call, out):
        out.append(("call", call["index"]))

    def _finished_choice(self, choice):
        self.finished_choices.append(choice)


def test_pieces_come_in_order_and_only_from_choice_zero():
    reader = Recorder()
    chunk = {"choices": [
        {"index": 1, "delta": {"content": "other choice"}},
        {"index": 0, "delta": {"tool_calls": [{"index": 0}, {"index": 1}], "content": "hi", "reasoning_content": "r"}},
    ]}
    assert reader.feed(chunk) == [("reasoning", "r"), ("text", "hi"), ("call", 0), ("call", 1)]
    assert reader.finish_reason is None


def test_empty_pieces_are_skipped_and_usage_and_finish_reason_are_kept():
    reader = Recorder()
    assert reader.feed({"choices": [{"delta": {"content": "", "reasoning_content": None}}]}) == []
    reader.feed({"choices": [], "usage": {"prompt_tokens": 3}})
    choice = {"index": 0, "delta": {}, "finish_reason": "stop", "matched_stop": "X"}
    reader.feed({"choices": [choice]})
    assert reader._usage == {"prompt_tokens": 3}
    assert reader.finish_reason == "stop" and reader.finished_choices == [choice]


def test_replay_reads_a_complete_reply_and_finishes():
    reader = Recorder()
    completion = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "hi", "reasoning_content": "r",
        "tool_calls": [{"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]}
    events = reader.replay(completion)
    assert events[:3] == [("reasoning", "r"), ("text", "hi"), ("call", 0)]
    assert events[-1] == ("finish", "tool_calls")


def test_end_with_error_is_sent_once_and_clears_the_final_reply():
    reader = Recorder()
    assert reader._end_with_error({"error": 1}) == [{"error": 1}]
    assert reader.finished and reader._final is None
    assert reader._end_with_error({"error": 2}) == []


def test_finish_ends_once_and_an_overloaded_upstream_ends_as_a_failure():
    reader = Recorder()
    reader.feed({"choices": [{"delta": {}, "finish_reason": "stop"}]})
    assert reader.finish() == [("finish", "stop")]
    assert reader.finish() == []
    overloaded = Recorder()
    overloaded.feed({"choices": [{"delta": {"content": "par"}, "finish_reason": "insufficient_system_resource"}]})
    assert overloaded.finish() == [("fail", "overloaded", OVERLOADED_MESSAGE)]
    assert overloaded.finish() == [] and overloaded._final is None
