"""StringFieldStream: one JSON string field decoded incrementally from argument fragments.

The reference for every decoded value is `json.loads` of the complete arguments, so the tests check the
incremental decoder against an independent, complete one, for every possible split point.
"""

from __future__ import annotations

import json

import pytest

from deepseek_proxy.translate.partial_json import StringFieldStream

# Every escape JSON has, non-ASCII raw and escaped, a surrogate pair, quotes and backslashes.
TRICKY_INPUT = (
    '*** Begin Patch\n*** Add File: caf\u00e9.txt\n+say "hi"\t\\o/ \U0001f600 \u00e9\r\n'
    "+slash / back \\ \b\f end\n*** End Patch\n"
)


def feed_all(fragments: list[str], field: str = "input") -> tuple[str, list[str]]:
    stream = StringFieldStream(field)
    pieces = [stream.feed(fragment) for fragment in fragments]
    return "".join(pieces), pieces


def splits(text: str):
    """Every way to cut `text` into two fragments."""
    for cut in range(len(text) + 1):
        yield [text[:cut], text[cut:]]


@pytest.mark.parametrize("ensure_ascii", [True, False], ids=["escaped", "raw-utf8"])
def test_every_two_way_split_decodes_to_the_json_value(ensure_ascii):
    arguments = json.dumps({"input": TRICKY_INPUT}, ensure_ascii=ensure_ascii)
    for fragments in splits(arguments):
        decoded, _ = feed_all(fragments)
        assert decoded == TRICKY_INPUT, fragments


def test_one_character_at_a_time_decodes_to_the_json_value():
    arguments = json.dumps({"input": TRICKY_INPUT})  # ensure_ascii: \u00e9, \ud83d\ude00
    decoded, pieces = feed_all(list(arguments))
    assert decoded == TRICKY_INPUT
    assert sum(1 for p in pieces if p) > 20  # it really streams, it does not wait for the end


def test_split_between_backslash_and_escape_letter_waits_for_the_letter():
    stream = StringFieldStream("input")
    assert stream.feed('{"input": "line one\\') == "line one"
    assert stream.feed('nline two"}') == "\nline two"


def test_split_inside_a_unicode_escape():
    stream = StringFieldStream("input")
    assert stream.feed('{"input": "caf\\u00') == "caf"
    assert stream.feed('e9!"}') == "\u00e9!"


def test_surrogate_pair_split_between_its_halves_is_one_character():
    stream = StringFieldStream("input")
    assert stream.feed('{"input": "a\\ud83d') == "a"  # the high half alone is not emitted yet
    assert stream.feed("\\ude00") == "\U0001f600"
    assert stream.feed('b"}') == "b"


@pytest.mark.parametrize(
    "escaped, expected",
    [
        ("\\ud83dx", "\ufffdx"),  # high surrogate followed by a plain character
        ("\\ud83d\\n", "\ufffd\n"),  # ... by another escape
        ("\\ud83d\\ud83d\\ude00", "\ufffd\U0001f600"),  # two highs, the second one paired
        ("\\ude00x", "\ufffdx"),  # a low surrogate alone
        ("x\\ud83d", "x\ufffd"),  # a high surrogate right before the closing quote
    ],
)
def test_lone_surrogates_become_replacement_characters(escaped, expected):
    decoded, _ = feed_all(['{"input": "' + escaped + '"}'])
    assert decoded == expected
    decoded.encode("utf-8")  # never a lone surrogate: it must be encodable (orjson would refuse it)


def test_whitespace_around_the_key_and_colon_is_accepted():
    decoded, _ = feed_all(['{ \n "input"', " :  ", '"value"}'])
    assert decoded == "value"


def test_opening_split_anywhere_still_found():
    arguments = '{"input": "abc"}'
    for fragments in splits(arguments):
        assert feed_all(fragments)[0] == "abc", fragments


def test_stops_at_the_closing_quote_and_ignores_what_follows():
    stream = StringFieldStream("input")
    assert stream.feed('{"input": "done"') == "done"
    assert stream.feed(', "input": "again"}') == ""
    assert stream.feed("more") == ""


def test_other_field_name():
    assert feed_all(['{"patch": "x\\ty"}'], field="patch")[0] == "x\ty"
    assert feed_all(['{"input": "x"}'], field="patch")[0] == ""


@pytest.mark.parametrize(
    "arguments",
    [
        "*** Begin Patch\n",  # raw text, not JSON: the caller falls back to the complete arguments
        '["input", "x"]',
        '{"other": 1, "input": "x"}',  # the field is not first: not streamed
        '{"input": 5}',
    ],
)
def test_gives_up_on_anything_that_is_not_the_field_first(arguments):
    decoded, _ = feed_all([arguments, '"more"}'])
    assert decoded == ""


def test_gives_up_when_the_opening_never_arrives():
    stream = StringFieldStream("input")
    assert stream.feed("{" + " " * 300) == ""
    assert stream.feed('"input": "x"}') == ""


def test_invalid_unicode_escape_does_not_raise():
    decoded, _ = feed_all(['{"input": "a\\uZZZZb"}'])
    assert decoded.startswith("a") and decoded.endswith("b")
