"""The `[store]` table of the config file: defaults in the user data dir, overrides, and clear refusals."""

from __future__ import annotations

import pytest

from deepseek_proxy.config import MB, ConfigError, load_config


def load(tmp_path, text: str = "", env: dict | None = None):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path, env={"HOME": str(tmp_path / "home"), **(env or {})})


def test_default_is_a_sqlite_file_in_the_user_data_dir(tmp_path):
    store = load(tmp_path).store
    assert store.url == f"sqlite:///{tmp_path}/home/.local/share/deepseek-proxy/store.db"
    assert store.ttl_seconds == 30 * 86400
    assert store.reasoning_ttl_seconds == 7 * 86400
    assert store.max_response_bytes == 16 * MB


def test_xdg_data_home_is_followed(tmp_path):
    store = load(tmp_path, env={"XDG_DATA_HOME": str(tmp_path / "xdg")}).store
    assert store.url == f"sqlite:///{tmp_path}/xdg/deepseek-proxy/store.db"


def test_file_settings(tmp_path):
    store = load(tmp_path, '[store]\nurl = "redis://127.0.0.1:6379/2"\nttl_days = 1.5\nreasoning_ttl_days = 1\n'
                           'max_response_mb = 64\n').store
    assert store.url == "redis://127.0.0.1:6379/2"
    assert store.ttl_seconds == 1.5 * 86400
    assert store.reasoning_ttl_seconds == 86400
    assert store.max_response_bytes == 64 * MB


def test_environment_variable_overrides_the_file(tmp_path):
    store = load(tmp_path, '[store]\nurl = "memory://"\n', env={"DEEPSEEK_PROXY_STORE_URL": "redis://h:1/0"}).store
    assert store.url == "redis://h:1/0"


@pytest.mark.parametrize(("text", "message"), [
    ('[store]\nurl = "postgres://u:pw@h/db"\n', "`store.url` must be sqlite:///PATH"),
    ('[store]\nurl = "sqlite://"\n', "`store.url` must be sqlite:///PATH"),
    ('[store]\nttl_days = 0\n', "`store.ttl_days` must be a positive number, got 0"),
    ('[store]\nreasoning_ttl_days = -1\n', "`store.reasoning_ttl_days` must be a positive number"),
    ('[store]\nmax_response_mb = "big"\n', "`store.max_response_mb` must be an integer or a number"),
    ('[store]\nttl = 3\n', "`store.ttl` is not a known setting"),
    ('store = 3\n', "`store` must be a table"),
])
def test_invalid_settings_are_named(tmp_path, text, message):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert message in str(caught.value)
    assert str(tmp_path / "config.toml") in str(caught.value)
    assert "pw" not in str(caught.value)  # a URL's password is never shown


def test_invalid_url_from_the_environment_is_blamed_on_it(tmp_path):
    with pytest.raises(ConfigError, match="environment variable DEEPSEEK_PROXY_STORE_URL .sets `store.url`."):
        load(tmp_path, env={"DEEPSEEK_PROXY_STORE_URL": "mysql://root:secret@db"})
