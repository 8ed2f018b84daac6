"""`deepseek-proxy claude setup` checked with the real Claude Code.

setup merges into a settings.json that already holds the user's own settings; then the real `claude`, started
with no ANTHROPIC_* variable of its own, must send its requests to the URL setup wrote, with the key and model
names setup chose. A scripted Messages server stands in for the proxy (the lead wires the real proxy in once the
Messages door lands: point `--proxy-url` at it instead).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deepseek_proxy.claude.doctor import collect_claude_checks
from deepseek_proxy.codex.config_toml import NO_KEY_TOKEN
from deepseek_proxy.config import load_config
from tests.e2e.claude_cli import (
    CLAUDE_VERSION,
    ClaudeHome,
    claude_binary,
    make_claude_home,
    run_claude_print,
)
from tests.e2e.scripted_messages import (
    FINAL_TEXT,
    RefusingProxy,
    ScriptedMessages,
    sse_text,
)

pytestmark = pytest.mark.e2e

PROXY_KEY = "sk-proxy-client-e2e"
USER_SETTINGS = {"permissions": {"allow": ["Bash(ls:*)"]}, "env": {"FOO": "bar"}, "theme": "dark"}


def claude_setup(tmp_path: Path, home: ClaudeHome, proxy_url: str | None, *, config_text: str = "",
                 env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """The real command line, as a user runs it."""
    config = tmp_path / "proxy.toml"
    config.write_text(config_text)
    env = {"HOME": str(home.home), "PATH": "/usr/bin:/bin", **(env_extra or {})}
    result = subprocess.run(
        [sys.executable, "-m", "deepseek_proxy.cli", "--config", str(config), "claude", "setup",
         "--claude-home", str(home.config_dir), *(["--proxy-url", proxy_url] if proxy_url else [])],
        capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_claude_code_follows_the_settings_setup_wrote(tmp_path):
    home = make_claude_home(tmp_path, settings=USER_SETTINGS)
    with ScriptedMessages() as proxy, ScriptedMessages() as decoy, RefusingProxy() as outside:
        # The proxy's address comes from its config here (the other tests pass --proxy-url).
        out = claude_setup(tmp_path, home, None, config_text=f"[server]\nport = {proxy.port}\n").stdout
        # The shell's own ANTHROPIC_BASE_URL must lose to settings.json (its env block wins).
        result = run_claude_print(home, "create out.txt with hi", https_proxy=outside.url,
                                  env_extra={"ANTHROPIC_BASE_URL": decoy.base_url})

    assert "key from a placeholder" in out
    assert result.returncode == 0, result.stderr[-3000:]
    assert FINAL_TEXT in result.stdout
    assert (home.workdir / "out.txt").read_text().strip() == "hi"
    assert decoy.requests == [] and outside.targets == []

    settings = json.loads(home.settings_path.read_text())
    assert settings["permissions"] == USER_SETTINGS["permissions"] and settings["theme"] == "dark"
    assert settings["env"]["FOO"] == "bar"

    # doctor, with the real binary on PATH, finds nothing to fix.
    config = load_config(tmp_path / "proxy.toml", env={"HOME": str(home.home)})
    checks = list(collect_claude_checks(config, claude_home=home.config_dir,
                                        env={"PATH": str(claude_binary().parent), "HOME": str(home.home)}))
    assert [(c.name, c.ok, c.warning) for c in checks] == [
        ("claude", True, False), ("settings.json", True, False), ("key", True, False), ("models", True, False)]
    assert f"Claude Code {CLAUDE_VERSION}" in checks[0].message
    assert proxy.base_url in checks[1].message

    requests = proxy.agent_requests()
    assert len(requests) == 2
    for request in requests:
        assert request.path == "/v1/messages"
        assert request.headers["authorization"] == f"Bearer {NO_KEY_TOKEN}"
        assert "x-api-key" not in request.headers
        assert request.body["model"] == "deepseek-v4-pro"
        # CLAUDE_CODE_ATTRIBUTION_HEADER=0: no per-session billing block in front of the cacheable prefix.
        assert not any(b["text"].startswith("x-anthropic-billing-header") for b in request.body["system"])


def test_haiku_alias_goes_to_the_fast_model(tmp_path):
    home = make_claude_home(tmp_path)
    with ScriptedMessages(script=[sse_text("pong")]) as proxy:
        claude_setup(tmp_path, home, proxy.base_url)
        result = run_claude_print(home, "ping", model="haiku")

    assert result.returncode == 0, result.stderr[-3000:]
    [request] = proxy.agent_requests()
    assert request.body["model"] == "deepseek-v4-flash"


def test_client_key_reaches_the_proxy(tmp_path):
    home = make_claude_home(tmp_path)
    with ScriptedMessages(script=[sse_text("pong")]) as proxy:
        out = claude_setup(tmp_path, home, proxy.base_url, config_text=f'[server]\nclient_keys = ["{PROXY_KEY}"]\n',
                           env_extra={"DEEPSEEK_PROXY_KEY": PROXY_KEY}).stdout
        # A real Anthropic key in the shell must not travel along (setup blanks ANTHROPIC_API_KEY).
        result = run_claude_print(home, "ping", api_key="sk-ant-users-own")

    assert PROXY_KEY not in out
    assert result.returncode == 0, result.stderr[-3000:]
    [request] = proxy.agent_requests()
    assert request.headers["authorization"] == f"Bearer {PROXY_KEY}"
    assert "x-api-key" not in request.headers
