"""The `deepseek-proxy` command's own behaviour: a bad config or flag stops `serve` before anything starts, a taken
port is one line, the start-up announcement names what has no key."""

from __future__ import annotations

import subprocess
import sys

import pytest


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


# ---- flags are blamed by name ---------------------------------------------------------------------------------------

def test_invalid_flags_name_the_flag(tmp_path):
    zero = run_cli("--config", "/dev/null", "serve", "--workers", "0", tmp_path=tmp_path)
    assert zero.returncode == 2
    assert zero.stderr.strip() == "deepseek-proxy: invalid configuration: --workers must be at least 1, got 0"
    big = run_cli("--config", "/dev/null", "serve", "--port", "99999", tmp_path=tmp_path)
    assert big.returncode == 2 and "--port must be between 0 and 65535, got 99999" in big.stderr
    word = run_cli("--config", "/dev/null", "serve", "--port", "abc", tmp_path=tmp_path)
    assert word.returncode == 2 and "argument --port: invalid int value: 'abc'" in word.stderr
    for result in (zero, big, word):
        assert "built-in defaults" not in result.stderr


# ---- the listening socket --------------------------------------------------------------------------------------------

def test_bind_listener_reports_a_taken_port_in_one_line(tmp_path, monkeypatch):
    import socket

    from deepseek_proxy.cli import BindError, bind_listener

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # no state file names the taker
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BindError) as caught:
            bind_listener("127.0.0.1", port)
    assert str(caught.value) == (f"127.0.0.1:{port} is already in use — another deepseek-proxy? "
                                 f"(choose another port with --port)")


def test_bind_listener_takes_ipv6_and_explains_foreign_addresses():
    from deepseek_proxy.cli import BindError, bind_listener

    sock = bind_listener("::1", 0)
    try:
        assert sock.family.name == "AF_INET6" and sock.getsockname()[0] == "::1"
    finally:
        sock.close()
    with pytest.raises(BindError, match=r"cannot listen on 192\.0\.2\.1:\d+: 192\.0\.2\.1 is not an address of this"):
        bind_listener("192.0.2.1", 0)  # TEST-NET-1: never local
    with pytest.raises(BindError, match="does not resolve"):
        bind_listener("no-such-host.invalid", 0)


# ---- the announcement ------------------------------------------------------------------------------------------------

def test_announcement_lists_models_and_names_each_keyless_upstream_with_its_fix(tmp_path):
    from deepseek_proxy.cli import announcement, key_problems
    from deepseek_proxy.config import load_config

    config_file = tmp_path / "config.toml"
    config_file.write_text('[upstreams.local]\nbase_url = "http://127.0.0.1:1/v1"\napi_key = "pass:no/such"\n'
                           '[models."deepseek-v4-pro"]\n[models.qwen]\nupstream = "local"\n')
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"), "DEEPSEEK_API_KEY": "sk-test",
           "PATH": str(tmp_path / "empty-bin")}  # no `pass` installed
    config = load_config(config_file, env=env)
    problems = key_problems(config, env)
    assert [(up.name, models) for up, models, _ in problems] == [("local", ["qwen"])]
    text = announcement(config, problems)
    lines = text.splitlines()
    assert lines[0].startswith("deepseek-proxy ") and "listening on http://127.0.0.1:8787" in lines[0]
    assert lines[1] == "  deepseek-v4-pro → deepseek https://api.deepseek.com (deepseek-v4-pro)"
    assert lines[2] == "  qwen            → local http://127.0.0.1:1/v1 (qwen)  [no key]"
    assert lines[3].startswith("warning: no API key for upstream local (http://127.0.0.1:1/v1): `pass show no/su")
    assert lines[4] == "  qwen answers 401 upstream_key_missing until it has one; the other models work."
    assert lines[5] == "  fix: pass insert no/such  (the key on its first line), then restart `deepseek-proxy serve`"
    assert "sk-test" not in text
