"""`deepseek-proxy codex setup` checked with the real Codex CLI.

setup writes into a CODEX_HOME that already holds the user's own config; then `codex exec -p deepseek-v4-pro`
must run without "Model metadata ... not found" and send the `apply_patch` custom tool and `reasoning.effort`
(the two things Codex drops for a model it has no catalog entry for) — with the catalog as a file and as a URL,
and with each way the proxy takes keys.

Two servers behind Codex:
* `standin`: a scripted Responses server that records Codex's own requests (and serves the catalog built by
  deepseek_proxy.codex.catalog) — checks exactly what Codex sends;
* `proxy`: the real `deepseek-proxy serve` in front of the fake DeepSeek — checks the whole path, including the
  proxy's own catalog endpoint; the evidence is what reaches the upstream (apply_patch as a function tool,
  reasoning_effort).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from deepseek_proxy.codex import catalog as catalog_mod
from deepseek_proxy.codex.config_toml import NO_KEY_TOKEN, run_setup
from deepseek_proxy.config import load_config
from tests.conftest import FAKE_KEY
from tests.e2e.codex_cli import (
    OFFLINE_TOML,
    codex_binary,
    run_codex_exec,
)
from tests.e2e.scripted_responses import FINAL_MESSAGE_TEXT, ScriptedResponses
from tests.fakes.fake_deepseek import Reply

pytestmark = pytest.mark.e2e

PROFILE = "deepseek-v4-pro"
PROXY_KEY = "sk-proxy-client-1"

# The user's existing ~/.codex/config.toml: it must survive setup, and their default stays OpenAI's model.
USER_CONFIG = f"""# My own Codex settings
model = "gpt-5.5"   # my default, not the proxy

{OFFLINE_TOML}
[model_providers.other]
name = "Other"
base_url = "http://127.0.0.1:9/v1"
"""

# key mode → (proxy config lines, the variables Codex gets, the Authorization header Codex must send)
KEY_MODES = {
    "no-key": ("", {}, None),
    "proxy-key": (f'[server]\nclient_keys = ["{PROXY_KEY}"]\n', {"DEEPSEEK_PROXY_KEY": PROXY_KEY},
                  f"Bearer {PROXY_KEY}"),
    "client-key": ('[upstreams.deepseek]\napi_key = "client"\n', {"DEEPSEEK_API_KEY": FAKE_KEY},
                   f"Bearer {FAKE_KEY}"),
}




def _setup_env(work: Path) -> dict[str, str]:
    """The environment `deepseek-proxy codex setup` runs in: the pinned Codex on PATH, state under `work`."""
    return {
        "PATH": f"{codex_binary().parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(work),
        "XDG_STATE_HOME": str(work / "state"),
        "DEEPSEEK_PROXY_SECRET": "test-secret",
    }


def _run_setup(work: Path, config_path: Path, port: int, *, websockets: bool = False) -> Path:
    env = _setup_env(work)
    config = load_config(config_path, env=env, overrides={"port": port})
    home = work / "codex-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(USER_CONFIG)
    out = io.StringIO()
    assert run_setup(config, codex_home=home, dry_run=False, out=out, env=env,
                     websockets=websockets) == 0, out.getvalue()
    text = (home / "config.toml").read_text()
    assert text.startswith(USER_CONFIG.rstrip("\n")), "setup must keep the user's file as it was, then add"
    return home


def _assert_catalog_used(result) -> None:
    assert result.returncode == 0, result.stderr[-4000:]
    output = result.stdout + result.stderr
    assert "Model metadata" not in output and "fallback model metadata" not in output, output[-4000:]


@pytest.mark.parametrize("key_mode", list(KEY_MODES))
@pytest.mark.parametrize("catalog", ["file", "url"])
def test_setup_then_codex_exec_through_standin(work, catalog, key_mode):
    proxy_toml, codex_env, expected_auth = KEY_MODES[key_mode]
    if expected_auth is None and catalog == "url":
        # Codex fetches model_catalog_url only with a credential, so setup gives it a fixed dummy token.
        expected_auth = f"Bearer {NO_KEY_TOKEN}"
    with ScriptedResponses() as server:
        config_path = work / "proxy.toml"
        config_path.write_text(f'{proxy_toml}\n[codex]\ncatalog = "{catalog}"\n')
        home = _run_setup(work, config_path, server.port)
        if catalog == "url":  # what the proxy's /v1/codex/models.json serves
            config = load_config(config_path, env=_setup_env(work), overrides={"port": server.port})
            bundled = catalog_mod.read_bundled(codex_binary(), env=_setup_env(work))
            server.catalog = catalog_mod.build_catalog(config, bundled.catalog, codex_version=bundled.codex_version)

        result = run_codex_exec(home, work / "wd", "say hello", env_key_value=codex_env, profile=PROFILE)

    _assert_catalog_used(result)
    assert FINAL_MESSAGE_TEXT in result.stdout
    [request] = server.responses_requests()
    assert request.path == "/v1/responses"
    assert request.headers.get("authorization") == expected_auth
    body = request.body
    assert body["model"] == "deepseek-v4-pro"
    assert body["reasoning"]["effort"] == "high"  # the catalog's default level
    [apply_patch] = [t for t in body["tools"] if t.get("name") == "apply_patch"]
    assert apply_patch["type"] == "custom" and apply_patch["format"]["type"] == "grammar"
    catalog_gets = [r for r in server.requests if r.method == "GET"]
    if catalog == "url":
        [get] = catalog_gets
        assert get.path == "/v1/codex/models.json"
        assert get.query["client_version"] == [catalog_mod.codex_version(codex_binary())]
        assert get.headers.get("authorization") == expected_auth
    else:
        assert catalog_gets == []


@pytest.mark.parametrize("key_mode", list(KEY_MODES))
@pytest.mark.parametrize("catalog", ["file", "url"])
def test_setup_then_codex_exec_through_proxy(work, catalog, key_mode, upstream, start_proxy, tmp_path):
    proxy_toml, codex_env, _ = KEY_MODES[key_mode]
    upstream.script(Reply.text("Hello from DeepSeek."))
    # The proxy finds the pinned Codex for its catalog endpoint through DEEPSEEK_PROXY_CODEX_BIN.
    proxy = start_proxy(upstream.base_url, f'{proxy_toml}\n[codex]\ncatalog = "{catalog}"\n',
                        extra_env={catalog_mod.CODEX_BIN_ENV: str(codex_binary())})
    home = _run_setup(work, tmp_path / f"config-{proxy.port}.toml", proxy.port)

    result = run_codex_exec(home, work / "wd", "say hello", env_key_value=codex_env, profile=PROFILE)

    _assert_catalog_used(result)
    assert "Hello from DeepSeek." in result.stdout
    [chat] = upstream.chat_requests
    assert chat.headers.get("authorization") == f"Bearer {FAKE_KEY}"
    assert chat.body["model"] == "deepseek-v4-pro"
    assert chat.body.get("reasoning_effort") == "high", chat.body.get("reasoning_effort")
    tool_names = [t["function"]["name"] for t in chat.body.get("tools", [])]
    assert "apply_patch" in tool_names, tool_names


@pytest.mark.parametrize("catalog", ["file", "url"])
def test_setup_with_websockets_then_codex_talks_to_the_proxy_over_a_websocket(work, catalog, upstream, start_proxy,
                                                                              tmp_path):
    proxy_toml, codex_env, _ = KEY_MODES["proxy-key"]  # the upgrade request carries the client key too
    upstream.script(Reply.text("Hello over a WebSocket."))
    proxy = start_proxy(upstream.base_url, f'{proxy_toml}\n[codex]\ncatalog = "{catalog}"\n',
                        extra_env={catalog_mod.CODEX_BIN_ENV: str(codex_binary())})
    home = _run_setup(work, tmp_path / f"config-{proxy.port}.toml", proxy.port, websockets=True)

    result = run_codex_exec(home, work / "wd", "say hello", env_key_value=codex_env, profile=PROFILE)

    _assert_catalog_used(result)  # the catalog with prefer_websockets parses
    assert "Hello over a WebSocket." in result.stdout
    log = proxy.log()
    assert "POST /v1/responses" not in log, log[-3000:]  # no fallback to HTTP
    assert "generate=False" in log and "generate=True" in log, log[-3000:]  # the warm-up, then the turn
    [chat] = upstream.chat_requests
    assert chat.body.get("reasoning_effort") == "high"
    assert "apply_patch" in [t["function"]["name"] for t in chat.body.get("tools", [])]
