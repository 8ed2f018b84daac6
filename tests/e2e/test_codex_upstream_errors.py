"""End to end: upstream refusals that retrying cannot fix stop the real Codex CLI at once, with the upstream's words.

Codex (0.169) retries an HTTP 401/402 five more times and then prints only the status line; through the proxy a
streamed request gets a response.failed whose code Codex treats as final (`invalid_prompt`), so it stops after
ONE request and shows DeepSeek's own message. Codex's retries are left on here (3 + 3), so a retry would show.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import CODEX_FIXTURES
from tests.e2e.codex_cli import make_codex_home, run_codex_exec
from tests.fakes.fake_deepseek import Reply

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("status, message", [
    (402, "Insufficient Balance"),
    (401, "Authentication Fails, Your api key: ****abcd is invalid"),
])
def test_codex_stops_after_one_request_and_shows_the_upstreams_message(proxy, upstream, work, status, message):
    upstream.script(*[Reply.error(status, message)] * 10)
    catalog = json.loads((CODEX_FIXTURES / "config" / "model_catalog_deepseek.json").read_text())
    codex_home = make_codex_home(work, base_url=proxy.base_url + "/v1", model="deepseek-v4-pro",
                                 env_key="DEEPSEEK_PROXY_KEY", catalog=catalog, max_retries=3)
    project = work / "project"
    project.mkdir()

    result = run_codex_exec(codex_home, project, "say hi", env_key_value="unused-by-the-proxy", timeout=120)

    diagnostics = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}\nproxy log:\n{proxy.log()[-3000:]}"
    assert result.returncode != 0, diagnostics
    assert len(upstream.chat_requests) == 1, diagnostics
    assert message in result.stderr + result.stdout, diagnostics
    assert "Reconnecting" not in result.stderr, diagnostics


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
        catalog = json.loads((CODEX_FIXTURES / "config" / "model_catalog_deepseek.json").read_text())
        codex_home = make_codex_home(work, base_url=proxy.base_url + "/v1", model="deepseek-v4-pro",
                                     env_key="DEEPSEEK_PROXY_KEY", catalog=catalog, max_retries=0)
        project = work / "project"
        project.mkdir()
        result = run_codex_exec(codex_home, project, "say hi", env_key_value="unused-by-the-proxy", timeout=120)
    finally:
        page.close()
    output = result.stdout + result.stderr
    diagnostics = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}\nproxy log:\n{proxy.log()[-3000:]}"
    assert result.returncode != 0, diagnostics
    assert "502 Bad Gateway | corp-proxy" in output, diagnostics
    assert "<html" not in output and "<title>" not in output and "<center>" not in output, diagnostics
    shown = [line for line in output.splitlines() if "corp-proxy" in line]
    assert shown and all(len(line) < 400 for line in shown), diagnostics
