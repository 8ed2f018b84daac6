"""`deepseek-proxy gemini setup` is enough: after it, the real Gemini CLI reaches the proxy with nothing in the shell
(no GOOGLE_GEMINI_BASE_URL, no GEMINI_API_KEY), reading ~/.gemini/settings.json and ~/.gemini/.env as setup wrote
them (in a folder it trusts; elsewhere the shell exports setup prints are needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.gemini_cli import GeminiHome, gemini_binary
from tests.e2e.scripted_messages import RefusingProxy
from tests.fakes.fake_deepseek import Reply

pytestmark = pytest.mark.e2e  # drives a real client binary from tests/e2e/node_modules

def _setup(home: GeminiHome, proxy_url: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepseek_proxy.cli", "--config", os.devnull, "gemini", "setup",
                           "--gemini-home", str(home.home / ".gemini"), "--proxy-url", proxy_url, *extra],
                          capture_output=True, text=True, timeout=60, check=False, env={**os.environ, "HOME": str(home.home)})


def _run(home: GeminiHome, refusing_url: str, *, trusted: bool) -> subprocess.CompletedProcess:
    env = {"HOME": str(home.home), "PATH": os.environ.get("PATH", ""), "NO_COLOR": "1", "TERM": "dumb",
           "HTTPS_PROXY": refusing_url, "HTTP_PROXY": refusing_url, "NO_PROXY": "127.0.0.1,localhost"}
    if trusted:
        env["GEMINI_CLI_TRUST_WORKSPACE"] = "true"
    return subprocess.run([str(gemini_binary()), "-p", "Say hello.", "--yolo", "-m", "deepseek-v4-pro"],
                          cwd=home.workdir, env=env, capture_output=True, text=True, timeout=150, check=False,
                          stdin=subprocess.DEVNULL)


def test_setup_then_gemini_cli_reaches_the_proxy(proxy, upstream, tmp_path):
    home = GeminiHome(tmp_path)
    home.workdir.mkdir(parents=True)
    (home.home / ".gemini").mkdir(parents=True)
    home.settings_path.write_text('{"ui": {"theme": "Default"}}\n')
    done = _setup(home, proxy.base_url, "--offline")
    assert done.returncode == 0, done.stdout + done.stderr
    settings = json.loads(home.settings_path.read_text())
    assert settings["ui"] == {"theme": "Default"} and settings["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert settings["privacy"]["usageStatisticsEnabled"] is False
    assert list((home.home / ".gemini").glob("settings.json.bak-*"))
    again = _setup(home, proxy.base_url, "--offline")
    assert "nothing to change" in again.stdout

    upstream.default_reply = Reply.text("Hello through setup.", reasoning="hi")
    try:
        with RefusingProxy() as refusing:
            trusted = _run(home, refusing.url, trusted=True)
            untrusted = _run(home, refusing.url, trusted=False)
        assert refusing.targets == []
    finally:
        upstream.default_reply = Reply.text("ok")
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert "Hello through setup." in trusted.stdout
    # In a folder it does not trust Gemini CLI 0.61 does not read any .gemini/.env (the home one included): it
    # stops before any request. Setup says so and prints the shell exports that work everywhere.
    assert untrusted.returncode == 41 and "GEMINI_API_KEY" in untrusted.stderr
    assert "export GOOGLE_GEMINI_BASE_URL=" in done.stdout and "trust" in done.stdout
