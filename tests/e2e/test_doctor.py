"""`deepseek-proxy doctor`: every failure it reports is made to happen for real.

Each test starts from a working set-up (the real proxy in front of the fake DeepSeek, `codex setup` run, the pinned
Codex on PATH) and breaks one thing: the proxy not running, a key the upstream rejects, Codex missing, a bad
config.toml, a missing catalog. CODEX_HOMEs live under tests/e2e/.work (never /tmp).
"""

from __future__ import annotations

import io
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from deepseek_proxy.codex import catalog as catalog_mod
from deepseek_proxy.codex.config_toml import run_setup
from deepseek_proxy.codex.doctor import run_doctor
from deepseek_proxy.config import Config, load_config
from tests.conftest import FAKE_KEY, free_port
from tests.e2e.codex_cli import codex_binary
from tests.fakes.fake_deepseek import FakeDeepSeek

# They run the pinned Codex binary (npm ci --prefix tests/e2e): end-to-end, not unit tests.
pytestmark = pytest.mark.e2e

WITH_CODEX = f"{codex_binary().parent}{os.pathsep}/usr/bin:/bin"
WITHOUT_CODEX = "/usr/bin:/bin"


@dataclass
class Scene:
    work: Path
    config: Config
    env: dict[str, str]

    @property
    def home(self) -> Path:
        return self.work / "codex-home"

    def doctor(self, **env_changes: str | None) -> tuple[int, str]:
        env = {**self.env, **env_changes}
        env = {k: v for k, v in env.items() if v is not None}
        out = io.StringIO()
        code = run_doctor(self.config, codex_home=self.home, out=out, env=env)
        return code, out.getvalue()

    def doctor_fails(self, **env_changes: str | None) -> dict[str, tuple[str, str | None]]:
        """Doctor exits 1: its failed checks, {name: (message, fix)}."""
        code, out = self.doctor(**env_changes)
        assert code == 1, out
        return failed(out)

    def edit_codex_config(self, old: str, new: str) -> None:
        path = self.home / "config.toml"
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))


def results(output: str) -> dict[str, list[tuple[str, str, str | None]]]:
    """{check name: [(mark, message, fix)]} from doctor's output."""
    found: dict[str, list] = {}
    last = None
    for line in output.splitlines():
        match = re.match(r"\[(.{4})\] ([^:]+): (.*)", line)
        if match:
            last = [match.group(1).strip(), match.group(3), None]
            found.setdefault(match.group(2), []).append(last)
        elif line.startswith("       fix: ") and last is not None:
            last[2] = line[len("       fix: "):]
    return {name: [tuple(r) for r in rows] for name, rows in found.items()}


def failed(output: str) -> dict[str, tuple[str, str | None]]:
    return {name: (msg, fix) for name, rows in results(output).items() for mark, msg, fix in rows if mark == "FAIL"}




def make_scene(work: Path, config_path: Path, *, port: int, upstream_url: str, catalog_setup: bool = True,
               key_env: dict[str, str] | None = None) -> Scene:
    env = {
        "PATH": WITH_CODEX,
        "HOME": str(work),
        "XDG_STATE_HOME": str(work / "state"),
        "DEEPSEEK_PROXY_SECRET": "test-secret",
        "DEEPSEEK_BASE_URL": upstream_url,
        "DEEPSEEK_API_KEY": FAKE_KEY,
        **(key_env or {}),
    }
    config = load_config(config_path, env=env, overrides={"port": port})
    scene = Scene(work, config, env)
    if catalog_setup:
        out = io.StringIO()
        assert run_setup(config, codex_home=scene.home, dry_run=False, out=out, env=env) == 0, out.getvalue()
    return scene


def scene_without_proxy(work: Path, upstream_url: str, *, port: int | None = None, **options) -> Scene:
    """A set-up whose proxy is not running: an empty `work/proxy.toml`, a free port unless `port` is given."""
    config_path = work / "proxy.toml"
    config_path.write_text("")
    return make_scene(work, config_path, port=free_port() if port is None else port, upstream_url=upstream_url,
                      **options)


@pytest.fixture
def running(work, upstream, start_proxy, tmp_path):
    """A working set-up around a running proxy; `proxy_toml` / `proxy_env` change the proxy's config."""

    def start(proxy_toml: str = "", *, proxy_env: dict | None = None, key_env: dict | None = None) -> Scene:
        proxy = start_proxy(upstream.base_url, proxy_toml,
                            extra_env={catalog_mod.CODEX_BIN_ENV: str(codex_binary()), **(proxy_env or {})})
        return make_scene(work, tmp_path / f"config-{proxy.port}.toml", port=proxy.port,
                          upstream_url=upstream.base_url, key_env=key_env)

    return start


# --------------------------------------------------------------------------------------------------- baseline

@pytest.mark.parametrize("proxy_toml", ["", '[codex]\ncatalog = "file"\n'], ids=["catalog-url", "catalog-file"])
def test_everything_in_place_passes(running, proxy_toml):
    scene = running(proxy_toml)
    code, out = scene.doctor()
    assert code == 0, out
    assert failed(out) == {}
    names = list(results(out))
    assert names == ["proxy", "upstream deepseek", "codex", "config.toml", "profile deepseek-v4-pro",
                     "profile deepseek-v4-flash", "catalog", "claude", "gemini"], out
    assert "checked by the proxy" in out and "Codex 0.169.0" in out
    assert out.rstrip().endswith("All checks passed.")


# ------------------------------------------------------------------------------------------- 1. the proxy

def test_proxy_url_is_where_doctor_looks(running):
    """`doctor --proxy-url URL`: the proxy is checked at that URL (here the real one, given by its root)."""
    scene = running()
    scene.config = scene.config.reached_at(f"http://127.0.0.1:{scene.config.server.port}")
    code, out = scene.doctor()
    assert code == 0, out
    assert results(out)["proxy"] == [("ok", f"deepseek-proxy answers at http://127.0.0.1:{scene.config.server.port}",
                                      None)]


def test_proxy_url_with_nothing_behind_it(work, upstream):
    scene = make_scene(work, Path(os.devnull), port=free_port(), upstream_url=upstream.base_url,
                       catalog_setup=False)
    port = free_port()
    scene.config = scene.config.reached_at(f"http://127.0.0.1:{port}/v1")
    message, fix = scene.doctor_fails()["proxy"]
    assert message == f"Nothing answers at http://127.0.0.1:{port} (--proxy-url)."
    assert fix == "check that URL and that the proxy behind it is running"  # not "deepseek-proxy serve"


def test_proxy_not_listening(work, upstream):
    scene = scene_without_proxy(work, upstream.base_url)  # nothing listens
    code, out = scene.doctor()
    assert code == 1
    fails = failed(out)
    message, fix = fails["proxy"]
    assert "Nothing answers at http://127.0.0.1:" in message and "not running" in message
    assert fix == f"deepseek-proxy --config {work / 'proxy.toml'} serve"
    # the upstream is still checked, directly, and is fine
    assert ("ok", ) == tuple(r[0] for r in results(out)["upstream deepseek"])
    assert "checked directly" in out
    assert "cannot fetch the model catalog" in fails["catalog"][0]


def test_something_else_on_the_port(work, upstream):
    # the fake DeepSeek is an HTTP server without /healthz: "another program is listening"
    port = int(upstream.base_url.rsplit(":", 1)[1].split("/")[0])
    scene = scene_without_proxy(work, upstream.base_url, port=port, catalog_setup=False)
    assert "another program is listening" in scene.doctor_fails()["proxy"][0]


# --------------------------------------------------------------------------------------------- 2. upstream

def test_upstream_rejects_the_key_checked_through_the_proxy(running):
    scene = running(proxy_env={"DEEPSEEK_API_KEY": "sk-wrong-key-1234"})
    fails = scene.doctor_fails()
    message, fix = fails["upstream deepseek"]
    assert "rejected the API key (HTTP 401" in message and "Authentication Fails" in message
    assert fix.startswith("export DEEPSEEK_API_KEY=") and "restart" in fix
    assert "proxy" not in fails


def test_upstream_rejects_the_key_checked_directly(work):
    with FakeDeepSeek(api_key="sk-the-right-one") as fake:  # a real server on loopback that says 401
        scene = scene_without_proxy(work, fake.base_url, key_env={"DEEPSEEK_API_KEY": "sk-not-the-right-one"})
        message, fix = scene.doctor_fails()["upstream deepseek"]
    assert f"{fake.base_url} rejected the API key (HTTP 401" in message
    assert fix.startswith("export DEEPSEEK_API_KEY=")


def test_upstream_key_not_set(work, upstream):
    scene = scene_without_proxy(work, upstream.base_url)
    message, fix = scene.doctor_fails(DEEPSEEK_API_KEY=None)["upstream deepseek"]
    assert "DEEPSEEK_API_KEY is not set" in message and fix.startswith("export DEEPSEEK_API_KEY=")


def test_running_proxy_without_a_key(running):
    """The proxy started without DEEPSEEK_API_KEY: doctor says the proxy itself has none, and the fix `serve` gave."""
    scene = running(proxy_env={"DEEPSEEK_API_KEY": ""})
    fails = scene.doctor_fails()
    message, fix = fails["upstream deepseek"]
    assert message.startswith("the proxy has no key for ") and "DEEPSEEK_API_KEY is not set" in message
    assert fix.startswith("export DEEPSEEK_API_KEY=") and f"--config {scene.config.path} serve" in fix
    assert "proxy" not in fails


def test_upstream_unreachable(work):
    closed = f"http://127.0.0.1:{free_port()}"
    scene = scene_without_proxy(work, closed)
    message, fix = scene.doctor_fails()["upstream deepseek"]
    assert f"cannot reach {closed}: connection refused" in message
    assert "upstreams.deepseek.base_url" in fix


# ------------------------------------------------------------------------------------------------ 3. Codex

def test_codex_not_installed(running):
    scene = running()
    fails = scene.doctor_fails(PATH=WITHOUT_CODEX)
    assert "Codex is not installed" in fails["codex"][0]
    assert fails["codex"][1] == "npm install -g @openai/codex"
    assert "Codex is not installed" in fails["catalog"][0]
    assert set(fails) == {"codex", "catalog"}


def test_codex_bin_variable_pointing_nowhere(running, work):
    scene = running()
    fails = scene.doctor_fails(**{catalog_mod.CODEX_BIN_ENV: str(work / "no-such-codex")})
    assert "is not an executable file" in fails["codex"][0]


# ------------------------------------------------------------------------------------------ 4. config.toml

def test_wire_api_chat_in_our_provider(running):
    scene = running()
    scene.edit_codex_config('wire_api = "responses"', 'wire_api = "chat"')
    message, fix = scene.doctor_fails()["config.toml"]
    assert '[model_providers.deepseek-proxy] has wire_api = "chat"' in message
    assert fix.endswith("codex setup")


def test_wire_api_chat_in_another_provider(running):
    scene = running()
    path = scene.home / "config.toml"
    path.write_text(path.read_text() + '\n[model_providers.legacy]\nbase_url = "http://127.0.0.1:9/v1"\n'
                                       'wire_api = "chat"\n')
    message, fix = scene.doctor_fails()["config.toml"]
    assert "[model_providers.legacy]" in message and "refuses to start" in message
    assert "[model_providers.legacy]" in fix and 'wire_api = "responses"' in fix


def test_provider_named_openai(running):
    scene = running()
    scene.edit_codex_config('name = "DeepSeek proxy"', 'name = "OpenAI"')
    message, fix = scene.doctor_fails()["config.toml"]
    assert 'named "OpenAI"' in message and fix.endswith("codex setup")


def test_config_toml_missing(running):
    scene = running()
    shutil.rmtree(scene.home)
    scene.home.mkdir()
    fails = scene.doctor_fails()
    assert "does not exist" in fails["config.toml"][0] and fails["config.toml"][1].endswith("codex setup")


def test_config_toml_broken(running):
    scene = running()
    (scene.home / "config.toml").write_text("[model_providers.x\n")
    assert "is not valid TOML" in scene.doctor_fails()["config.toml"][0]


def test_profile_missing_and_legacy_profile_table(running):
    scene = running()
    (scene.home / "deepseek-v4-flash.config.toml").unlink()
    path = scene.home / "config.toml"
    path.write_text(path.read_text() + '\n[profiles.deepseek-v4-pro]\nmodel = "deepseek-v4-pro"\n')
    fails = scene.doctor_fails()
    assert "is missing" in fails["profile deepseek-v4-flash"][0]
    assert "[profiles.deepseek-v4-pro]" in fails["profile deepseek-v4-pro"][0]


def test_profile_without_provider(running):
    scene = running()
    path = scene.home / "deepseek-v4-pro.config.toml"
    path.write_text('model = "deepseek-v4-pro"\n')
    assert "without model_provider Codex uses OpenAI" in scene.doctor_fails()["profile deepseek-v4-pro"][0]


def test_codex_key_variable_not_set(running):
    scene = running('[server]\nclient_keys = ["sk-proxy-1"]\n', key_env={"DEEPSEEK_PROXY_KEY": "sk-proxy-1"})
    assert scene.doctor()[0] == 0
    fails = scene.doctor_fails(DEEPSEEK_PROXY_KEY=None)
    message, fix = fails["key"]
    assert "DEEPSEEK_PROXY_KEY is not set" in message and fix == "export DEEPSEEK_PROXY_KEY=…"
    # without the key the proxy also refuses the catalog request, and doctor says so
    assert "HTTP 401" in fails["catalog"][0]


# ---------------------------------------------------------------------------------------------- 5. catalog

def test_catalog_file_missing(running):
    scene = running('[codex]\ncatalog = "file"\n')
    (scene.home / "deepseek-proxy" / "model_catalog.json").unlink()
    message, fix = scene.doctor_fails()["catalog"]
    assert "is missing" in message and "Model metadata" in message and fix.endswith("codex setup")


def test_catalog_file_that_codex_cannot_parse(running):
    scene = running('[codex]\ncatalog = "file"\n')
    (scene.home / "deepseek-proxy" / "model_catalog.json").write_text('{"models": [{"slug": "x"}]}')
    message, _ = scene.doctor_fails()["catalog"]
    assert "Codex cannot read the catalog" in message and "missing field" in message


def test_catalog_url_not_configured(running):
    scene = running()
    scene.edit_codex_config("model_catalog_url", "# model_catalog_url")
    assert "model_catalog_url is None" in scene.doctor_fails()["config.toml"][0]


def test_catalog_url_when_the_proxy_cannot_build_it(running, work):
    scene = running(proxy_env={catalog_mod.CODEX_BIN_ENV: str(work / "no-codex"), "PATH": "/usr/bin:/bin"})
    message, _ = scene.doctor_fails()["catalog"]
    assert "HTTP 503" in message and "npm install -g @openai/codex" in message
