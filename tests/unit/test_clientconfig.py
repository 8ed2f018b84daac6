"""deepseek_proxy/clientconfig.py: what the Codex, Claude Code and Gemini CLI setup and doctor commands share."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from deepseek_proxy.clientconfig import (
    NO_KEY_TOKEN,
    SetupRefused,
    backup_path,
    client_home,
    key_choice,
    key_plan,
    print_next_steps,
    proxy_base_url,
    proxy_command,
    read_text,
    write_atomically,
)
from deepseek_proxy.config import load_config

PROXY_KEY = "sk-proxy-client-7f3a"


def config_from(tmp_path: Path, text: str = ""):
    path = tmp_path / "proxy config.toml"
    path.write_text(text)
    return load_config(path, env={"HOME": str(tmp_path)})


def plan(config, existing=None, env=None):
    return key_plan(config, existing, env or {}, client="Some CLI", command="some setup", where="some.file")


def test_no_key_needed_gives_the_placeholder(tmp_path):
    config = config_from(tmp_path)
    assert key_choice(config).env_key is None
    assert plan(config, existing="whatever").value == NO_KEY_TOKEN


def test_a_client_key_comes_from_the_shell_or_stays_and_a_wrong_one_is_refused(tmp_path):
    config = config_from(tmp_path, f'[server]\nclient_keys = ["{PROXY_KEY}"]\n')
    assert key_choice(config).env_key == "DEEPSEEK_PROXY_KEY"
    chosen = plan(config, env={"DEEPSEEK_PROXY_KEY": f" {PROXY_KEY} "})
    assert chosen.value == PROXY_KEY and chosen.source == "$DEEPSEEK_PROXY_KEY"
    kept = plan(config, existing=PROXY_KEY)
    assert kept.value is None and kept.source == "the client key already in some.file"
    with pytest.raises(SetupRefused, match="not one of the proxy's client keys") as refused:
        plan(config, env={"DEEPSEEK_PROXY_KEY": "sk-wrong"})
    assert "sk-wrong" not in str(refused.value)  # a key value never reaches the terminal
    with pytest.raises(SetupRefused, match=r"asks Some CLI for a key\. Set DEEPSEEK_PROXY_KEY .*"
                                           r"`deepseek-proxy some setup` again; it copies the value into some\.file"):
        plan(config, existing=NO_KEY_TOKEN)  # the placeholder is no key


def test_proxy_url_and_commands(tmp_path):
    config = config_from(tmp_path, '[server]\nport = 9911\n')
    assert proxy_base_url(config) == "http://127.0.0.1:9911"
    assert proxy_base_url(config, " https://host/deepseek/v1/ ") == "https://host/deepseek"
    assert proxy_command(config, "claude", "setup") == f"deepseek-proxy --config '{config.path}' claude setup"
    out = io.StringIO()
    print_next_steps(config, "gemini", out)
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["", "Next:"] and lines[3] == "  gemini"
    assert lines[2].startswith(f"  {proxy_command(config, 'serve')}  ") and "doctor" in lines[4]


def test_read_text_names_the_command_to_run_again(tmp_path):
    assert read_text(tmp_path / "absent", "codex setup") is None
    (tmp_path / "ok").write_text("héllo")
    assert read_text(tmp_path / "ok", "codex setup") == "héllo"
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    with pytest.raises(SetupRefused, match=r"is not UTF-8 text .*`deepseek-proxy gemini setup` again"):
        read_text(tmp_path / "bin", "gemini setup")
    (tmp_path / "dir").mkdir()
    with pytest.raises(SetupRefused, match=r"is a directory, not a file.*`deepseek-proxy claude setup` again"):
        read_text(tmp_path / "dir", "claude setup")


def test_backup_path_never_reuses_a_name(tmp_path):
    path = tmp_path / "settings.json"
    first = backup_path(path, now=0)
    assert first.name.startswith("settings.json.bak-")
    first.write_text("x")
    second = backup_path(path, now=0)
    assert second != first and second.name == first.name + "-1"


def test_write_atomically_keeps_modes_and_makes_private_files_owner_only(tmp_path):
    shared = tmp_path / "sub" / "config.toml"
    write_atomically(shared, "a = 1\n")
    assert shared.read_text() == "a = 1\n"
    os.chmod(shared, 0o640)
    write_atomically(shared, "a = 2\n", private=True)
    assert shared.read_text() == "a = 2\n" and stat.S_IMODE(shared.stat().st_mode) == 0o640  # kept
    secret = tmp_path / ".env"
    write_atomically(secret, "KEY=v\n", private=True)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env", "sub"]  # no temporary file left


def test_client_home_prefers_the_option_then_the_variable_then_the_home_default(tmp_path):
    env = {"HOME": str(tmp_path), "X_HOME": str(tmp_path / "from-var")}
    assert client_home(tmp_path / "given", env, "X_HOME", ".x") == tmp_path / "given"
    assert client_home(None, env, "X_HOME", ".x") == tmp_path / "from-var"
    assert client_home(None, env, "X_HOME", ".x", inside=".x") == tmp_path / "from-var" / ".x"
    assert client_home(None, {"HOME": str(tmp_path)}, "X_HOME", ".x") == tmp_path / ".x"
    assert client_home("relative", env, "X_HOME", ".x").is_absolute()
