"""`deepseek-proxy claude setup` and the Claude Code checks of `doctor`, on files in a temp dir.

The merge must leave everything outside `env` byte-for-byte, keep the user's key order, back up what it changes,
show a diff without secrets on --dry-run, change nothing the second time, and refuse a broken file clearly.
"""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

from deepseek_proxy.claude import doctor as claude_doctor
from deepseek_proxy.claude.setup import (
    NO_KEY_TOKEN,
    SetupRefused,
    merge_settings,
    model_roles,
    proxy_base_url,
    resolve_claude_home,
    run_setup,
)
from deepseek_proxy.cli import main as cli_main
from deepseek_proxy.config import load_config

PROXY_KEY = "sk-proxy-client-7f3a"
DEEPSEEK_KEY = "sk-deepseek-real-9c1d"


def config_from(tmp_path: Path, text: str = ""):
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    return load_config(path, env={"HOME": str(tmp_path)})


def setup(config, home: Path, *, dry_run: bool = False, proxy_url: str | None = None,
          env: dict | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = run_setup(config, claude_home=home, dry_run=dry_run, proxy_url=proxy_url, out=out,
                     env={"HOME": str(home.parent), **(env or {})})
    return code, out.getvalue()


def settings(home: Path) -> dict:
    return json.loads((home / "settings.json").read_text())


def backups(home: Path) -> list[Path]:
    return sorted(home.glob("settings.json.bak-*"))


USER_SETTINGS = """{
    "permissions": {
        "allow": ["Bash(npm run test:*)", "Read(~/.zshrc)"],
        "deny": []
    },
    "env": {
        "FOO": "bar",
        "ANTHROPIC_MODEL": "claude-opus-4-8"
    },
    "hooks": {"PostToolUse": [{"matcher": "Edit", "hooks": [{"type": "command", "command": "make fmt"}]}]},
    "theme": "dark"
}
"""


# ----------------------------------------------------------------------------------------- what is written

def test_fresh_settings_file(tmp_path):
    home = tmp_path / ".claude"
    code, out = setup(config_from(tmp_path), home)
    assert code == 0, out
    assert settings(home) == {"env": {
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8787",
        "ANTHROPIC_AUTH_TOKEN": NO_KEY_TOKEN,
        "ANTHROPIC_MODEL": "deepseek-v4-pro",
        "ANTHROPIC_DEFAULT_OPUS_MODEL": "deepseek-v4-pro",
        "ANTHROPIC_DEFAULT_SONNET_MODEL": "deepseek-v4-pro",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": "deepseek-v4-flash",
        "CLAUDE_CODE_SUBAGENT_MODEL": "deepseek-v4-flash",
        "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
        "ANTHROPIC_API_KEY": "",
    }}
    assert backups(home) == []
    assert "created" in out


def test_merge_keeps_everything_else_byte_for_byte(tmp_path):
    home = tmp_path / ".claude"
    home.mkdir()
    (home / "settings.json").write_text(USER_SETTINGS)
    code, out = setup(config_from(tmp_path), home)
    assert code == 0, out
    text = (home / "settings.json").read_text()
    before_env, after_env = USER_SETTINGS.split('    "env": {')[0], USER_SETTINGS.split('    },\n    "hooks"')[1]
    assert text.startswith(before_env)  # permissions untouched, same indentation
    assert text.endswith('    },\n    "hooks"' + after_env)  # hooks (one-line layout) and theme untouched
    data = json.loads(text)
    assert list(data) == ["permissions", "env", "hooks", "theme"]
    assert list(data["env"])[:2] == ["FOO", "ANTHROPIC_MODEL"]  # the user's order; ours appended
    assert data["env"]["FOO"] == "bar"
    assert data["env"]["ANTHROPIC_MODEL"] == "deepseek-v4-pro"
    assert '\n        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8787",\n' in text  # the file's 4-space indent
    [backup] = backups(home)
    assert backup.read_text() == USER_SETTINGS
    assert backup.name in out


def test_env_block_is_added_when_missing(tmp_path):
    home = tmp_path / ".claude"
    home.mkdir()
    original = '{\n\t"theme": "light",\n\t"model": "opus"\n}\n'
    (home / "settings.json").write_text(original)
    assert setup(config_from(tmp_path), home)[0] == 0
    text = (home / "settings.json").read_text()
    assert text.startswith('{\n\t"theme": "light",\n\t"model": "opus",\n\t"env": {\n\t\t"ANTHROPIC_BASE_URL"')
    assert text.endswith("\n\t}\n}\n")
    assert json.loads(text)["model"] == "opus"


@pytest.mark.parametrize("original", ["{}", "{}\n", "", "  \n", '{"theme":"dark"}'])
def test_empty_or_compact_files(tmp_path, original):
    home = tmp_path / ".claude"
    home.mkdir()
    (home / "settings.json").write_text(original)
    assert setup(config_from(tmp_path), home)[0] == 0
    data = settings(home)
    assert data["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8787"
    if "theme" in original:
        assert data["theme"] == "dark"
        assert (home / "settings.json").read_text().startswith('{"theme":"dark", "env": {')


def test_second_run_changes_nothing_and_says_so(tmp_path):
    home = tmp_path / ".claude"
    home.mkdir()
    (home / "settings.json").write_text(USER_SETTINGS)
    config = config_from(tmp_path)
    assert setup(config, home)[0] == 0
    first = (home / "settings.json").read_bytes()
    code, out = setup(config, home)
    assert code == 0
    assert "nothing to change" in out
    assert (home / "settings.json").read_bytes() == first
    assert len(backups(home)) == 1


def test_dry_run_shows_a_diff_and_writes_nothing(tmp_path):
    home = tmp_path / ".claude"
    home.mkdir()
    (home / "settings.json").write_text(USER_SETTINGS)
    code, out = setup(config_from(tmp_path), home, dry_run=True)
    assert code == 0
    assert (home / "settings.json").read_text() == USER_SETTINGS
    assert backups(home) == []
    assert '-        "ANTHROPIC_MODEL": "claude-opus-4-8"' in out
    assert '+        "ANTHROPIC_MODEL": "deepseek-v4-pro",' in out
    assert '+        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8787",' in out
    assert '  ~ ANTHROPIC_MODEL: "claude-opus-4-8" → "deepseek-v4-pro"' in out
    assert '  + ANTHROPIC_BASE_URL = "http://127.0.0.1:8787"' in out
    assert "FOO" not in out.split("env changes:")[1].split("---")[0]  # unchanged entries are not listed
    assert "dry run: nothing was written" in out


def test_proxy_url_option_and_configured_address(tmp_path):
    config = config_from(tmp_path, '[server]\nhost = "0.0.0.0"\nport = 9911\n')
    assert proxy_base_url(config) == "http://127.0.0.1:9911"
    assert proxy_base_url(config, "http://10.1.2.3:7000/v1/") == "http://10.1.2.3:7000"
    home = tmp_path / ".claude"
    assert setup(config, home, proxy_url="http://127.0.0.1:4444")[0] == 0
    assert settings(home)["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:4444"


def test_cli_entry_point(tmp_path, monkeypatch, capsys):
    config = tmp_path / "proxy.toml"
    config.write_text('[server]\nport = 9123\n')
    home = tmp_path / "cc"
    monkeypatch.delenv("DEEPSEEK_PROXY_KEY", raising=False)
    code = cli_main(["--config", str(config), "claude", "setup", "--claude-home", str(home)])
    assert code == 0, capsys.readouterr().out
    assert settings(home)["env"]["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9123"


def test_claude_home_resolution(tmp_path):
    assert resolve_claude_home(None, {"HOME": "/h"}) == Path("/h/.claude")
    assert resolve_claude_home(None, {"HOME": "/h", "CLAUDE_CONFIG_DIR": "/cfg"}) == Path("/cfg")
    assert resolve_claude_home(tmp_path / "x", {"CLAUDE_CONFIG_DIR": "/cfg"}) == tmp_path / "x"


def test_model_roles_follow_the_served_models(tmp_path):
    assert model_roles(config_from(tmp_path)) == ("deepseek-v4-pro", "deepseek-v4-flash")
    only_one = config_from(tmp_path, '[models.my-model]\nupstream_model = "deepseek-v4-pro"\n')
    assert model_roles(only_one) == ("my-model", "my-model")


# ------------------------------------------------------------------------------------------------- keys

def test_client_key_comes_from_the_shell_and_is_never_printed(tmp_path):
    config = config_from(tmp_path, f'[server]\nclient_keys = ["{PROXY_KEY}", "other"]\n')
    home = tmp_path / ".claude"
    code, out = setup(config, home, dry_run=True, env={"DEEPSEEK_PROXY_KEY": PROXY_KEY})
    assert code == 0
    assert PROXY_KEY not in out
    assert f"<secret: {len(PROXY_KEY)} chars>" in out
    code, out = setup(config, home, env={"DEEPSEEK_PROXY_KEY": PROXY_KEY})
    assert code == 0 and PROXY_KEY not in out
    assert settings(home)["env"]["ANTHROPIC_AUTH_TOKEN"] == PROXY_KEY
    assert stat.S_IMODE(os.stat(home / "settings.json").st_mode) == 0o600  # a new file holding a key
    # Later runs without the variable keep the key that is there.
    code, out = setup(config, home)
    assert code == 0 and "nothing to change" in out


def test_client_key_missing_is_a_clear_refusal(tmp_path):
    config = config_from(tmp_path, f'[server]\nclient_keys = ["{PROXY_KEY}"]\n')
    home = tmp_path / ".claude"
    code, out = setup(config, home)
    assert code == 1
    assert "DEEPSEEK_PROXY_KEY" in out and "Nothing was changed" in out
    assert not (home / "settings.json").exists()
    code, out = setup(config, home, env={"DEEPSEEK_PROXY_KEY": "sk-wrong"})
    assert code == 1 and "not one of the proxy's client keys" in out and "sk-wrong" not in out


def test_client_passthrough_uses_the_deepseek_key(tmp_path):
    config = config_from(tmp_path, '[upstreams.deepseek]\napi_key = "client"\n')
    home = tmp_path / ".claude"
    code, out = setup(config, home, env={"DEEPSEEK_API_KEY": DEEPSEEK_KEY})
    assert code == 0 and DEEPSEEK_KEY not in out
    assert settings(home)["env"]["ANTHROPIC_AUTH_TOKEN"] == DEEPSEEK_KEY


def test_api_key_variable_is_blanked_and_kept_in_the_backup(tmp_path):
    home = tmp_path / ".claude"
    home.mkdir()
    original = json.dumps({"env": {"ANTHROPIC_API_KEY": "sk-ant-users-own-key"}}, indent=2)
    (home / "settings.json").write_text(original)
    code, out = setup(config_from(tmp_path), home, dry_run=True)
    assert "sk-ant-users-own-key" not in out
    code, out = setup(config_from(tmp_path), home)
    assert code == 0 and "ANTHROPIC_API_KEY in the env block is emptied" in out and "sk-ant-users-own-key" not in out
    assert settings(home)["env"]["ANTHROPIC_API_KEY"] == ""
    [backup] = backups(home)
    assert backup.read_text() == original
    assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600


# --------------------------------------------------------------------------------------- broken input

@pytest.mark.parametrize("text, words", [
    ('{"env": {"A": "b",}}', "not valid JSON"),
    ("// comment\n{}", "not valid JSON"),
    ("[1, 2]", "not an object"),
    ('{"env": ["A=b"]}', "`env` is not an object"),
])
def test_malformed_settings_are_refused_untouched(tmp_path, text, words):
    home = tmp_path / ".claude"
    home.mkdir()
    (home / "settings.json").write_text(text)
    code, out = setup(config_from(tmp_path), home)
    assert code == 1
    assert words in out and "Nothing was changed" in out and str(home / "settings.json") in out
    assert (home / "settings.json").read_text() == text
    assert backups(home) == []


def test_not_utf8_is_refused(tmp_path):
    home = tmp_path / ".claude"
    home.mkdir()
    (home / "settings.json").write_bytes(b'{"theme": "\xff"}')
    code, out = setup(config_from(tmp_path), home)
    assert code == 1 and "not UTF-8" in out


def test_merge_is_pure_and_keeps_duplicate_free_layout():
    merged = merge_settings('{"env": {"X": "1", "Z": "0"}, "a": [1, 2]}', {"X": "2", "Y": "3"}, {"Z"})
    assert merged.text == '{"env": {"X": "2", "Y": "3"}, "a": [1, 2]}'
    assert merged.changed == ["X", "Y", "Z"]
    with pytest.raises(SetupRefused):
        merge_settings("{", {"X": "1"}, set())


# --------------------------------------------------------------------------------------------- doctor

def run_claude_checks(config, home: Path, env: dict | None = None) -> dict[str, tuple[bool, bool, str, str | None]]:
    env = {"PATH": "/nonexistent", "HOME": str(home.parent), **(env or {})}
    checks = claude_doctor.collect_claude_checks(config, claude_home=home, env=env)
    return {c.name: (c.ok, c.warning, c.message, c.fix) for c in checks}


def fake_claude(tmp_path: Path, version: str = "2.1.197") -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "claude"
    script.write_text(f"#!/bin/sh\necho '{version} (Claude Code)'\n")
    script.chmod(0o755)
    return str(bin_dir)


def test_doctor_after_setup_passes(tmp_path):
    config = config_from(tmp_path)
    home = tmp_path / ".claude"
    setup(config, home)
    found = run_claude_checks(config, home, {"PATH": fake_claude(tmp_path)})
    assert {name: ok for name, (ok, *_rest) in found.items()} == {
        "claude": True, "settings.json": True, "key": True, "models": True}
    assert "Claude Code 2.1.197" in found["claude"][2]


def test_doctor_reports_what_is_wrong_and_the_fix(tmp_path):
    config = config_from(tmp_path, f'[server]\nport = 9000\nclient_keys = ["{PROXY_KEY}"]\n')
    home = tmp_path / ".claude"
    home.mkdir()
    (home / "settings.json").write_text(json.dumps({"env": {
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9000/v1", "ANTHROPIC_AUTH_TOKEN": "sk-not-a-client-key",
        "ANTHROPIC_MODEL": "deepseek-chat"}}))
    found = run_claude_checks(config, home)
    ok, _, message, fix = found["claude"]
    assert not ok and "not installed" in message and "npm install -g @anthropic-ai/claude-code" in fix
    ok, _, message, fix = found["settings.json"]
    assert not ok and "drop the /v1" in message and fix.endswith(f"claude setup --claude-home {home}")
    ok, _, message, fix = found["key"]
    assert not ok and "not one of the proxy's client keys" in message and "sk-not-a-client-key" not in message
    ok, _, message, _ = found["models"]
    assert not ok and "deepseek-chat" in message and "deepseek-v4-pro" in message


def test_doctor_missing_and_broken_settings(tmp_path):
    config = config_from(tmp_path)
    home = tmp_path / ".claude"
    found = run_claude_checks(config, home, {"PATH": fake_claude(tmp_path)})
    assert found["settings.json"][0] is False and "does not exist" in found["settings.json"][2]
    home.mkdir()
    (home / "settings.json").write_text("{oops")
    found = run_claude_checks(config, home, {"PATH": fake_claude(tmp_path)})
    assert found["settings.json"][0] is False and "not valid JSON" in found["settings.json"][2]


def test_doctor_warns_about_the_attribution_header(tmp_path):
    config = config_from(tmp_path)
    home = tmp_path / ".claude"
    setup(config, home)
    data = settings(home)
    del data["env"]["CLAUDE_CODE_ATTRIBUTION_HEADER"]
    (home / "settings.json").write_text(json.dumps(data))
    checks = list(claude_doctor.collect_claude_checks(config, claude_home=home,
                                                      env={"PATH": fake_claude(tmp_path)}))
    warnings = [c for c in checks if c.warning]
    assert len(warnings) == 1 and "CLAUDE_CODE_ATTRIBUTION_HEADER" in warnings[0].message
    assert all(c.ok for c in checks)


def test_doctor_warns_about_a_shell_api_key_that_would_also_be_sent(tmp_path):
    config = config_from(tmp_path)
    home = tmp_path / ".claude"
    home.mkdir()
    (home / "settings.json").write_text(json.dumps({"env": {
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8787", "ANTHROPIC_AUTH_TOKEN": "x"}}))
    env = {"PATH": fake_claude(tmp_path), "ANTHROPIC_API_KEY": "sk-ant-shell"}
    checks = list(claude_doctor.collect_claude_checks(config, claude_home=home, env=env))
    [warning] = [c for c in checks if c.warning and c.name == "key"]
    assert "x-api-key" in warning.message and "sk-ant-shell" not in warning.message


def test_doctor_only_warns_for_a_claude_code_not_meant_for_the_proxy(tmp_path):
    config = config_from(tmp_path)
    home = tmp_path / ".claude"
    home.mkdir()
    (home / "settings.json").write_text('{"theme": "dark"}')
    checks = list(claude_doctor.collect_claude_checks(config, claude_home=None,
                                                      env={"PATH": fake_claude(tmp_path),
                                                           "CLAUDE_CONFIG_DIR": str(home)}))
    assert len(checks) == 1 and checks[0].warning and checks[0].ok
    assert "not set up to use the proxy" in checks[0].message and "claude setup" in checks[0].fix
