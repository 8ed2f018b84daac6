"""The Codex model catalog for the proxy's models.

Codex needs a catalog entry for a model, or it prints "Model metadata for `X` not found", sends no `apply_patch`
tool and no reasoning effort. A catalog given by `model_catalog_json` / `model_catalog_url` *replaces* the bundled
one, and every entry needs Codex's own fields, `base_instructions` (the ~20k-char system prompt) included.

So the catalog is built from the installed Codex's bundled catalog (`codex debug models --bundled`):
one bundled entry is the template for each proxy model (base instructions, shell type, truncation policy... of the
user's Codex version), overlaid with the DeepSeek facts; the bundled models are kept after ours, because Codex
itself asks for some of them (e.g. an auto-review model) and other profiles may select them.

Everything here except the `codex` subprocess calls and the snapshot files is pure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import Config, ModelConfig, default_state_dir

# Codex's reasoning efforts, weakest first. Versions differ in the upper end (0.169 knows "max" and "ultra");
# the bundled catalog of the installed Codex tells which it knows, these are known to every Responses-era Codex.
CODEX_EFFORT_ORDER = ("none", "minimal", "low", "medium", "high", "xhigh", "max", "ultra")
BASE_CODEX_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})

# DeepSeek's own levels (the proxy's effort_map targets), weakest first, with what the picker shows.
UPSTREAM_LEVELS = (
    ("disabled", "Thinking off: answers at once, without reasoning"),
    ("low", "DeepSeek thinking, low effort: quicker answers"),
    ("high", "DeepSeek thinking, high effort (DeepSeek's default)"),
    ("max", "DeepSeek thinking, maximum effort for the hardest problems"),
)
# A plain OpenAI-compatible upstream receives Codex's effort name unchanged as `reasoning_effort`.
OPENAI_LEVELS = (
    ("low", "Fast responses with lighter reasoning"),
    ("medium", "Balances speed and reasoning depth for everyday tasks"),
    ("high", "Greater reasoning depth for complex problems"),
)

# Template fields that describe OpenAI's hosted models, not ours: other tool modes ("code_mode_only" gives the
# model a JavaScript tool instead of exec_command/apply_patch), speed tiers, upgrade prompts, compaction hashes.
# model_messages is dropped too: Codex fills its instructions_template from base_instructions.
TEMPLATE_DROP = frozenset({
    "model_messages", "tool_mode", "multi_agent_version", "multi_agent_reasoning_effort", "default_service_tier",
    "model_specialty", "comp_hash", "auto_compact_token_limit", "auto_review_model_override",
    "web_search_provider",
})

CATALOG_FILE_NAME = "model_catalog.json"
CODEX_BIN_ENV = "DEEPSEEK_PROXY_CODEX_BIN"
INSTALL_HINT = "npm install -g @openai/codex"


class CatalogUnavailable(Exception):
    """No bundled Codex catalog to build from; the message says what to do."""


@dataclass(frozen=True)
class Bundled:
    """A bundled Codex catalog and where it came from."""

    catalog: dict
    codex_version: str
    source: str  # "codex binary at …" or "snapshot …"


# --------------------------------------------------------------------------------------------- pure functions

def known_efforts(bundled: Mapping[str, Any]) -> frozenset[str]:
    """The reasoning efforts the installed Codex accepts: the base set plus every effort its bundled models list."""
    seen = {
        level.get("effort")
        for model in bundled.get("models", [])
        for level in model.get("supported_reasoning_levels") or []
        if isinstance(level, dict)
    }
    return BASE_CODEX_EFFORTS | {e for e in seen if isinstance(e, str)}


def pick_template(bundled: Mapping[str, Any]) -> dict:
    """The bundled entry to copy Codex's own fields from.

    Prefer a "classic" entry (no special tool mode, no Responses-lite, no multi-agent v2): it gives the tool set
    the proxy translates (exec_command, freeform apply_patch, ...). Among those, a listed one with the best rank.
    """
    models = [m for m in bundled.get("models", []) if isinstance(m, dict) and m.get("base_instructions")]
    if not models:
        raise CatalogUnavailable("the bundled Codex catalog has no model with base_instructions to use as a template")

    def classic(m: dict) -> bool:
        return not m.get("tool_mode") and not m.get("use_responses_lite") and not m.get("multi_agent_version")

    candidates = [m for m in models if classic(m)] or models
    return min(candidates, key=lambda m: (m.get("visibility") != "list", m.get("priority", 1 << 30)))


def reasoning_levels(model: ModelConfig, upstream_profile: str,
                     efforts: Iterable[str]) -> tuple[list[dict], str | None]:
    """(supported_reasoning_levels, default_reasoning_level) for one model.

    DeepSeek knows thinking off and effort low/high/max; the proxy maps Codex's effort names onto those with the
    model's effort_map. For each DeepSeek level we offer one Codex effort the installed Codex accepts and the
    proxy maps there, preferring the same name ("max" on Codex ≥ 0.169; on older ones only if xhigh is mapped to max).
    """
    if not model.thinking:
        return [], None
    efforts = set(efforts)
    if upstream_profile == "openai":
        offered = [{"effort": e, "description": d} for e, d in OPENAI_LEVELS if e in efforts]
        return offered, "medium" if "medium" in efforts else (offered[-1]["effort"] if offered else None)
    effort_map = getattr(model, "effort_map", None) or {}
    levels: list[dict] = []
    chosen: dict[str, str] = {}
    for target, description in UPSTREAM_LEVELS:
        names = [e for e in CODEX_EFFORT_ORDER if e in efforts and effort_map.get(e) == target]
        if not names:
            continue
        same = {"disabled": "none"}.get(target, target)
        name = same if same in names else names[-1]
        chosen[target] = name
        levels.append({"effort": name, "description": description})
    default = chosen.get("high") or (levels[-1]["effort"] if levels else None)
    return levels, default


def model_entry(
    model: ModelConfig,
    template: Mapping[str, Any],
    *,
    efforts: Iterable[str],
    upstream_profile: str = "deepseek",
    priority: int = 0,
) -> dict:
    """One catalog entry: the template's Codex fields, overlaid with what is true of this model behind the proxy."""
    levels, default_level = reasoning_levels(model, upstream_profile, efforts)
    display = getattr(model, "display_name", "") or model.id
    entry = {k: v for k, v in template.items() if k not in TEMPLATE_DROP}
    entry.update(
        slug=model.id,
        display_name=display,
        description=f"{display} through deepseek-proxy ({model.upstream}: {model.upstream_model or model.id})",
        default_reasoning_level=default_level,
        supported_reasoning_levels=levels,
        visibility="list",
        supported_in_api=True,
        priority=priority,
        additional_speed_tiers=[],
        service_tiers=[],
        availability_nux=None,
        upgrade=None,
        default_reasoning_summary="auto",
        support_verbosity=False,  # no Chat Completions equivalent of text.verbosity
        default_verbosity=None,
        apply_patch_tool_type="freeform",  # else Codex sends no apply_patch tool at all
        supports_image_detail_original=False,
        context_window=model.context_window,
        max_context_window=model.context_window,
        experimental_supported_tools=[],
        input_modalities=["text", "image"] if model.images else ["text"],
        supports_search_tool=False,
        supports_experimental_context=False,
        use_responses_lite=False,
        supports_reasoning_effort_updates=False,
        # Read by older Codex versions; 0.169 ignores it and always sends parallel_tool_calls: true.
        supports_parallel_tool_calls=True,
        # The proxy serves Responses over WebSocket. Codex versions that gate the transport per model read this;
        # 0.169 does not (its ModelInfo has no such field) and goes by the provider's `supports_websockets`
        # alone, which `codex setup --websockets` sets: that stays the one switch.
        prefer_websockets=True,
    )
    return entry


def build_catalog(config: Config, bundled: Mapping[str, Any], *, codex_version: str = "") -> dict:
    """The whole catalog: one entry per configured model, then the bundled models (minus any slug we took)."""
    template = pick_template(bundled)
    efforts = known_efforts(bundled)
    ours = []
    for priority, model in enumerate(config.models.values()):
        upstream = config.upstreams.get(model.upstream)
        ours.append(model_entry(model, template, efforts=efforts, priority=priority,
                                upstream_profile=getattr(upstream, "profile", "deepseek")))
    taken = {e["slug"] for e in ours}
    kept = [m for m in bundled.get("models", []) if m.get("slug") not in taken]
    return {
        "models": ours + kept,
        # Ignored by Codex; tells a reader (and `doctor`) what this file was made from.
        "generated_by": {
            "tool": "deepseek-proxy",
            "version": __version__,
            "codex_version": codex_version,
            "template": template.get("slug"),
        },
    }


def catalog_slugs(catalog: Mapping[str, Any]) -> list[str]:
    # Only string slugs: a (template) entry without one is no model Codex can pick, and would break a ", ".join().
    return [m["slug"] for m in catalog.get("models", []) if isinstance(m, dict) and isinstance(m.get("slug"), str)]


# ------------------------------------------------------------------------------------ the installed Codex

def find_codex(env: Mapping[str, str] = os.environ) -> Path | None:
    """The `codex` executable: $DEEPSEEK_PROXY_CODEX_BIN if set, else the first `codex` on PATH."""
    explicit = env.get(CODEX_BIN_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        return path if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which("codex", path=env.get("PATH", os.defpath))
    return Path(found) if found else None


def codex_missing_message(env: Mapping[str, str] = os.environ) -> str:
    if env.get(CODEX_BIN_ENV):
        return f"{CODEX_BIN_ENV}={env[CODEX_BIN_ENV]} is not an executable file"
    return "the Codex CLI (`codex`) is not on PATH"


def run_codex(codex: Path, args: list[str], *, env: Mapping[str, str] = os.environ,
              codex_home: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `codex ARGS`. Without `codex_home`, CODEX_HOME is an empty scratch directory, removed afterwards:
    the commands used here (--version, debug models) do not need the user's config, and Codex sets up helper
    files in its home at every start, which `setup --dry-run` and `doctor` must not do to the user's. (Under a
    temp dir Codex skips those helpers with a warning on stderr.)"""
    child_env = dict(env)
    with tempfile.TemporaryDirectory(prefix="deepseek-proxy-codex-") as scratch:
        child_env["CODEX_HOME"] = str(codex_home or scratch)
        return subprocess.run([str(codex), *args], env=child_env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, check=False)


def codex_version(codex: Path, *, env: Mapping[str, str] = os.environ) -> str:
    """`codex --version` → "0.169.0" (it prints "codex-cli 0.169.0")."""
    result = run_codex(codex, ["--version"], env=env)
    match = re.search(r"(\d+\.\d+\.\d+\S*)", result.stdout)
    if result.returncode != 0 or not match:
        raise CatalogUnavailable(f"`{codex} --version` failed (exit {result.returncode}): "
                                 f"{(result.stderr or result.stdout).strip()[:300]}")
    return match.group(1)


def read_bundled(codex: Path, *, env: Mapping[str, str] = os.environ) -> Bundled:
    """Run `codex debug models --bundled` (~50 ms; independent of the user's config.toml)."""
    version = codex_version(codex, env=env)
    result = run_codex(codex, ["debug", "models", "--bundled"], env=env)
    try:
        catalog = json.loads(result.stdout)
    except ValueError:
        catalog = None
    if result.returncode != 0 or not isinstance(catalog, dict) or not isinstance(catalog.get("models"), list):
        raise CatalogUnavailable(f"`codex debug models --bundled` (Codex {version}) gave no catalog "
                                 f"(exit {result.returncode}): {result.stderr.strip()[-300:]}")
    return Bundled(catalog, version, f"Codex {version} at {codex}")


# ------------------------------------------------------------------------ snapshots for the catalog server
# `codex setup` saves the bundled catalog it used, so the proxy can serve the catalog (model_catalog_url) even
# when it runs where `codex` is not on PATH (a service manager's environment, another user).

def snapshot_dir(env: Mapping[str, str] = os.environ) -> Path:
    return default_state_dir(env) / "codex"


def save_snapshot(bundled: Bundled, env: Mapping[str, str] = os.environ) -> Path:
    directory = snapshot_dir(env)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"bundled-{_safe_version(bundled.codex_version)}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(bundled.catalog))
    os.replace(tmp, path)
    return path


def load_snapshot(env: Mapping[str, str] = os.environ, version: str | None = None) -> Bundled | None:
    """The snapshot for `version`, or (version None) the newest one; None when there is none."""
    directory = snapshot_dir(env)
    if version:
        paths = [directory / f"bundled-{_safe_version(version)}.json"]
    else:
        paths = sorted(directory.glob("bundled-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in paths:
        try:
            catalog = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(catalog, dict) and isinstance(catalog.get("models"), list):
            found_version = path.stem[len("bundled-"):]
            return Bundled(catalog, found_version, f"snapshot {path}")
    return None


def _safe_version(version: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]", "_", version)


def load_bundled(env: Mapping[str, str] = os.environ, *, client_version: str | None = None) -> Bundled:
    """A bundled catalog for the catalog server: the snapshot of the asking Codex's version if there is one,
    else the `codex` this process can run, else the newest snapshot."""
    if client_version:
        exact = load_snapshot(env, client_version)
        if exact is not None:
            return exact
    codex = find_codex(env)
    errors = []
    if codex is not None:
        try:
            return read_bundled(codex, env=env)
        except (CatalogUnavailable, OSError, subprocess.TimeoutExpired) as exc:
            errors.append(str(exc))
    else:
        errors.append(codex_missing_message(env))
    newest = load_snapshot(env)
    if newest is not None:
        return newest
    raise CatalogUnavailable(
        f"no Codex catalog to build from ({'; '.join(errors)}, and no snapshot in {snapshot_dir(env)}). "
        f"Install Codex ({INSTALL_HINT}) where the proxy runs, set {CODEX_BIN_ENV}, "
        f"or run `deepseek-proxy codex setup` once as the proxy's user."
    )
