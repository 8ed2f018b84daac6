"""`deepseek-proxy gemini setup` and the Gemini part of doctor, on temp directories (no Gemini CLI needed)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from deepseek_proxy.config import ConfigError, load_config
from deepseek_proxy.gemini.doctor import check_gemini_settings, collect_gemini_checks
from deepseek_proxy.gemini.setup import (
    merged_env,
    parse_env,
    resolve_gemini_home,
    run_setup,
)

ENV = {"DEEPSEEK_API_KEY": "sk-x", "PATH": "/nonexistent"}


def config(text: str = "", tmp_path: Path | None = None):
    if not text:
        return load_config(os.devnull, env=ENV).reached_at("http://127.0.0.1:9000")
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path, env=ENV).reached_at("http://127.0.0.1:9000")


def setup(cfg, home: Path, *, dry_run=False, offline=False, env=None) -> tuple[int, str]:
    out = io.StringIO()
    code = run_setup(cfg, gemini_home=home, dry_run=dry_run, offline=offline, out=out, env=env or ENV)
    return code, out.getvalue()


def test_creates_both_files_and_a_second_run_changes_nothing(tmp_path):
    home = tmp_path / ".gemini"
    code, out = setup(config(), home)
    assert code == 0
    settings = json.loads((home / "settings.json").read_text())
    assert settings == {"security": {"auth": {"selectedType": "gemini-api-key"}}}
    assert parse_env((home / ".env").read_text()) == {"GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:9000",
                                                       "GEMINI_API_KEY": "no-key-needed"}
    code, out = setup(config(), home)
    assert code == 0 and "nothing to change" in out


def test_keeps_other_settings_and_env_lines_with_backups(tmp_path):
    home = tmp_path / ".gemini"
    home.mkdir()
    (home / "settings.json").write_text(json.dumps({"ui": {"theme": "Dracula"}, "security": {"auth": {
        "selectedType": "oauth-personal"}, "folderTrust": {"enabled": True}}}))
    (home / ".env").write_text("# mine\nOTHER=1\nGOOGLE_GEMINI_BASE_URL=https://old.example\n")
    code, _out = setup(config(), home, offline=True)
    assert code == 0
    settings = json.loads((home / "settings.json").read_text())
    assert settings["ui"] == {"theme": "Dracula"} and settings["security"]["folderTrust"] == {"enabled": True}
    assert settings["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert settings["telemetry"]["enabled"] is False and settings["general"]["enableAutoUpdate"] is False
    env_text = (home / ".env").read_text()
    assert env_text.startswith("# mine\nOTHER=1\nGOOGLE_GEMINI_BASE_URL=http://127.0.0.1:9000\n")
    assert len(list(home.glob("settings.json.bak-*"))) == 1 and len(list(home.glob(".env.bak-*"))) == 1


def test_dry_run_writes_nothing_and_hides_the_key(tmp_path):
    cfg = config('[server]\nclient_keys = ["sk-proxy-secret-1"]\n', tmp_path)
    home = tmp_path / ".gemini"
    code, out = setup(cfg, home, dry_run=True, env={**ENV, "DEEPSEEK_PROXY_KEY": "sk-proxy-secret-1"})
    assert code == 0 and not home.exists()
    assert "sk-proxy-secret-1" not in out and "<secret: 17 chars>" in out


def test_refuses_a_wrong_client_key_and_a_file_with_comments(tmp_path):
    cfg = config('[server]\nclient_keys = ["sk-proxy-secret-1"]\n', tmp_path)
    code, out = setup(cfg, tmp_path / "a", env={**ENV, "DEEPSEEK_PROXY_KEY": "wrong"})
    assert code == 1 and "not one of the proxy's client keys" in out and "wrong" not in out
    home = tmp_path / "b"
    home.mkdir()
    (home / "settings.json").write_text('{\n  // a comment\n  "ui": {}\n}\n')
    code, out = setup(config(), home)
    assert code == 1 and "Nothing was changed" in out
    assert (home / "settings.json").read_text().startswith("{\n  // a comment")


def test_env_merge_quotes_odd_values():
    assert merged_env("A=1", {"GEMINI_API_KEY": "has space"}) == 'A=1\nGEMINI_API_KEY="has space"\n'
    assert parse_env('GEMINI_API_KEY="has space"\nexport X=y # note\n') == {"GEMINI_API_KEY": "has space", "X": "y"}


def test_home_resolution():
    assert resolve_gemini_home(None, {"HOME": "/h"}) == Path("/h/.gemini")
    assert resolve_gemini_home(None, {"HOME": "/h", "GEMINI_CLI_HOME": "/g"}) == Path("/g/.gemini")


def test_doctor_after_setup_and_when_pointing_elsewhere(tmp_path):
    home = tmp_path / ".gemini"
    setup(config(), home)
    checks = list(check_gemini_settings(config(), home, ENV, setup="setup"))
    assert all(c.ok for c in checks), [c.message for c in checks]
    shell = list(check_gemini_settings(config(), home, {**ENV, "GOOGLE_GEMINI_BASE_URL": "http://elsewhere"},
                                       setup="setup"))
    bad = [c for c in shell if not c.ok]
    assert len(bad) == 1 and "the shell's" in bad[0].message and "export GOOGLE_GEMINI_BASE_URL=" in bad[0].fix


def test_doctor_is_one_warning_for_someone_without_gemini(tmp_path):
    checks = list(collect_gemini_checks(config(), gemini_home=None, env={"HOME": str(tmp_path), "PATH": "/none"}))
    assert len(checks) == 1 and checks[0].ok and checks[0].warning


def test_gemini_config_table(tmp_path):
    cfg = config('[gemini]\nthinking_repair = "always"\nmax_output_tokens = 0\n'
                 'models = [{pattern = "gemini-*", model = "deepseek-v4-flash", thinking = false}]\n', tmp_path)
    assert cfg.gemini.thinking_repair == "always" and cfg.gemini.max_output_tokens == 0
    assert cfg.gemini.model_patterns == (("gemini-*", "deepseek-v4-flash", False),)
    with pytest.raises(ConfigError, match="gemini.models\\[0\\].model"):
        config('[gemini]\nmodels = [{pattern = "gemini-*", model = "nope"}]\n', tmp_path)
    with pytest.raises(ConfigError, match="gemini.thinking_repair"):
        config('[gemini]\nthinking_repair = "sometimes"\n', tmp_path)
