"""`deepseek-proxy codex setup`: point the installed Codex CLI at this proxy.

It merges into `$CODEX_HOME` (default `~/.codex`):

* `config.toml`: a `[model_providers.deepseek-proxy]` table (Responses wire API, the proxy's base URL, the key
  variable Codex must send, and `model_catalog_url` when the proxy serves the catalog). Nothing else in the file
  changes: the user's default model and provider stay as they were.
* one profile file per proxy model, `<model>.config.toml`, so `codex -p deepseek-v4-pro` works (Codex 0.169 reads
  profiles from these files, not from `[profiles.*]` tables).
* `deepseek-proxy/model_catalog.json` when `codex.catalog = "file"` (referenced from the profile files only, so
  the user's other Codex sessions keep the bundled catalog).

The merge edits the files with tomlkit, so comments, ordering and unrelated settings survive; then it re-reads the
result and checks that it means exactly the original plus our intended changes, and refuses otherwise. Existing
files are backed up as `NAME.bak-<timestamp>` before they change; a second run changes nothing.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import tomlkit
from tomlkit.exceptions import TOMLKitError

from ..clientconfig import (  # noqa: F401 - NO_KEY_TOKEN, KeyChoice: where tests and older imports look for them
    NO_KEY_TOKEN,
    KeyChoice,
    SetupRefused,
    backup_path,
    client_home,
    key_choice,
    read_text,
    write_atomically,
)
from ..config import Config, ModelConfig
from . import catalog as catalog_mod

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROVIDER_ID = "deepseek-proxy"
SETUP_COMMAND = "codex setup"
# Never "OpenAI": Codex switches a provider of that name to OpenAI-only remote compaction (/responses/compact).
PROVIDER_NAME = "DeepSeek proxy"
CATALOG_PATH = "/codex/models.json"  # under the proxy's public base URL (…/v1)
CATALOG_DIR = "deepseek-proxy"  # inside CODEX_HOME, holds the catalog file
HEADER = (
    "Written by `deepseek-proxy codex setup`; re-run it after changing the proxy's config.",
    "The keys it manages are rewritten; anything else you add here is kept.",
)


# ------------------------------------------------------------------------------------- what to write (pure)

def resolve_codex_home(codex_home: Path | str | None, env: Mapping[str, str] = os.environ) -> Path:
    """--codex-home, else $CODEX_HOME, else ~/.codex; absolute, because the catalog path written into the
    profile files must not depend on the directory Codex is started from."""
    return client_home(codex_home, env, "CODEX_HOME", ".codex")


def catalog_url(config: Config) -> str:
    return config.public_base_url() + CATALOG_PATH


def catalog_file(codex_home: Path) -> Path:
    return codex_home / CATALOG_DIR / catalog_mod.CATALOG_FILE_NAME


def profile_name(model_id: str) -> str:
    """The `codex -p` name for a model: its id, made safe as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model_id).strip("-.") or "model"


def profile_file(codex_home: Path, model_id: str) -> Path:
    return codex_home / f"{profile_name(model_id)}.config.toml"


def provider_settings(config: Config, *, websockets: bool = False) -> tuple[dict[str, Any], set[str]]:
    """(keys to set, keys to remove) in `[model_providers.deepseek-proxy]`. `websockets`: Codex talks Responses
    over one WebSocket per session (frontdoors/responses_ws.py) and, from its second request on, sends only the
    new input items; without it the key is removed, so running setup again without the option turns it off."""
    key = key_choice(config)
    settings: dict[str, Any] = {
        "name": PROVIDER_NAME,
        "base_url": config.public_base_url(),
        "wire_api": "responses",  # Codex rejects "chat" at start-up
    }
    remove: set[str] = set()
    if websockets:
        settings["supports_websockets"] = True
    else:
        remove.add("supports_websockets")
    if key.env_key:
        settings["env_key"] = key.env_key
        settings["env_key_instructions"] = key.instructions
        remove.add("experimental_bearer_token")
    else:
        remove |= {"env_key", "env_key_instructions", "experimental_bearer_token"}
        if config.codex.catalog == "url":
            # Codex fetches model_catalog_url only for a provider with some credential; with none it silently
            # skips the catalog. The proxy asks for no key here, so any fixed token does.
            settings["experimental_bearer_token"] = NO_KEY_TOKEN
            remove.discard("experimental_bearer_token")
    if config.codex.catalog == "url":
        # Only honoured inside the provider table (top level and profile files ignore it).
        settings["model_catalog_url"] = catalog_url(config)
    else:
        remove.add("model_catalog_url")
    return settings, remove


def profile_settings(config: Config, model: ModelConfig, codex_home: Path) -> tuple[dict[str, Any], set[str]]:
    """(keys to set, keys to remove) in a model's profile file."""
    settings: dict[str, Any] = {"model": model.id, "model_provider": PROVIDER_ID}
    remove: set[str] = set()
    if config.codex.catalog == "file":
        settings["model_catalog_json"] = str(catalog_file(codex_home))
    else:
        remove.add("model_catalog_json")
    return settings, remove


# ------------------------------------------------------------------------------------------ merging (pure)

@dataclass
class Merge:
    text: str
    notes: list[str] = field(default_factory=list)  # what we changed that the user should know about
    warnings: list[str] = field(default_factory=list)  # problems we leave to the user
    legacy_profiles: dict[str, dict] = field(default_factory=dict)  # [profiles.NAME] moved out of config.toml


def parse_toml(text: str, where: str) -> tuple[tomlkit.TOMLDocument, dict]:
    """Both views of a TOML file: tomlkit's (to edit) and the plain one (to check meaning). Refuses broken files."""
    try:
        plain = tomllib.loads(text)
        doc = tomlkit.parse(text)
    except (tomllib.TOMLDecodeError, TOMLKitError, ValueError) as exc:
        raise SetupRefused(f"{where} is not valid TOML ({exc}). Nothing was changed; fix or move the file "
                           f"away and run `deepseek-proxy codex setup` again.") from None
    return doc, plain


def _set_keys(table: Any, settings: Mapping[str, Any], remove: set[str]) -> list[str]:
    """Set/remove keys in a tomlkit table, touching only values that differ (keeps their comments)."""
    changed = []
    for key, value in settings.items():
        current = table.get(key)
        current = current.unwrap() if hasattr(current, "unwrap") else current
        if current != value:
            table[key] = value
            changed.append(key)
    for key in sorted(remove):
        if key in table:
            del table[key]
            changed.append(key)
    return changed


def merge_main_config(text: str, *, settings: Mapping[str, Any], remove: set[str],
                      profile_names: set[str], where: str = "config.toml") -> Merge:
    """Merge our provider into config.toml's text; move legacy `[profiles.NAME]` tables for our profile names out."""
    doc, plain = parse_toml(text, where)
    expected = copy.deepcopy(plain)
    result = Merge(text)

    if not isinstance(plain.get("model_providers", {}), dict) or not isinstance(
            plain.get("model_providers", {}).get(PROVIDER_ID, {}), dict):
        raise SetupRefused(f"{where}: `model_providers` or `model_providers.{PROVIDER_ID}` is not a table; "
                           f"fix that by hand and run setup again. Nothing was changed.")

    # Our provider table: fix in place if it exists, else append it as a new table at the end.
    providers = doc.get("model_providers")
    ours = providers.get(PROVIDER_ID) if isinstance(providers, MutableMapping) else None  # tomlkit (inline) table
    if ours is not None:
        old = plain["model_providers"][PROVIDER_ID]
        if old.get("wire_api") == "chat":
            result.notes.append(f'changed wire_api "chat" to "responses" in [model_providers.{PROVIDER_ID}] '
                                f"(Codex refuses to start with \"chat\")")
        if str(old.get("name", "")).lower() == "openai":
            result.notes.append(f'renamed provider "{old.get("name")}" to "{PROVIDER_NAME}" (Codex treats a provider '
                                f'named "OpenAI" as OpenAI itself and calls /responses/compact)')
        _set_keys(ours, settings, remove)
    exp_provider = expected.setdefault("model_providers", {}).setdefault(PROVIDER_ID, {})
    exp_provider.update(settings)
    for key in remove:
        exp_provider.pop(key, None)

    # Legacy profile tables with our names make `codex -p NAME` fail; their settings move to the profile file.
    legacy_tables = doc.get("profiles")
    if isinstance(legacy_tables, MutableMapping) and isinstance(plain.get("profiles"), dict):
        for name in sorted(profile_names):
            if name in legacy_tables and isinstance(plain["profiles"].get(name), dict):
                result.legacy_profiles[name] = plain["profiles"][name]
                del legacy_tables[name]
                del expected["profiles"][name]
                result.notes.append(f"moved [profiles.{name}] from {where} into {name}.config.toml "
                                    f"(Codex 0.169 refuses `-p {name}` while that table exists)")
        if result.legacy_profiles and not legacy_tables:  # we emptied it: drop the bare [profiles] too
            del doc["profiles"]
            del expected["profiles"]

    new_text = tomlkit.dumps(doc)
    if ours is None:
        new_text = _append_block(new_text, provider_block(settings))

    # Problems in the user's own settings that we do not touch.
    for pid, provider in (plain.get("model_providers") or {}).items():
        if pid != PROVIDER_ID and isinstance(provider, dict) and provider.get("wire_api") == "chat":
            result.warnings.append(
                f'[model_providers.{pid}] has wire_api = "chat": Codex refuses to start at all while any provider '
                f'has it. Change it to "responses" or delete that provider.')
    if "profile" in plain:
        result.warnings.append(
            f'{where} has a top-level `profile = "{plain["profile"]}"`: Codex 0.169 refuses to start with it. '
            f"Delete that line and use `codex -p NAME` instead.")

    result.text = _checked(new_text, expected, where, original=text, fallback=provider_block(settings))
    return result


def merge_profile_config(text: str | None, *, settings: Mapping[str, Any], remove: set[str],
                         legacy: Mapping[str, Any] | None = None, where: str = "profile") -> Merge:
    """Merge our keys into a profile file (new when `text` is None); `legacy` settings fill in what is missing."""
    if text is None:
        doc: Any = tomlkit.document()
        for line in HEADER:
            doc.add(tomlkit.comment(line))
        plain: dict = {}
    else:
        doc, plain = parse_toml(text, where)
    expected = copy.deepcopy(plain)
    result = Merge(text or "")
    for key, value in (legacy or {}).items():
        if key in settings or key in remove:
            if key in settings and value != settings[key]:
                result.notes.append(f"{where}: the old profile's {key} = {value!r} is replaced by {settings[key]!r}")
            continue
        if key not in doc:
            doc[key] = value
            expected[key] = copy.deepcopy(value)
    _set_keys(doc, settings, remove)
    expected.update(settings)
    for key in remove:
        expected.pop(key, None)
    result.text = _checked(tomlkit.dumps(doc), expected, where, original=text)
    return result


def provider_block(settings: Mapping[str, Any]) -> str:
    body = tomlkit.dumps({"model_providers": {PROVIDER_ID: dict(settings)}})
    return "".join(f"# {line}\n" for line in HEADER) + body


def _append_block(text: str, block: str) -> str:
    if not text.strip():
        return block
    return text.rstrip("\n") + "\n\n" + block


def _checked(new_text: str, expected: dict, where: str, *, original: str | None,
             fallback: str | None = None) -> str:
    """The merged text, if it means exactly what we intended; else refuse (never write a surprise)."""
    if new_text != original:  # tidy only what we rewrite: one final newline, no blank tail
        new_text = new_text.rstrip("\n") + "\n" if new_text.strip() else ""
    try:
        actual = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError:
        actual = None
    if actual != expected:
        hint = f" Add this by hand instead:\n\n{fallback}" if fallback else ""
        raise SetupRefused(f"{where} is laid out in a way this tool cannot merge into safely (for example dotted "
                           f"or inline tables for model_providers). Nothing was changed.{hint}")
    return new_text


# --------------------------------------------------------------------------------------------- the plan

@dataclass
class FileChange:
    path: Path
    old: str | None  # None: the file does not exist yet
    new: str
    summary: str = ""  # for big generated files: shown instead of a diff
    backup: bool = True


@dataclass
class Plan:
    codex_home: Path
    changes: list[FileChange]
    notes: list[str]
    warnings: list[str]
    bundled: catalog_mod.Bundled | None


def plan_setup(config: Config, codex_home: Path, bundled: catalog_mod.Bundled | None, *,
               websockets: bool = False) -> Plan:
    """Everything setup would write, computed from the current files; nothing is written here."""
    changes: list[FileChange] = []
    notes: list[str] = []
    warnings: list[str] = []
    names = {profile_name(m.id): m for m in config.models.values()}
    if len(names) != len(config.models):
        raise SetupRefused("two model ids map to the same profile file name; rename one of them in the proxy config")

    main_path = codex_home / "config.toml"
    main_old = read_text(main_path, SETUP_COMMAND)
    settings, remove = provider_settings(config, websockets=websockets)
    main = merge_main_config(main_old or "", settings=settings, remove=remove, profile_names=set(names),
                             where=str(main_path))
    changes.append(FileChange(main_path, main_old, main.text))
    notes += main.notes
    warnings += main.warnings

    for name, model in names.items():
        path = profile_file(codex_home, model.id)
        old = read_text(path, SETUP_COMMAND)
        p_settings, p_remove = profile_settings(config, model, codex_home)
        merged = merge_profile_config(old, settings=p_settings, remove=p_remove,
                                      legacy=main.legacy_profiles.get(name), where=str(path))
        changes.append(FileChange(path, old, merged.text))
        notes += merged.notes

    if config.codex.catalog == "file":
        if bundled is None:
            raise SetupRefused("the catalog file needs the installed Codex's bundled catalog")
        built = catalog_mod.build_catalog(config, bundled.catalog, codex_version=bundled.codex_version)
        path = catalog_file(codex_home)
        ours = len(config.models)
        summary = (f"{ours} proxy model(s) {', '.join(catalog_mod.catalog_slugs(built)[:ours])} + "
                   f"{len(built['models']) - ours} bundled, template {built['generated_by']['template']} "
                   f"from Codex {bundled.codex_version}")
        changes.append(FileChange(path, read_text(path, SETUP_COMMAND), json.dumps(built, indent=1) + "\n", summary,
                                  backup=False))
    return Plan(codex_home, changes, notes, warnings, bundled)


# --------------------------------------------------------------------------------------------- writing

def apply_plan(plan: Plan, out: TextIO) -> None:
    for change in plan.changes:
        rel = _rel(change.path, plan.codex_home)
        if change.old == change.new:
            print(f"  unchanged  {rel}", file=out)
            continue
        if change.old is not None and change.backup:
            backup = backup_path(change.path)
            backup.write_text(change.old, encoding="utf-8")
            write_atomically(change.path, change.new)
            print(f"  updated    {rel}  (backup: {backup.name})", file=out)
        else:
            write_atomically(change.path, change.new)
            verb = "created" if change.old is None else "rewrote"
            print(f"  {verb:<10} {rel}" + (f"  ({change.summary})" if change.summary else ""), file=out)


def show_diff(plan: Plan, out: TextIO) -> None:
    for change in plan.changes:
        rel = _rel(change.path, plan.codex_home)
        if change.old == change.new:
            print(f"# unchanged: {rel}", file=out)
        elif change.summary:
            print(f"# would {'create' if change.old is None else 'rewrite'}: {rel} ({change.summary})", file=out)
        else:
            diff = difflib.unified_diff(
                (change.old or "").splitlines(keepends=True), change.new.splitlines(keepends=True),
                fromfile=f"a/{rel}" if change.old is not None else "/dev/null", tofile=f"b/{rel}")
            text = "".join(diff)
            out.write(text if text.endswith("\n") else text + "\n")


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------------------ the command

def run_setup(config: Config, *, codex_home: Path | None, dry_run: bool, out: TextIO = sys.stdout,
              env: Mapping[str, str] | None = None, websockets: bool = False) -> int:
    """`deepseek-proxy codex setup [--dry-run] [--websockets]`. Returns the exit code."""
    env = os.environ if env is None else env
    home = resolve_codex_home(codex_home, env)
    codex = catalog_mod.find_codex(env)
    if codex is None:
        print(f"deepseek-proxy codex setup: {catalog_mod.codex_missing_message(env)}.\n"
              f"Install the Codex CLI first:  {catalog_mod.INSTALL_HINT}\nThen run this command again.", file=out)
        return 1
    try:
        bundled = catalog_mod.read_bundled(codex, env=env)
    except (catalog_mod.CatalogUnavailable, OSError) as exc:
        print(f"deepseek-proxy codex setup: cannot read Codex's model catalog: {exc}", file=out)
        return 1
    try:
        plan = plan_setup(config, home, bundled, websockets=websockets)
    except SetupRefused as exc:
        print(f"deepseek-proxy codex setup: {exc}", file=out)
        return 1

    profiles = [profile_name(m) for m in config.models]
    key = key_choice(config)
    print(f"Codex {bundled.codex_version} ({codex}); CODEX_HOME {home}", file=out)
    print(f"provider `{PROVIDER_ID}` → {config.public_base_url()}; catalog: "
          f"{catalog_url(config) if config.codex.catalog == 'url' else catalog_file(home)}"
          f"{'; transport: WebSocket (HTTP as fallback)' if websockets else ''}", file=out)
    if dry_run:
        show_diff(plan, out)
    else:
        apply_plan(plan, out)
        try:
            catalog_mod.save_snapshot(bundled, env)  # lets the proxy serve the catalog without `codex` on PATH
        except OSError as exc:
            plan.warnings.append(f"could not save the Codex catalog snapshot for the proxy: {exc}")
    for note in plan.notes:
        print(f"note: {note}", file=out)
    for warning in plan.warnings:
        print(f"warning: {warning}", file=out)
    if dry_run:
        print("(dry run: nothing was written)", file=out)
        return 0
    print("\nNext:", file=out)
    if key.env_key and not env.get(key.env_key):
        print(f"  export {key.env_key}=…        # {key.instructions}", file=out)
    if config.public_url:  # a proxy elsewhere (behind nginx): nothing to start here, and doctor must look there
        print(f"  codex -p {profiles[0]}" if profiles else "", file=out)
        print(f"  deepseek-proxy doctor --proxy-url {config.public_url}   # checks every step", file=out)
        return 0
    print("  deepseek-proxy serve           # if it is not running yet", file=out)
    print(f"  codex -p {profiles[0]}" if profiles else "", file=out)
    print("  deepseek-proxy doctor          # checks every step", file=out)
    return 0
