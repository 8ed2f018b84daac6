"""Odd but legal OpenAI-compatible upstreams, unit level: tool-call deltas without `index`, Retry-After as an HTTP
date, error bodies read only up to 64 KiB, HTML error pages as one readable line."""

from __future__ import annotations

import email.utils

import pytest
import responses

from deepseek_proxy.upstream.client import (
    MAX_ERROR_BODY,
    UpstreamError,
    parse_retry_after,
    read_error_body,
    readable_error_text,
)
from tests.unit.test_responses_stream import chunk, of_type, run
from tests.unit.test_upstream_client import BASE, client, error_body

# ---- tool-call deltas without `index` ----------------------------------------------------------------------------

def call(arguments: str, call_id: str | None = None, name: str | None = None) -> dict:
    out: dict = {"function": {"arguments": arguments}}
    if call_id:
        out.update(id=call_id, type="function")
        out["function"]["name"] = name
    return chunk(tool_calls=[out])


def test_fragments_without_index_continue_the_last_call():
    events, _ = run([call("", "call_1", "exec_command"), call('{"cmd":'), call('"ls"}'), chunk(finish="tool_calls")])
    (item,) = events[-1]["response"]["output"]
    assert (item["call_id"], item["arguments"]) == ("call_1", '{"cmd":"ls"}')
    assert len(of_type(events, "response.output_item.added")) == 1


def test_a_fragment_without_index_but_with_a_new_id_opens_the_next_call():
    events, _ = run([call('{"cmd":', "call_1", "exec_command"), call('"ls"}'),
                     call('{"cmd":', "call_2", "exec_command"), call('"pwd"}'), chunk(finish="tool_calls")])
    calls = events[-1]["response"]["output"]
    assert [(c["call_id"], c["arguments"]) for c in calls] == [("call_1", '{"cmd":"ls"}'), ("call_2", '{"cmd":"pwd"}')]


def test_a_repeated_id_without_index_is_the_same_call():
    events, _ = run([call('{"cmd":', "call_1", "exec_command"), call('"ls"}', "call_1", "exec_command"),
                     chunk(finish="tool_calls")])
    (item,) = events[-1]["response"]["output"]
    assert item["arguments"] == '{"cmd":"ls"}'


def test_a_first_fragment_without_index_or_id_opens_a_call():
    events, _ = run([chunk(tool_calls=[{"function": {"name": "get_goal", "arguments": "{}"}}]),
                     chunk(finish="tool_calls")])
    (item,) = events[-1]["response"]["output"]
    assert item["name"] == "get_goal" and item["call_id"]


def test_indexed_fragments_are_unchanged():
    events, _ = run([chunk(tool_calls=[{"index": 0, "id": "call_1", "function": {"name": "exec_command",
                                                                                   "arguments": "{}"}}]),
                     chunk(tool_calls=[{"index": 1, "id": "call_2", "function": {"name": "exec_command",
                                                                                   "arguments": "{}"}}]),
                     chunk(finish="tool_calls")])
    assert [c["call_id"] for c in events[-1]["response"]["output"]] == ["call_1", "call_2"]


# ---- Retry-After ---------------------------------------------------------------------------------------------------

NOW = 1_800_000_000.0


@pytest.mark.parametrize("header, seconds", [
    ("17", 17), ("0", 0), (" 5 ", 5),
    (email.utils.formatdate(NOW + 30, usegmt=True), 30),  # IMF-fixdate
    (email.utils.formatdate(NOW + 30, usegmt=True).replace("GMT", "-0000"), 30),
    (email.utils.formatdate(NOW - 600, usegmt=True), 0),  # already past: retry now
    ("Sunday, 06-Nov-94 08:49:37 GMT", 0),  # obsolete RFC 850 form, long past
    (None, None), ("", None), ("soon", None), ("-5", None), ("1.5", None),
])
def test_retry_after_seconds_or_http_date(header, seconds):
    assert parse_retry_after(header, now=NOW) == seconds


@responses.activate
def test_a_retry_after_date_from_the_upstream_becomes_seconds():
    date = email.utils.formatdate(usegmt=True)  # now: 0 (or 1 across a second boundary), not the default 3
    responses.post(f"{BASE}/chat/completions", json=error_body("busy"), status=429, headers={"Retry-After": date})
    with pytest.raises(UpstreamError) as caught:
        client().post_chat({"model": "m", "messages": []})
    assert caught.value.retry_after in (0, 1)


# ---- error bodies ---------------------------------------------------------------------------------------------------

class _Body:
    """A response whose body is produced as it is read: counts what was taken."""

    def __init__(self, total: int):
        self.total, self.taken = total, 0

    def iter_content(self, chunk_size: int):
        while self.taken < self.total:
            self.taken += chunk_size
            yield b"x" * chunk_size


def test_an_error_body_is_read_only_up_to_64_kib():
    body = _Body(50 * 1024 * 1024)
    assert len(read_error_body(body)) == MAX_ERROR_BODY  # type: ignore[arg-type]
    assert body.taken <= MAX_ERROR_BODY + 16 * 1024


CLOUDFLARE_502 = b"""<!DOCTYPE html>
<html lang="en-US"><head><title>api.example.com | 502: Bad gateway</title>
<style>body { color: red }</style></head>
<body><h1>Bad gateway</h1><p>The web server reported a bad gateway error.</p></body></html>"""


@pytest.mark.parametrize("raw, want", [
    (CLOUDFLARE_502, "The upstream answered HTTP 502 Bad Gateway (an HTML page: api.example.com | 502: Bad gateway)"),
    (b"<html><body><h1>Access denied</h1>\n<p>by policy &amp; rules</p></body></html>",
     "The upstream answered HTTP 502 Bad Gateway (an HTML page: Access denied by policy & rules)"),
    (b"<html><head><title>\n  Proxy   Error\n</title></head></html>",
     "The upstream answered HTTP 502 Bad Gateway (an HTML page: Proxy Error)"),
    (b"upstream connect error or disconnect/reset before headers\n  reset reason: overflow",
     "upstream connect error or disconnect/reset before headers reset reason: overflow"),
    (b"", "The upstream answered HTTP 502 Bad Gateway"),
])
def test_a_non_json_error_body_is_one_readable_line(raw, want):
    assert readable_error_text(raw, 502, "Bad Gateway") == want


def test_a_long_plain_text_error_is_cut():
    line = readable_error_text(b"word " * 10_000, 500, "Internal Server Error")
    assert len(line) <= 301 and "\n" not in line


@responses.activate
def test_an_html_error_page_reaches_the_client_as_its_title():
    responses.post(f"{BASE}/chat/completions", body=CLOUDFLARE_502, status=502, content_type="text/html")
    with pytest.raises(UpstreamError) as caught:
        client().post_chat({"model": "m", "messages": [], "stream": True})
    assert caught.value.status == 502
    assert "502: Bad gateway" in caught.value.message and "<" not in caught.value.message


def test_two_calls_with_one_upstream_id_get_distinct_call_ids():
    events, _ = run([chunk(tool_calls=[{"index": 0, "id": "call_1", "function": {"name": "exec_command",
                                                                                   "arguments": "{}"}}]),
                     chunk(tool_calls=[{"index": 1, "id": "call_1", "function": {"name": "exec_command",
                                                                                   "arguments": "{}"}}]),
                     chunk(finish="tool_calls")])
    call_ids = [c["call_id"] for c in events[-1]["response"]["output"]]
    assert call_ids[0] == "call_1" and len(set(call_ids)) == 2  # the client answers each call by its id
