"""Configuration: defaults < TOML file < environment < CLI flags; key sources; errors that name key and file.

Every test passes its own `env` (HOME and XDG_* inside tmp_path): the real home is never read or written.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from deepseek_proxy.config import (
    DEFAULT_BASE_URL,
    DEFAULT_EFFORT_MAP,
    DEFAULT_HOST,
    DEFAULT_PORT,
    ConfigError,
    default_config_path,
    load_config,
)
from deepseek_proxy.core.errors import ErrorKind
from deepseek_proxy.upstream.client import KeyUnavailable, UpstreamClient, UpstreamError, resolve_key


@pytest.fixture()
def env(tmp_path) -> dict[str, str]:
    return {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
        "XDG_STATE_HOME": str(tmp_path / "xdg-state"),
        "DEEPSEEK_API_KEY": "sk-from-env",
    }


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- defaults ---------------------------------------------------------------------------------------------------


def test_defaults_with_only_the_api_key(env, tmp_path):
    config = load_config(env=env)
    assert config.path is None  # no file needed
    assert (config.server.host, config.server.port) == (DEFAULT_HOST, DEFAULT_PORT) == ("127.0.0.1", 8787)
    assert config.server.max_body_bytes >= 32 * 1024 * 1024
    assert list(config.upstreams) == ["deepseek"]
    upstream = config.upstreams["deepseek"]
    assert upstream.base_url == DEFAULT_BASE_URL == "https://api.deepseek.com"
    assert upstream.profile == "deepseek"
    assert resolve_key(upstream.api_key, env) == "sk-from-env"
    assert set(config.models) == {"deepseek-v4-pro", "deepseek-v4-flash"}
    for model_id, model in config.models.items():
        assert model.upstream == "deepseek" and model.upstream_model == model_id
        assert model.thinking and model.stream and not model.images
        assert dict(model.effort_map) == DEFAULT_EFFORT_MAP
    assert config.public_base_url() == "http://127.0.0.1:8787/v1"


def test_default_file_location_follows_xdg_then_home(env, tmp_path):
    assert default_config_path(env) == tmp_path / "xdg-config" / "deepseek-proxy" / "config.toml"
    no_xdg = {k: v for k, v in env.items() if k != "XDG_CONFIG_HOME"}
    assert default_config_path(no_xdg) == tmp_path / "home" / ".config" / "deepseek-proxy" / "config.toml"


def test_default_file_is_read_when_present(env, tmp_path):
    path = tmp_path / "xdg-config" / "deepseek-proxy" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text("[server]\nport = 9001\n")
    config = load_config(env=env)
    assert config.server.port == 9001
    assert config.path == path


def test_config_path_from_environment(env, tmp_path):
    path = write(tmp_path, "[server]\nport = 9002\n", "elsewhere.toml")
    assert load_config(env={**env, "DEEPSEEK_PROXY_CONFIG": str(path)}).server.port == 9002


def test_explicit_missing_file_is_an_error(env, tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="nope.toml"):
        load_config(missing, env=env)


def test_deepseek_base_url_env_overrides_the_default_upstream(env):
    config = load_config(env={**env, "DEEPSEEK_BASE_URL": "http://127.0.0.1:9999/v1"})
    assert config.upstreams["deepseek"].base_url == "http://127.0.0.1:9999/v1"
    assert config.upstreams["deepseek"].profile == "deepseek"  # the rest is unchanged


# ---- precedence ---------------------------------------------------------------------------------------------------


def test_file_then_env_then_cli(env, tmp_path):
    path = write(tmp_path, '[server]\nhost = "10.0.0.1"\nport = 9100\nworkers = 2\nlog_level = "warning"\n')
    from_file = load_config(path, env=env)
    assert (from_file.server.host, from_file.server.port, from_file.server.workers, from_file.server.log_level) == (
        "10.0.0.1", 9100, 2, "warning")

    env2 = {**env, "DEEPSEEK_PROXY_HOST": "10.0.0.2", "DEEPSEEK_PROXY_PORT": "9200", "DEEPSEEK_PROXY_WORKERS": "3",
            "DEEPSEEK_PROXY_LOG_LEVEL": "error"}
    from_env = load_config(path, env=env2)
    assert (from_env.server.host, from_env.server.port, from_env.server.workers, from_env.server.log_level) == (
        "10.0.0.2", 9200, 3, "error")

    cli = {"host": "10.0.0.3", "port": 9300, "workers": 4, "log_level": "debug"}
    from_cli = load_config(path, env=env2, overrides=cli)
    assert (from_cli.server.host, from_cli.server.port, from_cli.server.workers, from_cli.server.log_level) == (
        "10.0.0.3", 9300, 4, "debug")


def test_cli_flags_left_unset_do_not_override(env, tmp_path):
    path = write(tmp_path, "[server]\nport = 9100\n")
    config = load_config(path, env=env, overrides={"host": None, "port": None, "workers": None, "log_level": None})
    assert config.server.port == 9100 and config.server.host == "127.0.0.1"


def test_cli_port_zero_is_a_real_value(env, tmp_path):
    path = write(tmp_path, "[server]\nport = 9100\n")
    assert load_config(path, env=env, overrides={"port": 0}).server.port == 0


# ---- a custom OpenAI-compatible upstream -------------------------------------------------------------------------

CUSTOM = """
[upstreams.local]
base_url = "http://127.0.0.1:8000/v1"
api_key = "env:LOCAL_KEY"
read_timeout = 60

[models.coder]
upstream = "local"
upstream_model = "Qwen/Qwen3-Coder-480B"
thinking = false
images = true
stream = false
max_output_tokens = 8192
display_name = "Local coder"

[models.deepseek-v4-pro]
effort_map = { medium = "max" }
"""


def test_custom_upstream_with_model_aliases_and_options(env, tmp_path):
    config = load_config(write(tmp_path, CUSTOM), env=env)
    local = config.upstreams["local"]
    assert local.base_url == "http://127.0.0.1:8000/v1"
    assert local.profile == "openai"  # a new upstream is a plain OpenAI-compatible one unless said otherwise
    assert local.api_key == "env:LOCAL_KEY"
    assert local.read_timeout == 60.0
    assert "deepseek" in config.upstreams  # the built-in one is still there

    assert set(config.models) == {"coder", "deepseek-v4-pro"}  # configured models replace the default list
    coder = config.models["coder"]
    assert (coder.upstream, coder.upstream_model) == ("local", "Qwen/Qwen3-Coder-480B")
    assert (coder.thinking, coder.images, coder.stream, coder.max_output_tokens) == (False, True, False, 8192)
    assert coder.display_name == "Local coder"

    pro = config.models["deepseek-v4-pro"]
    assert pro.upstream_model == "deepseek-v4-pro" and pro.thinking  # built-in defaults kept
    assert pro.effort_map["medium"] == "max" and pro.effort_map["none"] == "disabled"  # merged over the default map


def test_model_without_upstream_model_uses_its_own_name(env, tmp_path):
    config = load_config(write(tmp_path, '[models.deepseek-chat]\n'), env=env)
    assert config.models["deepseek-chat"].upstream_model == "deepseek-chat"
    assert config.models["deepseek-chat"].upstream == "deepseek"


# ---- key sources ---------------------------------------------------------------------------------------------------


def test_env_key_source(env):
    assert resolve_key("env:DEEPSEEK_API_KEY", env) == "sk-from-env"
    assert resolve_key("env:DEEPSEEK_API_KEY", {"DEEPSEEK_API_KEY": "  padded \n"}) == "padded"
    with pytest.raises(KeyUnavailable, match="OTHER"):
        resolve_key("env:OTHER", env)


@pytest.fixture()
def fake_pass(tmp_path, monkeypatch):
    """A `pass` executable on PATH that knows one entry and logs its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "pass.log"
    script = bin_dir / "pass"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{log}"\n'
        'if [ "$1" = show ] && [ "$2" = api/deepseek ]; then\n'
        "  printf 'sk-from-pass\\nlogin: me\\n'\n"
        "  exit 0\n"
        "fi\n"
        'echo "Error: $2 is not in the password store." >&2\n'
        "exit 1\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return log


def test_pass_key_source_takes_the_first_line(fake_pass, env):
    assert resolve_key("pass:api/deepseek", env) == "sk-from-pass"
    assert fake_pass.read_text().split("\n")[0] == "show api/deepseek"


def test_pass_key_source_missing_entry(fake_pass, env):
    with pytest.raises(KeyUnavailable, match="missing/entry"):
        resolve_key("pass:missing/entry", env)


def test_pass_key_source_without_pass_installed(tmp_path, monkeypatch, env):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(KeyUnavailable, match="could not run"):
        resolve_key("pass:api/deepseek", env)


def test_upstream_client_uses_the_pass_key(fake_pass, env, tmp_path):
    path = write(tmp_path, '[upstreams.deepseek]\napi_key = "pass:api/deepseek"\n')
    config = load_config(path, env=env)
    client = UpstreamClient(config.upstreams["deepseek"], env=env)
    assert client._headers(client_key="sk-client-ignored") == {"Authorization": "Bearer sk-from-pass"}


def test_client_key_source_passes_the_callers_key(env, tmp_path):
    path = write(tmp_path, '[upstreams.deepseek]\napi_key = "client"\n')
    config = load_config(path, env=env)
    assert resolve_key("client", env) is None
    client = UpstreamClient(config.upstreams["deepseek"], env=env)
    assert client.passes_client_key
    assert client._headers(client_key="sk-callers") == {"Authorization": "Bearer sk-callers"}


def test_none_key_source_sends_no_authorization(env, tmp_path):
    config = load_config(write(tmp_path, '[upstreams.local]\nbase_url = "http://127.0.0.1:1/v1"\n'), env=env)
    assert config.upstreams["local"].api_key == "none"  # the default for a custom upstream
    assert resolve_key("none", env) is None
    client = UpstreamClient(config.upstreams["local"], env=env)
    assert client._headers(client_key="sk-callers") == {}


def test_missing_env_key_fails_the_request_not_the_start(env):
    config = load_config(env={k: v for k, v in env.items() if k != "DEEPSEEK_API_KEY"})
    client = UpstreamClient(config.upstreams["deepseek"], env={})
    assert "DEEPSEEK_API_KEY" in client.key_error
    with pytest.raises(UpstreamError) as caught:
        client._headers(client_key=None)
    error = caught.value
    # The client is told it is the proxy's own missing key (401, a code of its own, the fix), not its fault.
    assert (error.status, error.kind, error.upstream_code) == (401, ErrorKind.PROXY_KEY_MISSING, "upstream_key_missing")
    assert "deepseek-proxy itself has no API key" in error.message
    assert "export DEEPSEEK_API_KEY=" in error.message and "restart" in error.message


# ---- invalid configuration -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, key",
    [
        ("[server]\nprot = 8080\n", "server.prot"),  # unknown key
        ("[srever]\nport = 8080\n", "srever"),
        ("[upstreams.deepseek]\ntimeout = 3\n", "upstreams.deepseek.timeout"),
        ("[models.m]\nimage = true\n", "models.m.image"),
        ('[server]\nport = "8080"\n', "server.port"),  # wrong types
        ("[server]\nport = true\n", "server.port"),
        ("[models.m]\nthinking = \"yes\"\n", "models.m.thinking"),
        ("[models.m]\nmax_output_tokens = 1.5\n", "models.m.max_output_tokens"),
        ('[models.m]\neffort_map = { high = ["max"] }\n', "models.m.effort_map.high"),
        ('[models.m]\neffort_map = { high = "extreme" }\n', "models.m.effort_map.high"),
        ("server = 5\n", "server"),
        ("[server]\nport = 70000\n", "server.port"),  # bad port
        ("[server]\nport = -1\n", "server.port"),
        ("[server]\nworkers = 0\n", "server.workers"),
        ('[server]\nlog_level = "loud"\n', "server.log_level"),
        ('[upstreams.deepseek]\nbase_url = "api.deepseek.com"\n', "upstreams.deepseek.base_url"),  # bad base_url
        ('[upstreams.x]\nbase_url = "ftp://host"\n', "upstreams.x.base_url"),
        ("[upstreams.x]\nprofile = \"openai\"\n", "upstreams.x.base_url"),  # required
        ('[upstreams.deepseek]\nprofile = "anthropic"\n', "upstreams.deepseek.profile"),
        ('[upstreams.deepseek]\napi_key = "sk-literal-key"\n', "upstreams.deepseek.api_key"),
        ('[upstreams.deepseek]\napi_key = "env:"\n', "upstreams.deepseek.api_key"),
        ('[models.m]\nupstream = "nowhere"\n', "models.m.upstream"),  # model naming an unknown upstream
        ('[codex]\ncatalog = "web"\n', "codex.catalog"),
    ],
)
def test_invalid_config_names_the_key_and_the_file(env, tmp_path, text, key):
    path = write(tmp_path, text, "my-config.toml")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    message = str(caught.value)
    assert f"`{key}`" in message
    assert str(path) in message


def test_broken_toml_names_the_file_and_the_place(env, tmp_path):
    path = write(tmp_path, "[server]\nport = = 8080\n", "broken.toml")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    message = str(caught.value)
    assert str(path) in message and "TOML" in message
    assert "line 2" in message


def test_invalid_integer_in_environment_names_the_variable(env):
    with pytest.raises(ConfigError, match="DEEPSEEK_PROXY_PORT"):
        load_config(env={**env, "DEEPSEEK_PROXY_PORT": "eighty"})


def test_invalid_deepseek_base_url_env_is_refused(env):
    with pytest.raises(ConfigError, match="base_url"):
        load_config(env={**env, "DEEPSEEK_BASE_URL": "api.deepseek.com"})


# ---- the reasoning secret ----------------------------------------------------------------------------------------


def test_reasoning_secret_file_created_once_0600_and_reused(env, tmp_path):
    key_path = tmp_path / "xdg-state" / "deepseek-proxy" / "reasoning.key"
    assert not key_path.exists()
    first = load_config(env=env).server.reasoning_secret
    assert key_path.exists()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert len(first) == 32 and bytes.fromhex(key_path.read_text().strip()) == first
    mtime = key_path.stat().st_mtime_ns
    second = load_config(env=env).server.reasoning_secret
    assert second == first
    assert key_path.stat().st_mtime_ns == mtime  # not rewritten


def test_reasoning_secret_under_home_without_xdg_state(env, tmp_path):
    no_xdg = {k: v for k, v in env.items() if k != "XDG_STATE_HOME"}
    secret = load_config(env=no_xdg).server.reasoning_secret
    assert (tmp_path / "home" / ".local" / "state" / "deepseek-proxy" / "reasoning.key").read_text().strip() == secret.hex()


def test_reasoning_secret_from_env_or_file_creates_no_key_file(env, tmp_path):
    assert load_config(env={**env, "DEEPSEEK_PROXY_SECRET": "shh"}).server.reasoning_secret == b"shh"
    path = write(tmp_path, '[server]\nreasoning_secret = "from-file"\n')
    assert load_config(path, env=env).server.reasoning_secret == b"from-file"
    assert not (tmp_path / "xdg-state").exists()


def test_unreadable_reasoning_secret_is_a_config_error(env, tmp_path):
    key_path = tmp_path / "xdg-state" / "deepseek-proxy" / "reasoning.key"
    key_path.parent.mkdir(parents=True)
    key_path.write_text("not hex")
    with pytest.raises(ConfigError, match="reasoning.key"):
        load_config(env=env)


def test_a_model_of_our_own_has_no_thinking_mode_unless_configured(env, tmp_path):
    """A plain Chat Completions upstream may reject reasoning_content: only the DeepSeek defaults think."""
    config = load_config(write(tmp_path, '[models.mine]\n[models.thinker]\nthinking = true\n'), env=env)
    assert config.models["mine"].thinking is False
    assert config.models["thinker"].thinking is True


# ---- blame the source of a bad value; never show a secret ---------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"workers": 0}, "--workers must be at least 1, got 0"),
        ({"workers": -2}, "--workers must be at least 1, got -2"),
        ({"port": 99999}, "--port must be between 0 and 65535, got 99999"),
        ({"log_level": "loud"}, "--log-level must be debug, info, warning, error or critical, got 'loud'"),
    ],
)
def test_invalid_flags_are_blamed_on_the_flag(env, overrides, expected):
    with pytest.raises(ConfigError) as caught:
        load_config(os.devnull, env=env, overrides=overrides)
    assert str(caught.value) == expected
    assert "built-in defaults" not in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DEEPSEEK_PROXY_WORKERS", "0", "environment variable DEEPSEEK_PROXY_WORKERS must be at least 1, got 0"),
        ("DEEPSEEK_PROXY_PORT", "70000", "environment variable DEEPSEEK_PROXY_PORT must be between 0 and 65535"),
        ("DEEPSEEK_PROXY_LOG_LEVEL", "chatty", "environment variable DEEPSEEK_PROXY_LOG_LEVEL must be debug"),
        ("DEEPSEEK_BASE_URL", "api.deepseek.com", "environment variable DEEPSEEK_BASE_URL (sets "
                                                  "`upstreams.deepseek.base_url`) must start with http://"),
    ],
)
def test_invalid_environment_overrides_are_blamed_on_the_variable(env, tmp_path, variable, value, expected):
    path = write(tmp_path, "[server]\nworkers = 2\n")  # a valid file: the variable is what is wrong
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={**env, variable: value})
    assert str(caught.value).startswith(expected)


def test_a_flag_fixes_a_bad_environment_value_and_a_zero_flag_is_not_ignored(env):
    config = load_config(os.devnull, env={**env, "DEEPSEEK_PROXY_WORKERS": "0"}, overrides={"workers": 3})
    assert config.server.workers == 3
    assert load_config(os.devnull, env=env, overrides={"port": 0}).server.port == 0  # 0: any free port


def test_invalid_file_value_still_names_the_file_and_key(env, tmp_path):
    path = write(tmp_path, "[server]\nworkers = 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    assert str(caught.value) == f"{path}: `server.workers` must be at least 1, got 0"


SECRET = "sk-" + "0123456789abcdef" * 2  # built, so no scanner takes it for a real key


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (f'[upstreams.deepseek]\napi_key = "{SECRET}"\n', "upstreams.deepseek.api_key"),
        (f'[upstreams.local]\nbase_url = "http://127.0.0.1:1/v1"\napi_key = "{SECRET}"\n', "upstreams.local.api_key"),
        (f'[upstreams.deepseek]\napi_key = "Bearer {SECRET}"\n', "upstreams.deepseek.api_key"),
        (f'[upstreams.deepseek]\napi_key = ["{SECRET}"]\n', "upstreams.deepseek.api_key"),
        (f'[server]\nclient_keys = "{SECRET}"\n', "server.client_keys"),
        (f'[server]\nclient_keys = ["{SECRET}", 7]\n', "server.client_keys"),
        (f'[server]\nreasoning_secret = ["{SECRET}"]\n', "server.reasoning_secret"),
    ],
)
def test_a_literal_secret_is_named_by_its_key_and_never_shown(env, tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    message = str(caught.value)
    assert f"`{key}`" in message and str(path) in message
    assert SECRET not in message and SECRET[3:11] not in message, message


def test_a_literal_key_error_says_what_to_write_instead(env, tmp_path):
    path = write(tmp_path, f'[upstreams.deepseek]\napi_key = "{SECRET}"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    message = str(caught.value)
    assert '"sk-…" (hidden, 35 characters)' in message
    assert 'api_key = "env:DEEPSEEK_API_KEY"' in message


def test_a_mistyped_key_source_shows_its_prefix_only(env, tmp_path):
    path = write(tmp_path, '[upstreams.deepseek]\napi_key = "evn:MY_OWN_VARIABLE"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    assert '"evn:…"' in str(caught.value) and "MY_OWN_VARIABLE" not in str(caught.value)


# ---- where clients reach the proxy --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "base"),
    [
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000/v1"),
        ("http://127.0.0.1:9000/v1/", "http://127.0.0.1:9000/v1"),
        ("https://proxy.example/deepseek/", "https://proxy.example/deepseek/v1"),
    ],
)
def test_proxy_url_becomes_the_public_base_url(env, given, base):
    config = load_config(os.devnull, env=env).reached_at(given)
    assert config.public_base_url() == base


@pytest.mark.parametrize("given", ["proxy.example:8787", "ftp://proxy.example", "http://"])
def test_a_proxy_url_that_is_not_http_is_blamed_on_the_flag(env, given):
    with pytest.raises(ConfigError, match="--proxy-url must be an http:// or https:// URL"):
        load_config(os.devnull, env=env).reached_at(given)


def test_listening_at_another_port_and_host(env):
    config = load_config(os.devnull, env=env)
    assert config.listening_at("::1", 9000).public_base_url() == "http://[::1]:9000/v1"
    assert config.listening_at("0.0.0.0", 9001).public_base_url() == "http://127.0.0.1:9001/v1"


def test_key_source_fix_is_the_exact_command(env):
    from deepseek_proxy.config import UpstreamConfig, key_source_fix

    by_env = key_source_fix(UpstreamConfig(name="deepseek", base_url=DEFAULT_BASE_URL, api_key="env:MY_KEY"))
    assert by_env.startswith("export MY_KEY=<your key for https://api.deepseek.com>") and "restart" in by_env
    by_pass = key_source_fix(UpstreamConfig(name="deepseek", base_url=DEFAULT_BASE_URL, api_key="pass:ds/key"))
    assert by_pass.startswith("pass insert ds/key")
