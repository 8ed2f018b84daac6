"""The e2e harness itself: the pinned Codex CLI runs here and talks to a scripted Responses server on loopback.

Also pins the Codex behaviours the rest of the project relies on, so a Codex upgrade that changes them fails here
first, with a clear message.
"""

from __future__ import annotations

import pytest

from tests.e2e.codex_cli import CODEX_VERSION, codex_version, make_codex_home, run_codex_exec
from tests.e2e.scripted_responses import FINAL_MESSAGE_TEXT, ScriptedResponses

pytestmark = pytest.mark.e2e




def test_pinned_codex_is_installed():
    assert codex_version() == CODEX_VERSION


def test_codex_exec_prints_the_final_message(work):
    with ScriptedResponses() as server:
        home = make_codex_home(work, base_url=server.base_url, model="deepseek-v4-pro", env_key="DS_TEST_KEY")
        result = run_codex_exec(home, work / "wd", "say hello", env_key_value="sk-harness-1")

    assert result.returncode == 0, result.stderr[-3000:]
    assert FINAL_MESSAGE_TEXT in result.stdout
    [request] = server.responses_requests()
    assert request.path == "/v1/responses"
    assert request.headers["authorization"] == "Bearer sk-harness-1"
    assert request.body["model"] == "deepseek-v4-pro"
    assert request.body["stream"] is True


def test_provider_without_env_key_sends_no_authorization(work):
    """What `codex setup` writes when the proxy needs no key: Codex sends no Authorization header at all
    (not OPENAI_API_KEY, not auth.json)."""
    with ScriptedResponses() as server:
        home = make_codex_home(work, base_url=server.base_url, model="deepseek-v4-pro", env_key=None)
        (home / "auth.json").write_text('{"OPENAI_API_KEY": "sk-must-not-leak"}')
        result = run_codex_exec(home, work / "wd", "say hello", env_key_value=None)

    assert result.returncode == 0, result.stderr[-3000:]
    [request] = server.responses_requests()
    assert "authorization" not in request.headers


def test_legacy_profile_table_blocks_dash_p(work):
    """Codex 0.169 reads `-p NAME` from NAME.config.toml and refuses while config.toml has [profiles.NAME];
    this is why `codex setup` moves such a table out."""
    with ScriptedResponses() as server:
        home = make_codex_home(work, base_url=server.base_url, model="deepseek-v4-pro", env_key=None,
                               extra_toml='[profiles.ds]\nmodel = "deepseek-v4-pro"\n')
        (home / "ds.config.toml").write_text('model = "deepseek-v4-pro"\nmodel_provider = "deepseek-proxy"\n')
        blocked = run_codex_exec(home, work / "wd", "hi", env_key_value=None, profile="ds", timeout=60)
        text = (home / "config.toml").read_text().replace('[profiles.ds]\nmodel = "deepseek-v4-pro"\n', "")
        (home / "config.toml").write_text(text)
        allowed = run_codex_exec(home, work / "wd", "hi", env_key_value=None, profile="ds", timeout=60)

    assert blocked.returncode != 0
    assert "legacy" in blocked.stderr and "[profiles.ds]" in blocked.stderr
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert len(server.responses_requests()) == 1
