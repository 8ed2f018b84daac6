"""`deepseek-proxy codex setup`: merging into the user's Codex config without losing anything of theirs.

CODEX_HOMEs live under tests/e2e/.work (never /tmp, see tests/e2e/codex_cli.py); run_setup uses the pinned Codex.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

from deepseek_proxy.codex import config_toml as ct
from deepseek_proxy.config import load_config
from tests.e2e.codex_cli import codex_binary

# They run the pinned Codex binary (npm ci --prefix tests/e2e): end-to-end, not unit tests.
pytestmark = pytest.mark.e2e

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROVIDER = "[model_providers.deepseek-proxy]"




def env_for(work: Path, *, with_codex: bool = True) -> dict[str, str]:
    path = f"{codex_binary().parent}{os.pathsep}/usr/bin:/bin" if with_codex else "/usr/bin:/bin"
    return {"PATH": path, "HOME": str(work), "XDG_STATE_HOME": str(work / "state"), "DEEPSEEK_PROXY_SECRET": "t"}


def config_from(work: Path, text: str = "", *, port: int = 8787):
    path = work / "proxy.toml"
    path.write_text(text)
    return load_config(path, env=env_for(work), overrides={"port": port})


def setup(work: Path, config=None, *, dry_run: bool = False, env=None) -> tuple[int, str]:
    out = io.StringIO()
    code = ct.run_setup(config or config_from(work), codex_home=work / "codex-home", dry_run=dry_run, out=out,
                        env=env or env_for(work))
    return code, out.getvalue()


def home_file(work: Path, name: str) -> Path:
    return work / "codex-home" / name


def read_toml(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every path under root with its bytes and mtime: to prove nothing was touched."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def backups(work: Path) -> list[Path]:
    return sorted((work / "codex-home").glob("*.bak-*"))


# --------------------------------------------------------------------------------------------- fresh install

def test_fresh_codex_home_gets_provider_profiles_and_nothing_else(work):
    code, out = setup(work)
    assert code == 0, out
    main = read_toml(home_file(work, "config.toml"))
    assert set(main) == {"model_providers"}  # the user's default model/provider are not touched
    provider = main["model_providers"]["deepseek-proxy"]
    assert provider["name"] == "DeepSeek proxy" and provider["name"].lower() != "openai"
    assert provider["base_url"] == "http://127.0.0.1:8787/v1"
    assert provider["wire_api"] == "responses"
    assert provider["model_catalog_url"] == "http://127.0.0.1:8787/v1/codex/models.json"
    assert "env_key" not in provider  # the default proxy needs no key ...
    assert provider["experimental_bearer_token"] == ct.NO_KEY_TOKEN  # ... but Codex fetches the URL only with one
    for model in ("deepseek-v4-pro", "deepseek-v4-flash"):
        profile = read_toml(home_file(work, f"{model}.config.toml"))
        assert profile == {"model": model, "model_provider": "deepseek-proxy"}
    assert backups(work) == []
    assert "codex -p deepseek-v4-pro" in out


def test_file_catalog_mode_writes_the_catalog_and_points_profiles_at_it(work):
    code, out = setup(work, config_from(work, '[codex]\ncatalog = "file"\n'))
    assert code == 0, out
    catalog_path = home_file(work, "deepseek-proxy/model_catalog.json")
    assert catalog_path.is_file()
    profile = read_toml(home_file(work, "deepseek-v4-pro.config.toml"))
    assert profile["model_catalog_json"] == str(catalog_path)
    provider = read_toml(home_file(work, "config.toml"))["model_providers"]["deepseek-proxy"]
    assert "model_catalog_url" not in provider and "experimental_bearer_token" not in provider


@pytest.mark.parametrize("proxy_toml, env_key", [
    ('[server]\nclient_keys = ["k1"]\n', "DEEPSEEK_PROXY_KEY"),
    ('[upstreams.deepseek]\napi_key = "client"\n', "DEEPSEEK_API_KEY"),
    ('[server]\nclient_keys = ["k1"]\n[upstreams.deepseek]\napi_key = "client"\n', "DEEPSEEK_API_KEY"),
])
def test_env_key_is_the_key_the_proxy_expects(work, proxy_toml, env_key):
    code, out = setup(work, config_from(work, proxy_toml))
    assert code == 0, out
    provider = read_toml(home_file(work, "config.toml"))["model_providers"]["deepseek-proxy"]
    assert provider["env_key"] == env_key
    assert env_key in provider["env_key_instructions"]
    assert "experimental_bearer_token" not in provider
    assert f"export {env_key}=" in out  # not set in the setup environment: the next steps say so


# ------------------------------------------------------------------------------------- awkward existing files

AWKWARD = """# My Codex config. Every line of this must survive.
model = "gpt-5.5"            # my default model
model_reasoning_effort = "medium"

# a provider of mine
[model_providers.mine]
name = "Mine"
base_url = "https://example.invalid/v1"   # keep this comment
env_key = "MINE_KEY"

[model_providers.deepseek-proxy]
name = "OpenAI"              # wrong: makes Codex call /responses/compact
base_url = "http://old.invalid/v1"
wire_api = "chat"            # wrong: Codex refuses to start
request_max_retries = 7      # mine, keep it

[profiles.deepseek-v4-pro]   # legacy profile table with our name
model = "something-else"
model_reasoning_effort = "low"

[profiles.deepseek-v4-pro.tools]
web_search = false

[profiles.keep-me]
model = "gpt-5.5"

[mcp_servers.docs]
command = "docs-server"
args = ["--port", "1"]
"""


def test_merge_keeps_everything_of_the_user(work):
    home_file(work, "config.toml").write_text(AWKWARD)
    before = tomllib.loads(AWKWARD)
    code, out = setup(work)
    assert code == 0, out
    text = home_file(work, "config.toml").read_text()
    after = tomllib.loads(text)

    # Comments survive, including those on lines we rewrote.
    for comment in ("# My Codex config", "# my default model", "# a provider of mine", "# keep this comment",
                    "# mine, keep it"):
        assert comment in text
    # Everything outside our provider table and the moved legacy profile is unchanged.
    for key in ("model", "model_reasoning_effort", "mcp_servers"):
        assert after[key] == before[key]
    assert after["model_providers"]["mine"] == before["model_providers"]["mine"]
    assert after["profiles"] == {"keep-me": {"model": "gpt-5.5"}}
    # Our provider: fixed, with the user's own extra key kept.
    ours = after["model_providers"]["deepseek-proxy"]
    assert ours["wire_api"] == "responses" and ours["name"] == "DeepSeek proxy"
    assert ours["base_url"] == "http://127.0.0.1:8787/v1"
    assert ours["request_max_retries"] == 7
    assert 'wire_api "chat"' in out and 'renamed provider "OpenAI"' in out


def test_legacy_profile_of_the_same_name_moves_into_the_profile_file(work):
    home_file(work, "config.toml").write_text(AWKWARD)
    code, out = setup(work)
    assert code == 0, out
    profile = read_toml(home_file(work, "deepseek-v4-pro.config.toml"))
    assert profile == {
        "model": "deepseek-v4-pro",  # ours wins, and the output says so
        "model_provider": "deepseek-proxy",
        "model_reasoning_effort": "low",
        "tools": {"web_search": False},
    }
    assert "moved [profiles.deepseek-v4-pro]" in out and "'something-else' is replaced" in out
    # the original is in the backup
    [backup] = backups(work)
    assert backup.read_text() == AWKWARD


def test_existing_profile_file_keeps_the_users_settings(work):
    home_file(work, "deepseek-v4-pro.config.toml").write_text(
        '# my tweaks\nmodel_reasoning_effort = "max"  # always max\nmodel = "old"\n\n[sandbox_workspace_write]\n'
        'network_access = true\n')
    code, out = setup(work)
    assert code == 0, out
    text = home_file(work, "deepseek-v4-pro.config.toml").read_text()
    assert "# my tweaks" in text and "# always max" in text
    assert read_toml(home_file(work, "deepseek-v4-pro.config.toml")) == {
        "model_reasoning_effort": "max", "model": "deepseek-v4-pro", "model_provider": "deepseek-proxy",
        "sandbox_workspace_write": {"network_access": True}}
    assert [b.name.split(".bak-")[0] for b in backups(work)] == ["deepseek-v4-pro.config.toml"]


def test_chat_wire_api_in_another_provider_is_reported_not_changed(work):
    original = '[model_providers.legacy]\nbase_url = "http://127.0.0.1:9/v1"\nwire_api = "chat"\n'
    home_file(work, "config.toml").write_text(original)
    code, out = setup(work)
    assert code == 0, out
    assert read_toml(home_file(work, "config.toml"))["model_providers"]["legacy"]["wire_api"] == "chat"
    assert 'warning: [model_providers.legacy] has wire_api = "chat"' in out


def test_top_level_profile_line_is_reported(work):
    home_file(work, "config.toml").write_text('profile = "old"\n')
    code, out = setup(work)
    assert code == 0
    assert 'top-level `profile = "old"`' in out
    assert read_toml(home_file(work, "config.toml"))["profile"] == "old"


def test_switching_catalog_mode_removes_the_other_modes_keys(work):
    assert setup(work, config_from(work, '[codex]\ncatalog = "file"\n'))[0] == 0
    assert setup(work, config_from(work, '[codex]\ncatalog = "url"\n'))[0] == 0
    assert "model_catalog_json" not in read_toml(home_file(work, "deepseek-v4-pro.config.toml"))
    assert "model_catalog_url" in read_toml(home_file(work, "config.toml"))["model_providers"]["deepseek-proxy"]
    assert setup(work, config_from(work, '[codex]\ncatalog = "file"\n'))[0] == 0
    assert "model_catalog_url" not in read_toml(home_file(work, "config.toml"))["model_providers"]["deepseek-proxy"]


def test_port_change_updates_base_url(work):
    assert setup(work, config_from(work, port=8787))[0] == 0
    assert setup(work, config_from(work, port=9999))[0] == 0
    provider = read_toml(home_file(work, "config.toml"))["model_providers"]["deepseek-proxy"]
    assert provider["base_url"] == "http://127.0.0.1:9999/v1"


# ------------------------------------------------------------------------------- refusing instead of damaging

@pytest.mark.parametrize("name, content, says", [
    ("broken TOML", b'model = "gpt-5.5"\n[model_providers.x\nbase_url = 1\n', "is not valid TOML"),
    ("invalid UTF-8", b'model = "\xff\xfe"\n', "is not UTF-8"),
    ("duplicate key", b'model = "a"\nmodel = "b"\n', "is not valid TOML"),
])
def test_unreadable_config_is_refused_and_left_alone(work, name, content, says):
    home_file(work, "config.toml").write_bytes(content)
    before = snapshot(work / "codex-home")
    code, out = setup(work)
    assert code == 1
    assert says in out and "Nothing was changed" in out
    assert snapshot(work / "codex-home") == before


def test_directory_in_place_of_config_is_refused(work):
    # Tests run as root, so chmod 000 would not stop us reading; a directory really cannot be read as a file.
    home_file(work, "config.toml").mkdir()
    before = snapshot(work / "codex-home")
    code, out = setup(work)
    assert code == 1 and "is a directory" in out
    assert snapshot(work / "codex-home") == before


def test_unreadable_profile_file_stops_everything_before_any_write(work):
    home_file(work, "config.toml").write_text(AWKWARD)
    home_file(work, "deepseek-v4-flash.config.toml").write_bytes(b"\xff\xff")
    before = snapshot(work / "codex-home")
    code, out = setup(work)
    assert code == 1 and "deepseek-v4-flash.config.toml is not UTF-8" in out
    assert snapshot(work / "codex-home") == before  # config.toml was not half-updated either


@pytest.mark.parametrize("layout", [
    'model_providers = { mine = { base_url = "http://x.invalid/v1" } }\n',  # closed inline table
])
def test_layout_we_cannot_merge_is_refused_with_the_block_to_paste(work, layout):
    home_file(work, "config.toml").write_text(layout)
    before = snapshot(work / "codex-home")
    code, out = setup(work)
    assert code == 1
    assert "cannot merge into safely" in out and PROVIDER in out  # the block to add by hand
    assert snapshot(work / "codex-home") == before


@pytest.mark.parametrize("layout", [
    'model_providers.mine.base_url = "http://x.invalid/v1"\nmodel_providers.mine.wire_api = "responses"\n',
    'model_providers.deepseek-proxy.base_url = "http://old.invalid/v1"\n'
    'model_providers.deepseek-proxy.wire_api = "chat"\n[other]\na = 1\n',
    '[model_providers]\nmine = { base_url = "http://x.invalid/v1" }\n',
])
def test_dotted_and_inline_layouts_merge_correctly(work, layout):
    home_file(work, "config.toml").write_text(layout)
    before = tomllib.loads(layout)
    code, out = setup(work)
    assert code == 0, out
    after = read_toml(home_file(work, "config.toml"))
    for pid, provider in before["model_providers"].items():
        if pid != "deepseek-proxy":
            assert after["model_providers"][pid] == provider
    assert after.get("other") == before.get("other")
    ours = after["model_providers"]["deepseek-proxy"]
    assert ours["wire_api"] == "responses" and ours["base_url"] == "http://127.0.0.1:8787/v1"


def test_missing_codex_is_refused_with_the_install_command(work):
    code, out = setup(work, env=env_for(work, with_codex=False))
    assert code == 1
    assert "npm install -g @openai/codex" in out
    assert not home_file(work, "config.toml").exists()


# --------------------------------------------------------------------------- idempotency, backups, dry run

def test_second_run_changes_nothing(work):
    home_file(work, "config.toml").write_text(AWKWARD)
    assert setup(work, config_from(work, '[codex]\ncatalog = "file"\n'))[0] == 0
    first = snapshot(work / "codex-home")
    code, out = setup(work, config_from(work, '[codex]\ncatalog = "file"\n'))
    assert code == 0
    assert snapshot(work / "codex-home") == first
    assert out.count("unchanged") == 4  # config.toml, two profiles, the catalog


def test_backup_holds_the_exact_previous_bytes(work):
    original = "# mine\nmodel = 'gpt-5.5'\n\n\n"
    home_file(work, "config.toml").write_text(original)
    assert setup(work)[0] == 0
    [backup] = backups(work)
    assert backup.read_text() == original
    assert backup.name.startswith("config.toml.bak-")
    # a later change makes another backup, never overwriting the first
    assert setup(work, config_from(work, port=9000))[0] == 0
    assert len(backups(work)) == 2 and backup.read_text() == original


def test_dry_run_shows_a_diff_and_touches_nothing(work):
    home_file(work, "config.toml").write_text(AWKWARD)
    config = config_from(work)
    before = snapshot(work)
    code, out = setup(work, config, dry_run=True)
    assert code == 0
    assert snapshot(work) == before  # no config, no backup, no state snapshot, no Codex helper files
    assert "--- a/config.toml" in out and "+++ b/config.toml" in out
    assert '-wire_api = "chat"' in out and '+wire_api = "responses"' in out
    assert "+++ b/deepseek-v4-pro.config.toml" in out
    assert "(dry run: nothing was written)" in out


def test_dry_run_on_fresh_home_describes_the_catalog_file(work):
    config = config_from(work, '[codex]\ncatalog = "file"\n')
    before = snapshot(work)
    code, out = setup(work, config, dry_run=True)
    assert code == 0 and snapshot(work) == before
    assert "would create: deepseek-proxy/model_catalog.json" in out and "template gpt-5.5" in out


# ------------------------------------------------------------------------------------------ small pure parts

def test_profile_names_are_safe_file_names():
    assert ct.profile_name("deepseek-v4-pro") == "deepseek-v4-pro"
    assert ct.profile_name("org/model:latest") == "org-model-latest"


def test_codex_home_resolution(work):
    assert ct.resolve_codex_home(None, {"CODEX_HOME": "/x/y", "HOME": "/h"}) == Path("/x/y")
    assert ct.resolve_codex_home(None, {"HOME": "/h"}) == Path("/h/.codex")
    assert ct.resolve_codex_home(work, {"CODEX_HOME": "/x"}) == work


def test_relative_codex_home_gives_absolute_catalog_path(work, monkeypatch):
    monkeypatch.chdir(work)
    config = config_from(work, '[codex]\ncatalog = "file"\n')
    out = io.StringIO()
    assert ct.run_setup(config, codex_home=Path("codex-home"), dry_run=False, out=out, env=env_for(work)) == 0
    profile = read_toml(home_file(work, "deepseek-v4-pro.config.toml"))
    assert profile["model_catalog_json"] == str(work / "codex-home" / "deepseek-proxy" / "model_catalog.json")


def test_setup_for_a_proxy_elsewhere_points_codex_at_its_url(work):
    """`codex setup --proxy-url https://host/deepseek` (a proxy behind nginx): provider and catalog URL follow it,
    and the next steps say how to check it rather than to start a proxy here."""
    config = config_from(work).reached_at("https://proxy.example/deepseek/")
    code, out = setup(work, config)
    assert code == 0, out
    provider = read_toml(home_file(work, "config.toml"))["model_providers"]["deepseek-proxy"]
    assert provider["base_url"] == "https://proxy.example/deepseek/v1"
    assert provider["model_catalog_url"] == "https://proxy.example/deepseek/v1/codex/models.json"
    assert "deepseek-proxy doctor --proxy-url https://proxy.example/deepseek/v1" in out
    assert "deepseek-proxy serve" not in out


# --------------------------------------------------------------------------------------------- --websockets

def test_websockets_option_sets_the_provider_flag_and_running_again_without_it_removes_it(work):
    code, out = ct.run_setup(config_from(work), codex_home=work / "codex-home", dry_run=False, out=io.StringIO(),
                             env=env_for(work), websockets=True), None
    assert code == 0
    provider = read_toml(home_file(work, "config.toml"))["model_providers"]["deepseek-proxy"]
    assert provider["supports_websockets"] is True
    assert provider["wire_api"] == "responses"  # the HTTP transport stays Codex's fallback
    code, out = setup(work)
    assert code == 0, out
    provider = read_toml(home_file(work, "config.toml"))["model_providers"]["deepseek-proxy"]
    assert "supports_websockets" not in provider
