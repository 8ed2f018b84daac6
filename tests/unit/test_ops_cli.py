"""`deepseek-proxy keys add|list|revoke` and `deepseek-proxy usage` on a SQLite store in a temporary directory,
through the real command-line entry point."""

from __future__ import annotations

import re
import time

import pytest

from deepseek_proxy.cli import main
from deepseek_proxy.config import load_config
from deepseek_proxy.ops.keys import REVOKED, Authenticator, key_hash
from deepseek_proxy.store import UsageRow, open_store


@pytest.fixture()
def config_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("DEEPSEEK_PROXY_STORE_URL", raising=False)
    path = tmp_path / "config.toml"
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path}/store.db"\n')
    return path


def run(config_path, *args: str) -> int:
    return main(["--config", str(config_path), *args])


def store_of(config_path):
    return open_store(load_config(config_path).store)


def test_keys_add_prints_the_key_once_and_keeps_its_hash(config_path, capsys):
    assert run(config_path, "keys", "add", "alice", "--models", "deepseek-v4-pro", "--budget-usd", "5",
               "--rpm", "30", "--concurrency", "2") == 0
    out = capsys.readouterr().out
    [key] = re.findall(r"dsp-[A-Za-z0-9_\-]{43}", out)
    record = store_of(config_path).get_client_key("alice")
    assert record.key_hash == key_hash(key)
    assert (record.models, record.budget_usd, record.rpm, record.concurrency) == (("deepseek-v4-pro",), 5.0, 30, 2)
    assert key.encode() not in (config_path.parent / "store.db").read_bytes()


def test_keys_add_refuses_a_taken_name_bad_names_models_and_limits(config_path, capsys):
    assert run(config_path, "keys", "add", "alice") == 0
    assert run(config_path, "keys", "add", "alice") == 1
    assert "revoke it first" in capsys.readouterr().err
    assert run(config_path, "keys", "add", "bad name") == 1
    assert run(config_path, "keys", "add", "bob", "--models", "gpt-9") == 1
    assert "gpt-9" in capsys.readouterr().err
    assert run(config_path, "keys", "add", "bob", "--rpm", "0") == 1
    assert "--rpm must be positive" in capsys.readouterr().err


def test_keys_list_shows_everything_but_the_key(config_path, capsys):
    run(config_path, "keys", "add", "alice", "--budget-usd", "2.5")
    key = re.findall(r"dsp-\S+", capsys.readouterr().out)[0]
    run(config_path, "keys", "add", "bob", "--rpm", "10")
    run(config_path, "keys", "revoke", "bob")
    capsys.readouterr()
    assert run(config_path, "keys", "list") == 0
    out = capsys.readouterr().out
    assert key not in out and key[:8] + "…" in out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "key", "created"]
    alice = next(line for line in lines if line.startswith("alice"))
    bob = next(line for line in lines if line.startswith("bob"))
    assert "active" in alice and "2.50" in alice and "0.0000" in alice
    assert "revoked" in bob and " 10 " in bob


def test_keys_revoke_refuses_the_key_at_once_for_a_fresh_reader(config_path, capsys):
    run(config_path, "keys", "add", "alice")
    key = re.findall(r"dsp-\S+", capsys.readouterr().out)[0]
    assert run(config_path, "keys", "revoke", "alice") == 0
    assert "revoked" in capsys.readouterr().out
    assert Authenticator((), store_of(config_path)).authenticate(key) is REVOKED
    assert run(config_path, "keys", "revoke", "alice") == 1
    assert "already revoked" in capsys.readouterr().err
    assert run(config_path, "keys", "revoke", "nobody") == 1
    assert "no key is named 'nobody'" in capsys.readouterr().err


def test_usage_prints_a_table_by_key_and_by_model(config_path, capsys):
    store = store_of(config_path)
    now = time.time()
    store.add_usage(UsageRow(at=now - 60, key_name="alice", model="deepseek-v4-pro", upstream="deepseek", status=200,
                             input_tokens=1000, cached_tokens=900, output_tokens=50, cost_usd=0.01))
    store.add_usage(UsageRow(at=now - 30, key_name="bob", model="deepseek-v4-flash", upstream="deepseek", status=200,
                             input_tokens=10, cached_tokens=0, output_tokens=5, cost_usd=0.002))
    store.add_usage(UsageRow(at=now - 10 * 86400, key_name="old", model="m", upstream="u", status=200))
    assert run(config_path, "usage") == 0
    out = capsys.readouterr().out
    assert "3 request(s)" in out and "old" in out
    assert run(config_path, "usage", "--since", "1h") == 0
    out = capsys.readouterr().out
    assert "2 request(s)" in out and "old" not in out
    alice = next(line for line in out.splitlines() if line.startswith("alice"))
    assert "90.0%" in alice and "0.0100" in alice
    assert "2026-11-15" in out and "api-docs.deepseek.com" in out
    assert run(config_path, "usage", "--by", "model", "--since", "1h") == 0
    assert "deepseek-v4-flash" in capsys.readouterr().out
    assert run(config_path, "usage", "--since", "yesterday") == 1


def test_usage_by_conversation_and_door_with_what_the_cache_saved_and_as_json(config_path, capsys):
    import json

    store = store_of(config_path)
    now = time.time()
    codex, claude = "responses:019ad1f4-31c2-7b4e-9a10-5c2f0e8d7a31", "messages:0b7c5e0e-7c1f-4c55-9d1e-3f5b8e2a9c41"
    for at, conversation, door, cached in ((now - 90, codex, "responses", 0), (now - 60, codex, "responses", 1920),
                                           (now - 30, claude, "messages", 3968)):
        store.add_usage(UsageRow(at=at, key_name="alice", model="deepseek-v4-pro", upstream="deepseek", status=200,
                                 input_tokens=4000, cached_tokens=cached, output_tokens=10, cost_usd=0.001,
                                 saved_usd=cached / 1e6, door=door, conversation=conversation))
    store.add_usage(UsageRow(at=now - 20, key_name="alice", model="qwen-local", upstream="local", status=200,
                             input_tokens=10, output_tokens=1))
    assert run(config_path, "usage", "--by", "conversation") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].split()[:1] == ["conversation"] and "miss" in lines[1] and "cache hit" in lines[1]
    codex_line = next(line for line in lines if line.startswith("responses:019ad1f4-31c2-7…"))
    assert codex not in out and codex_line.split()[1:7] == ["2", "0", "8,000", "1,920", "6,080", "24.0%"]
    claude_line = next(line for line in lines if line.startswith("messages:0b7c5e0e"))
    assert "99.2%" in claude_line
    assert next(line for line in lines if line.startswith("(none)")).split()[1] == "1"
    saved = (1920 + 3968) / 1e6
    assert f"5,888 of 12,010 input tokens hit (49.0%), saving {saved:.4f} USD" in out
    assert "estimated" not in out  # the row without a recorded saving had no cache hits
    assert "no price for qwen-local" in out
    assert run(config_path, "usage", "--by", "door") == 0
    assert next(line for line in capsys.readouterr().out.splitlines() if line.startswith("messages")).split()[1] == "1"
    assert run(config_path, "usage", "--by", "conversation", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    groups = {group["group"]: group for group in report["groups"]}
    assert list(groups) == [codex, claude, "(none)"]  # whole keys, in the order the conversations started
    assert groups[codex]["cache_hit_ratio"] == 0.24 and groups[codex]["miss_tokens"] == 6080
    assert report["total"]["saved_usd"] == pytest.approx(saved)


def test_config_shows_the_team_settings_without_keys(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("POOL_A", "sk-secretvalue0001")
    path = tmp_path / "team.toml"
    path.write_text('[limits]\nkey_rpm = 30\nconcurrency = 100\n[logs]\ncapture_bodies = true\n'
                    '[cache]\nprefix_memory = "process"\n'
                    '[upstreams.deepseek]\napi_keys = ["env:POOL_A", "pass:deepseek/b"]\nkey_strategy = "least_busy"\n'
                    '[pricing.models."deepseek-v4-pro"]\ncache_hit = 0.1\ncache_miss = 1\noutput = 2\n')
    assert main(["--config", str(path), "config"]) == 0
    out = capsys.readouterr().out
    assert "limits: rpm none, concurrency 100, per key rpm 30, concurrency none; queue 2000 ms" in out
    assert "body capture: on" in out and "the config's for deepseek-v4-pro" in out
    assert "prefix breaks: detected (memory: process)" in out
    assert "upstream deepseek: 2 keys (least_busy): env:POOL_A, pass:deepseek/b" in out
    assert "sk-secretvalue0001" not in out


@pytest.mark.parametrize(("text", "problem"), [
    ('[limits]\nrpm = -1\n', "`limits.rpm` must be 0 (no limit) or more"),
    ('[upstreams.deepseek]\napi_keys = ["sk-' + '0123456789abcdef0123"]\n',  # split: not a real key
     "`upstreams.deepseek.api_keys[0]` must be"),
    ('[upstreams.deepseek]\napi_keys = ["client"]\n', "`upstreams.deepseek.api_keys[0]` must be"),
    ('[upstreams.deepseek]\nkey_strategy = "random"\n', "`upstreams.deepseek.key_strategy`"),
    ('[pricing.models.m]\ncache_hit = 1\n', "`pricing.models.m.cache_miss` is required"),
    ('[pricing]\npeak_hours_utc = [[4, 1]]\n', "`pricing.peak_hours_utc`"),
    ('[usage]\nretention_days = 0\n', "`usage.retention_days`"),
])
def test_team_settings_are_checked_at_start(tmp_path, capsys, text, problem):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert main(["--config", str(path), "config"]) == 2
    err = capsys.readouterr().err
    assert problem in err, err
    assert "0123456789abcdef" not in err
