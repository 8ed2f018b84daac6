"""End to end: upstream refusals that retrying cannot fix stop the real Codex CLI at once, with the upstream's words.

Codex (0.169) retries an HTTP 401/402 five more times and then prints only the status line; through the proxy a
streamed request gets a response.failed whose code Codex treats as final (`invalid_prompt`), so it stops after
ONE request and shows DeepSeek's own message. Codex's retries are left on here (3 + 3), so a retry would show.
"""

from __future__ import annotations

import pytest

from tests.e2e.codex_on_proxy import diagnostics, proxy_codex_home, run_in_new_project
from tests.fakes.fake_deepseek import Reply

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("status, message", [
    (402, "Insufficient Balance"),
    (401, "Authentication Fails, Your api key: ****abcd is invalid"),
])
def test_codex_stops_after_one_request_and_shows_the_upstreams_message(proxy, upstream, work, status, message):
    upstream.script(*[Reply.error(status, message)] * 10)
    codex_home = proxy_codex_home(proxy, work, max_retries=3)

    _, result = run_in_new_project(codex_home, work, "say hi")

    explained = diagnostics(result, proxy.log())
    assert result.returncode != 0, explained
    assert len(upstream.chat_requests) == 1, explained
    assert message in result.stderr + result.stdout, explained
    assert "Reconnecting" not in result.stderr, explained


CDN_PAGE = (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway | corp-proxy</title></head>\n"
            b"<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n")


def test_an_html_error_page_reaches_codex_as_one_readable_line(start_proxy, work):
    """A corporate proxy or CDN between the proxy and DeepSeek answers with an HTML page: Codex shows one line (the
    status and the page's title), never the page's tags. Retries off, so Codex shows the first answer it gets."""
    from tests.fakes.canned_http import CannedHTTPServer

    page = CannedHTTPServer(b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: %d\r\n"
                            b"Connection: close\r\n\r\n%b" % (len(CDN_PAGE), CDN_PAGE), replies_per_connection=1)
    try:
        proxy = start_proxy(page.base_url)
        _, result = run_in_new_project(proxy_codex_home(proxy, work, max_retries=0), work, "say hi")
    finally:
        page.close()
    output = result.stdout + result.stderr
    explained = diagnostics(result, proxy.log())
    assert result.returncode != 0, explained
    assert "502 Bad Gateway | corp-proxy" in output, explained
    assert "<html" not in output and "<title>" not in output and "<center>" not in output, explained
    shown = [line for line in output.splitlines() if "corp-proxy" in line]
    assert shown and all(len(line) < 400 for line in shown), explained
