"""The Codex model catalog: built from the installed Codex's bundled catalog, parsed by the real Codex, and served
at GET /v1/codex/models.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from deepseek_proxy.app import create_app
from deepseek_proxy.codex import catalog as catalog_mod
from deepseek_proxy.codex import frontdoor
from deepseek_proxy.config import ModelConfig, load_config
from tests.e2e.codex_cli import cleanup, codex_binary, new_work_dir

# They run the pinned Codex binary (npm ci --prefix tests/e2e): end-to-end, not unit tests.
pytestmark = pytest.mark.e2e

# A bundled catalog in miniature, shaped like Codex 0.169's (fields from fixtures/codex/config/).
CLASSIC = {
    "slug": "gpt-classic", "display_name": "Classic", "priority": 13, "visibility": "list",
    "supported_reasoning_levels": [{"effort": e, "description": e} for e in ("low", "medium", "high", "xhigh")],
    "shell_type": "unified_exec", "supported_in_api": True, "support_verbosity": True,
    "truncation_policy": {"mode": "tokens", "limit": 10000}, "experimental_supported_tools": [],
    "base_instructions": "You are Codex (classic).", "model_messages": {"instructions_template": "x"},
    "include_skills_usage_instructions": True, "comp_hash": "2911", "use_responses_lite": False,
}
MODERN = {
    **CLASSIC, "slug": "gpt-modern", "priority": 1, "base_instructions": "You are Codex (modern).",
    "supported_reasoning_levels": [{"effort": e, "description": e} for e in ("low", "high", "max", "ultra")],
    "tool_mode": "code_mode_only", "use_responses_lite": True, "multi_agent_version": "v2",
    "experimental_supported_tools": ["clock"], "service_tiers": [{"id": "priority"}],
}
BUNDLED = {"models": [MODERN, CLASSIC]}


def config_from(work: Path, text: str = ""):
    path = work / "proxy.toml"
    path.write_text(text)
    return load_config(path, env={"HOME": str(work), "XDG_STATE_HOME": str(work / "state"),
                                  "DEEPSEEK_PROXY_SECRET": "test", "DEEPSEEK_API_KEY": "sk-test"})


@pytest.fixture
def work(request):
    path = new_work_dir(request.node.name)
    yield path
    cleanup(path)


@pytest.fixture(scope="module")
def real_bundled():
    return catalog_mod.read_bundled(codex_binary(), env=dict(os.environ))


# ------------------------------------------------------------------------------------------------ pure parts

def test_template_is_a_classic_entry_not_code_mode():
    assert catalog_mod.pick_template(BUNDLED)["slug"] == "gpt-classic"
    # with no classic entry, the best-ranked one still serves as template
    assert catalog_mod.pick_template({"models": [MODERN]})["slug"] == "gpt-modern"


def test_known_efforts_come_from_the_installed_codex():
    assert "max" in catalog_mod.known_efforts(BUNDLED)
    assert "max" not in catalog_mod.known_efforts({"models": [CLASSIC]})


def test_deepseek_levels_map_onto_codex_efforts():
    model = ModelConfig(id="deepseek-v4-pro", upstream_model="deepseek-v4-pro")
    levels, default = catalog_mod.reasoning_levels(model, "deepseek", catalog_mod.known_efforts(BUNDLED))
    assert [lvl["effort"] for lvl in levels] == ["none", "low", "high", "max"]
    assert default == "high"
    # A Codex that does not know "max" gets no max level by default (xhigh → high, as the issue maps it) ...
    older = catalog_mod.known_efforts({"models": [CLASSIC]})
    levels, default = catalog_mod.reasoning_levels(model, "deepseek", older)
    assert [lvl["effort"] for lvl in levels] == ["none", "low", "high"]
    # ... unless the config maps xhigh onto max, which the catalog then offers under Codex's own name.
    remapped = ModelConfig(id="deepseek-v4-pro", effort_map={**model.effort_map, "xhigh": "max"})
    levels, _ = catalog_mod.reasoning_levels(remapped, "deepseek", older)
    assert [lvl["effort"] for lvl in levels] == ["none", "low", "high", "xhigh"]


def test_levels_follow_the_models_effort_map():
    model = ModelConfig(id="m", effort_map={"low": "low", "high": "high"})  # no thinking-off, no max
    levels, default = catalog_mod.reasoning_levels(model, "deepseek", catalog_mod.known_efforts(BUNDLED))
    assert [lvl["effort"] for lvl in levels] == ["low", "high"] and default == "high"


def test_model_without_thinking_has_no_levels():
    model = ModelConfig(id="plain", thinking=False)
    assert catalog_mod.reasoning_levels(model, "deepseek", {"low", "high"}) == ([], None)


def test_entry_carries_deepseek_facts_over_the_template(work):
    config = config_from(work, '[models.deepseek-v4-pro]\n[models.vision]\nupstream_model = "v"\nimages = true\n')
    catalog = catalog_mod.build_catalog(config, BUNDLED, codex_version="0.169.0")
    pro, vision = catalog["models"][:2]
    assert pro["slug"] == "deepseek-v4-pro" and vision["slug"] == "vision"
    assert pro["base_instructions"] == "You are Codex (classic)."  # from the template, the user's Codex version
    assert pro["apply_patch_tool_type"] == "freeform"
    assert pro["context_window"] == 1_000_000 == pro["max_context_window"]
    assert pro["input_modalities"] == ["text"] and vision["input_modalities"] == ["text", "image"]
    assert pro["supports_parallel_tool_calls"] is True
    assert pro["support_verbosity"] is False and pro["service_tiers"] == []
    for dropped in ("tool_mode", "model_messages", "comp_hash", "multi_agent_version"):
        assert dropped not in pro
    assert catalog["generated_by"]["codex_version"] == "0.169.0"


def test_bundled_models_are_kept_after_ours(work):
    config = config_from(work)
    catalog = catalog_mod.build_catalog(config, BUNDLED)
    assert catalog_mod.catalog_slugs(catalog) == ["deepseek-v4-pro", "deepseek-v4-flash", "gpt-modern", "gpt-classic"]
    assert catalog["models"][2] == MODERN  # untouched


def test_a_proxy_model_named_like_a_bundled_one_replaces_it(work):
    config = config_from(work, '[models.gpt-classic]\nupstream_model = "deepseek-v4-pro"\n')
    slugs = catalog_mod.catalog_slugs(catalog_mod.build_catalog(config, BUNDLED))
    assert slugs.count("gpt-classic") == 1 and slugs[0] == "gpt-classic"


# ------------------------------------------------------------------------------------------- the real Codex

def test_real_bundled_catalog(real_bundled):
    assert real_bundled.codex_version == "0.169.0"
    assert len(real_bundled.catalog["models"]) >= 1
    template = catalog_mod.pick_template(real_bundled.catalog)
    assert len(template["base_instructions"]) > 10_000
    assert not template.get("tool_mode")


def test_real_codex_parses_the_catalog_we_build(work, real_bundled):
    config = config_from(work)
    catalog = catalog_mod.build_catalog(config, real_bundled.catalog, codex_version=real_bundled.codex_version)
    path = work / "catalog.json"
    path.write_text(json.dumps(catalog))
    result = catalog_mod.run_codex(codex_binary(), ["debug", "models", "-c", f'model_catalog_json="{path}"'])
    assert result.returncode == 0, result.stderr
    parsed = {m["slug"]: m for m in json.loads(result.stdout)["models"]}
    assert set(parsed) == set(catalog_mod.catalog_slugs(catalog))
    pro = parsed["deepseek-v4-pro"]
    assert pro["apply_patch_tool_type"] == "freeform"
    assert [lvl["effort"] for lvl in pro["supported_reasoning_levels"]] == ["none", "low", "high", "max"]
    assert pro["default_reasoning_level"] == "high"
    assert pro["context_window"] == 1_000_000


def test_find_codex_prefers_the_explicit_variable(work):
    assert catalog_mod.find_codex({"PATH": "/nonexistent", catalog_mod.CODEX_BIN_ENV: str(codex_binary())}) \
        == codex_binary()
    assert catalog_mod.find_codex({"PATH": str(codex_binary().parent)}) == codex_binary()
    assert catalog_mod.find_codex({"PATH": str(work)}) is None
    assert catalog_mod.find_codex({catalog_mod.CODEX_BIN_ENV: str(work / "nope")}) is None


def test_snapshots_round_trip(work, real_bundled):
    env = {"XDG_STATE_HOME": str(work / "state"), "HOME": str(work)}
    assert catalog_mod.load_snapshot(env) is None
    catalog_mod.save_snapshot(real_bundled, env)
    again = catalog_mod.load_snapshot(env, "0.169.0")
    assert again.catalog == real_bundled.catalog and again.codex_version == "0.169.0"
    assert catalog_mod.load_snapshot(env, "9.9.9") is None
    assert catalog_mod.load_snapshot(env).codex_version == "0.169.0"


# ------------------------------------------------------------------------------------------- the front door

@pytest.fixture
def serve(work, monkeypatch):
    """A test client for the real app with the catalog blueprint; the per-process cache starts empty."""
    frontdoor._cache.clear()
    monkeypatch.setenv("XDG_STATE_HOME", str(work / "state"))

    def make(text: str = ""):
        return create_app(config_from(work, text), env={"DEEPSEEK_API_KEY": "sk-test"}).test_client()

    yield make
    frontdoor._cache.clear()


def test_frontdoor_serves_the_catalog(serve, monkeypatch):
    monkeypatch.setenv(catalog_mod.CODEX_BIN_ENV, str(codex_binary()))
    client = serve()
    response = client.get("/v1/codex/models.json?client_version=0.169.0", headers={"Authorization": "Bearer x"})
    assert response.status_code == 200
    body = response.get_json()
    assert catalog_mod.catalog_slugs(body)[:2] == ["deepseek-v4-pro", "deepseek-v4-flash"]
    assert body["generated_by"]["codex_version"] == "0.169.0"
    # cached per process: a second request does not need Codex any more
    monkeypatch.setenv(catalog_mod.CODEX_BIN_ENV, "/nonexistent/codex")
    assert client.get("/v1/codex/models.json?client_version=0.169.0").get_json() == body


def test_frontdoor_uses_the_setup_snapshot_without_codex(serve, monkeypatch, work, real_bundled):
    monkeypatch.setenv(catalog_mod.CODEX_BIN_ENV, str(work / "no-codex-here"))
    catalog_mod.save_snapshot(real_bundled, {"XDG_STATE_HOME": str(work / "state")})
    response = serve().get("/codex/models.json?client_version=0.169.0")
    assert response.status_code == 200
    assert catalog_mod.catalog_slugs(response.get_json())[0] == "deepseek-v4-pro"


def test_frontdoor_says_why_when_it_has_no_catalog(serve, monkeypatch, work):
    monkeypatch.setenv(catalog_mod.CODEX_BIN_ENV, str(work / "no-codex-here"))
    response = serve().get("/v1/codex/models.json")
    assert response.status_code == 503
    message = response.get_json()["error"]["message"]
    assert "npm install -g @openai/codex" in message and "codex setup" in message


def test_frontdoor_requires_a_client_key_when_the_proxy_has_them(serve, monkeypatch):
    monkeypatch.setenv(catalog_mod.CODEX_BIN_ENV, str(codex_binary()))
    client = serve('[server]\nclient_keys = ["sk-proxy-1"]\n')
    assert client.get("/v1/codex/models.json").status_code == 401
    ok = client.get("/v1/codex/models.json", headers={"Authorization": "Bearer sk-proxy-1"})
    assert ok.status_code == 200


def test_proxy_models_prefer_the_websocket_transport():
    config = load_config(None, env={"DEEPSEEK_PROXY_SECRET": "t"})
    template = {"slug": "gpt-x", "shell_type": "unified_exec", "base_instructions": "You are Codex."}
    built = catalog_mod.build_catalog(config, {"models": [template]})
    ours = [m for m in built["models"] if m["slug"] in config.models]
    assert ours and all(m["prefer_websockets"] is True for m in ours)
