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
