"""The `deepseek-proxy` command's own behaviour: a bad config stops `serve` before anything starts."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str, tmp_path) -> subprocess.CompletedProcess:
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"), "DEEPSEEK_API_KEY": "sk-test"}
    return subprocess.run([sys.executable, "-m", "deepseek_proxy.cli", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_invalid_config_names_the_key_and_the_file(tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text('[server]\nport = "eighty"\n')
    result = run_cli("--config", str(bad), "serve", tmp_path=tmp_path)
    assert result.returncode == 2
    assert "server.port" in result.stderr and str(bad) in result.stderr


def test_missing_explicit_config_file_is_an_error(tmp_path):
    result = run_cli("--config", str(tmp_path / "nope.toml"), "serve", tmp_path=tmp_path)
    assert result.returncode == 2 and "nope.toml" in result.stderr and "does not exist" in result.stderr


def test_config_command_prints_the_effective_settings_without_secrets(tmp_path):
    result = run_cli("--config", "/dev/null", "config", tmp_path=tmp_path)
    assert result.returncode == 0
    assert "127.0.0.1:8787" in result.stdout and "deepseek-v4-pro" in result.stdout
    assert "sk-test" not in result.stdout  # the key source is shown, never the key


def test_no_command_prints_help(tmp_path):
    result = run_cli(tmp_path=tmp_path)
    assert result.returncode == 2 and "serve" in result.stdout
