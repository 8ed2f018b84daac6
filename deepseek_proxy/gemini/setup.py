"""`deepseek-proxy gemini setup`: point Gemini CLI at this proxy.

Two files in the Gemini home (`--gemini-home`, else $GEMINI_CLI_HOME/.gemini, else ~/.gemini):
- settings.json: `security.auth.selectedType = "gemini-api-key"`; with `--offline` also usage statistics, telemetry,
  auto-update and the update notification off (the user's choice: they are Gemini CLI's own traffic to Google).
  Everything else is kept; the file is re-written as JSON with two-space indents (as Gemini CLI writes it). A file
  with comments (Gemini CLI tolerates them) is refused rather than stripped of them.
- .env: GOOGLE_GEMINI_BASE_URL (the proxy's root URL) and GEMINI_API_KEY; other lines keep their bytes and order.
Each changed file is backed up as `<name>.bak-<timestamp>`; a second run changes nothing. Key values never reach the
terminal.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from .. import clientconfig
from ..clientconfig import NO_KEY_TOKEN, KeyPlan, SetupRefused, key_plan, proxy_base_url
from ..config import Config

SETTINGS_FILE = "settings.json"
ENV_FILE = ".env"
SETUP_COMMAND = "gemini setup"
BASE_URL_VAR = "GOOGLE_GEMINI_BASE_URL"
KEY_VAR = "GEMINI_API_KEY"
AUTH_TYPE = "gemini-api-key"
# (path in settings.json, value) for --offline: Gemini CLI's own calls to Google (0.61's settings schema).
OFFLINE_SETTINGS: tuple[tuple[tuple[str, ...], Any], ...] = (
    (("privacy", "usageStatisticsEnabled"), False),
    (("telemetry", "enabled"), False),
    (("general", "enableAutoUpdate"), False),
    (("general", "enableAutoUpdateNotification"), False),
)


def resolve_gemini_home(gemini_home: Path | str | None, env: Mapping[str, str] = os.environ) -> Path:
    """--gemini-home, else $GEMINI_CLI_HOME/.gemini (Gemini CLI's own override of the home), else ~/.gemini."""
    return clientconfig.client_home(gemini_home, env, "GEMINI_CLI_HOME", ".gemini", inside=".gemini")


# ------------------------------------------------------------------------------------- what to write (pure)

def key_value(config: Config, existing: str | None, env: Mapping[str, str]) -> KeyPlan:
    """The key Gemini CLI must send as GEMINI_API_KEY (clientconfig.key_plan). Gemini CLI refuses to start without
    a key, so a proxy that asks for none gets a placeholder."""
    return key_plan(config, existing, env, client="Gemini CLI", command=SETUP_COMMAND, where=ENV_FILE)


def parse_settings(text: str | None, where: str) -> dict:
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SetupRefused(f"{where} is not plain JSON ({exc.msg} at line {exc.lineno}); comments are not kept by "
                           f"this edit. Nothing was changed: set security.auth.selectedType to \"{AUTH_TYPE}\" by "
                           f"hand, or remove the comments and run again.") from None
    if not isinstance(data, dict):
        raise SetupRefused(f"{where} does not hold a JSON object. Nothing was changed.")
    return data


def merged_settings(data: dict, *, offline: bool, where: str) -> tuple[dict, list[str]]:
    """A copy of `data` with our settings, and the dotted names that changed."""
    out = json.loads(json.dumps(data))
    changed = []
    wanted = [(("security", "auth", "selectedType"), AUTH_TYPE)] + (list(OFFLINE_SETTINGS) if offline else [])
    for path, value in wanted:
        node = out
        for i, key in enumerate(path[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise SetupRefused(f"{where}: `{'.'.join(path[:i + 1])}` is not an object. Nothing was changed.")
            node = child
        if node.get(path[-1]) != value:
            node[path[-1]] = value
            changed.append(".".join(path))
    return out, changed


def render_settings(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _env_line_name(line: str) -> str | None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    stripped = stripped.removeprefix("export ").lstrip()
    name, sep, _ = stripped.partition("=")
    return name.strip() if sep else None


def parse_env(text: str | None) -> dict[str, str]:
    """The variables of a .env file, as dotenv reads the simple forms (NAME=value, quoted values, `export`)."""
    values: dict[str, str] = {}
    for line in (text or "").splitlines():
        name = _env_line_name(line)
        if name is None:
            continue
        value = line.split("=", 1)[1].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        values[name] = value
    return values


def merged_env(text: str | None, entries: Mapping[str, str]) -> str:
    """`text` with each entry's line replaced in place (the last one of that name), or appended."""
    lines = (text or "").splitlines()
    done = set()
    for i in reversed(range(len(lines))):
        name = _env_line_name(lines[i])
        if name is not None and name in entries and name not in done:
            lines[i] = f"{name}={_quoted(entries[name])}"
            done.add(name)
    lines += [f"{name}={_quoted(value)}" for name, value in entries.items() if name not in done]
    return "\n".join(lines) + "\n"


def _quoted(value: str) -> str:
    return value if value and all(c.isalnum() or c in "-_./:@+=" for c in value) else json.dumps(value)


# ------------------------------------------------------------------------------------------ the command

def run_setup(config: Config, *, gemini_home: Path | None, dry_run: bool, offline: bool = False,
              proxy_url: str | None = None, out: TextIO = sys.stdout, env: Mapping[str, str] | None = None) -> int:
    """`deepseek-proxy gemini setup [--dry-run] [--offline] [--gemini-home DIR] [--proxy-url URL]`."""
    env = os.environ if env is None else env
    home = resolve_gemini_home(gemini_home, env)
    settings_path, env_path = home / SETTINGS_FILE, home / ENV_FILE
    try:
        old_settings = clientconfig.read_text(settings_path, SETUP_COMMAND)
        new_data, changed = merged_settings(parse_settings(old_settings, str(settings_path)), offline=offline,
                                            where=str(settings_path))
        old_env = clientconfig.read_text(env_path, SETUP_COMMAND)
        current = parse_env(old_env)
        key = key_value(config, current.get(KEY_VAR), env)
    except SetupRefused as exc:
        print(f"deepseek-proxy gemini setup: {exc}", file=out)
        return 1
    base_url = proxy_base_url(config, proxy_url)
    entries = {BASE_URL_VAR: base_url}
    if key.value is not None:
        entries[KEY_VAR] = key.value
    new_env = merged_env(old_env, entries)
    new_settings = render_settings(new_data) if changed or old_settings is None else old_settings
    env_changed = parse_env(new_env) != current or old_env is None

    print(f"Gemini CLI home: {home}", file=out)
    print(f"{BASE_URL_VAR} → {base_url}; {KEY_VAR} from {key.source}; auth type {AUTH_TYPE}"
          + ("; telemetry, usage statistics and auto-update off" if offline else ""), file=out)
    if not changed and old_settings is not None and not env_changed:
        print("Gemini CLI already points at the proxy: nothing to change.", file=out)
        return 0
    if dry_run:
        if changed or old_settings is None:
            print(f"{settings_path}: set " + (", ".join(changed) or "(new file)"), file=out)
        for name, value in entries.items():
            if current.get(name) != value:
                shown = value if name != KEY_VAR or value == NO_KEY_TOKEN else f"<secret: {len(value)} chars>"
                print(f"{env_path}: {name}={shown}", file=out)
        print("(dry run: nothing was written)", file=out)
        return 0
    try:
        for path, old, new, private in ((settings_path, old_settings, new_settings, False),
                                        (env_path, old_env, new_env, key.value not in (None, NO_KEY_TOKEN))):
            if old == new:
                continue
            if old is not None:
                backup = clientconfig.backup_path(path)
                clientconfig.write_atomically(backup, old, private=True)
                print(f"  updated    {path}  (backup: {backup.name})", file=out)
            else:
                print(f"  created    {path}", file=out)
            clientconfig.write_atomically(path, new, private=private or path == env_path)
    except OSError as exc:
        print(f"deepseek-proxy gemini setup: cannot write: {exc.strerror or exc}", file=out)
        return 1
    print("\nGemini CLI reads ~/.gemini/.env only in folders it trusts (elsewhere it stops with \"you must specify "
          "the GEMINI_API_KEY\") and when the project has no .env of its own; the shell's variables always win. "
          "To work in every folder, export them in your shell profile instead:", file=out)
    print(f"  export {BASE_URL_VAR}={shlex.quote(base_url)}", file=out)
    print(f"  export {KEY_VAR}=<the key in {env_path}>", file=out)
    clientconfig.print_next_steps(config, "gemini", out)
    return 0
