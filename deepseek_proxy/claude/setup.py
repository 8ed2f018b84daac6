"""`deepseek-proxy claude setup`: point Claude Code at this proxy.

It merges into Claude Code's user settings (`$CLAUDE_CONFIG_DIR/settings.json`, default `~/.claude/settings.json`)
the `env` entries Claude Code needs to talk to the proxy: the base URL, the key, the model names, and the switch
that keeps the prompt prefix cacheable (see `deepseek_proxy.claude`). Nothing else in the file changes: the edit
replaces only the text of the top-level `env` object (or inserts one), so the other settings keep their bytes,
order and layout; inside `env`, keys we set keep their place and new ones go at the end. The result is re-read and
must mean exactly the original plus our entries, else nothing is written. The old file is kept as
`settings.json.bak-<timestamp>`; a second run changes nothing. The key's value never reaches the terminal.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..clientconfig import (  # noqa: F401 - KeyPlan, proxy_base_url: where tests and older imports look for them
    NO_KEY_TOKEN,
    KeyPlan,
    SetupRefused,
    backup_path,
    client_home,
    key_plan,
    print_next_steps,
    proxy_base_url,
    read_text,
    write_atomically,
)
from ..config import Config

SETTINGS_FILE = "settings.json"
SETUP_COMMAND = "claude setup"
BASE_URL_VAR = "ANTHROPIC_BASE_URL"
TOKEN_VAR = "ANTHROPIC_AUTH_TOKEN"  # sent as `Authorization: Bearer`; the proxy accepts it like x-api-key
API_KEY_VAR = "ANTHROPIC_API_KEY"  # set to "" by setup (see env_entries)
KEY_VARS = (TOKEN_VAR, API_KEY_VAR)
MAIN_MODEL_VARS = ("ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_OPUS_MODEL", "ANTHROPIC_DEFAULT_SONNET_MODEL")
FAST_MODEL_VARS = ("ANTHROPIC_DEFAULT_HAIKU_MODEL", "CLAUDE_CODE_SUBAGENT_MODEL")
MODEL_VARS = MAIN_MODEL_VARS + FAST_MODEL_VARS
ATTRIBUTION_VAR = "CLAUDE_CODE_ATTRIBUTION_HEADER"
PREFERRED_MAIN = "deepseek-v4-pro"
PREFERRED_FAST = "deepseek-v4-flash"


# ------------------------------------------------------------------------------------- what to write (pure)

def resolve_claude_home(claude_home: Path | str | None, env: Mapping[str, str] = os.environ) -> Path:
    """--claude-home, else $CLAUDE_CONFIG_DIR, else ~/.claude: the directory that holds settings.json."""
    return client_home(claude_home, env, "CLAUDE_CONFIG_DIR", ".claude")


def model_roles(config: Config) -> tuple[str, str]:
    """(main model, fast model) among those the proxy serves: deepseek-v4-pro / deepseek-v4-flash when served,
    else the first model whose name says pro / flash, else the first model for both."""
    ids = list(config.models)
    if not ids:
        raise SetupRefused("the proxy config serves no models; add one under [models] first")

    def pick(preferred: str, word: str, fallback: str) -> str:
        if preferred in ids:
            return preferred
        return next((m for m in ids if word in m.lower()), fallback)

    main = pick(PREFERRED_MAIN, "pro", ids[0])
    return main, pick(PREFERRED_FAST, "flash", main)


def key_value(config: Config, current: Mapping[str, Any], env: Mapping[str, str]) -> KeyPlan:
    """The token Claude Code must send as ANTHROPIC_AUTH_TOKEN (clientconfig.key_plan)."""
    return key_plan(config, current.get(TOKEN_VAR), env, client="Claude Code", command=SETUP_COMMAND,
                    where=SETTINGS_FILE)


def env_entries(config: Config, current_env: Mapping[str, Any], *, proxy_url: str | None,
                env: Mapping[str, str]) -> tuple[dict[str, str], set[str], KeyPlan]:
    """(entries to set, entries to remove, where the key comes from) in settings.json's `env`."""
    main, fast = model_roles(config)
    key = key_value(config, current_env, env)
    entries: dict[str, str] = {BASE_URL_VAR: proxy_base_url(config, proxy_url)}
    if key.value is not None:
        entries[TOKEN_VAR] = key.value
    entries.update({var: main for var in MAIN_MODEL_VARS})
    entries.update({var: fast for var in FAST_MODEL_VARS})
    entries[ATTRIBUTION_VAR] = "0"
    # With both variables set Claude Code sends both headers, so an ANTHROPIC_API_KEY -- here or in the shell --
    # would hand the user's real Anthropic key to the proxy as x-api-key. An empty value here blanks the shell's
    # (measured with 2.1.197: then only the Bearer token is sent). The backup keeps a value we replace.
    entries[API_KEY_VAR] = ""
    return entries, set(), key


# ------------------------------------------------------------------------- editing JSON text in place (pure)

@dataclass
class Member:
    key: str
    key_start: int
    value_start: int
    value_end: int


@dataclass
class TopLevel:
    open_brace: int
    close_brace: int
    members: list[Member] = field(default_factory=list)


_DECODER = json.JSONDecoder()
_WS = " \t\r\n"


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def scan_top_level(text: str) -> TopLevel:
    """Where each member of the top-level object sits in `text` (which must already parse as an object)."""
    pos = _skip_ws(text, 0)
    top = TopLevel(pos, -1)
    pos = _skip_ws(text, pos + 1)
    if text[pos] == "}":
        top.close_brace = pos
        return top
    while True:
        key_start = pos
        key, pos = _DECODER.raw_decode(text, pos)
        pos = _skip_ws(text, pos) + 1  # past ':'
        value_start = _skip_ws(text, pos)
        _, value_end = _DECODER.raw_decode(text, value_start)
        top.members.append(Member(key, key_start, value_start, value_end))
        pos = _skip_ws(text, value_end)
        if text[pos] == "}":
            top.close_brace = pos
            return top
        pos = _skip_ws(text, pos + 1)  # past ','


def indent_unit(text: str, top: TopLevel) -> str | None:
    """The file's indentation step (the whitespace before the first member on its own line); None when the
    object is written on one line."""
    if not top.members:
        return None
    first = top.members[0].key_start
    line_start = text.rfind("\n", top.open_brace, first)
    if line_start < 0:
        return None
    return text[line_start + 1:first]


def render_env(env_obj: Mapping[str, Any], unit: str | None) -> str:
    """The `env` object as text, for the file's layout (one level of nesting deep)."""
    if unit is None:
        return json.dumps(env_obj, ensure_ascii=False)
    if not env_obj:
        return "{}"
    return json.dumps(env_obj, indent=unit, ensure_ascii=False).replace("\n", "\n" + unit)


def parse_settings(text: str, where: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SetupRefused(f"{where} is not valid JSON ({exc}). Nothing was changed; fix the file (or move it "
                           f"away) and run `deepseek-proxy claude setup` again.") from None
    if not isinstance(data, dict):
        raise SetupRefused(f"{where} holds a JSON {type(data).__name__}, not an object. Nothing was changed; fix "
                           f"the file (or move it away) and run `deepseek-proxy claude setup` again.")
    if "env" in data and not isinstance(data["env"], dict):
        raise SetupRefused(f"{where}: `env` is not an object. Nothing was changed; fix it by hand and run "
                           f"`deepseek-proxy claude setup` again.")
    return data


@dataclass
class Merge:
    text: str
    changed: list[str]  # env names set or removed


def merge_settings(text: str | None, entries: Mapping[str, str], remove: set[str],
                   where: str = SETTINGS_FILE) -> Merge:
    """settings.json's text with `entries` set and `remove` dropped in its top-level `env` (pure)."""
    if text is None or not text.strip():
        new_env = dict(entries)
        return Merge(json.dumps({"env": new_env}, indent=2, ensure_ascii=False) + "\n", sorted(new_env))
    data = parse_settings(text, where)
    old_env: dict = data.get("env", {})
    new_env = dict(old_env)  # keeps the user's order; new keys go last
    changed = []
    for key, value in entries.items():
        if new_env.get(key) != value:
            new_env[key] = value
            changed.append(key)
    for key in sorted(remove):
        if key in new_env:
            del new_env[key]
            changed.append(key)
    if not changed:
        return Merge(text, [])

    top = scan_top_level(text)
    unit = indent_unit(text, top)
    rendered = render_env(new_env, unit)
    env_members = [m for m in top.members if m.key == "env"]
    if env_members:  # JSON parsers keep the last of duplicate keys, so that is the one to edit
        member = env_members[-1]
        new_text = text[:member.value_start] + rendered + text[member.value_end:]
    elif top.members:
        last = top.members[-1]
        sep = f",\n{unit}" if unit is not None else ", "
        new_text = text[:last.value_end] + f'{sep}"env": {rendered}' + text[last.value_end:]
    else:
        inner = f'\n  "env": {render_env(new_env, "  ")}\n'
        new_text = text[:top.open_brace + 1] + inner + text[top.close_brace:]

    expected = dict(data)
    expected["env"] = new_env
    try:
        ok = json.loads(new_text) == expected
    except ValueError:
        ok = False
    if not ok:  # pragma: no cover - a bug in the splice above, never a user's file
        raise SetupRefused(f"{where} could not be merged safely. Nothing was changed.")
    return Merge(new_text, changed)


# ------------------------------------------------------------------------------------------ diff and write

def masked(text: str, secret: str | None) -> str:
    """`text` with the key's value replaced, for showing on a terminal."""
    if not secret or secret == NO_KEY_TOKEN:
        return text
    # Only the quoted JSON string: a short key must not blank out every matching letter of the file.
    return text.replace(json.dumps(secret, ensure_ascii=False), f'"<secret: {len(secret)} chars>"')


def readable_diff(old: str | None, new: str, path: Path, secrets: list[str]) -> str:
    def hide(text: str) -> str:
        for secret in secrets:
            text = masked(text, secret)
        return text

    diff = difflib.unified_diff(hide(old or "").splitlines(keepends=True), hide(new).splitlines(keepends=True),
                                fromfile=str(path) if old is not None else "/dev/null", tofile=str(path))
    out = "".join(diff)
    return out if out.endswith("\n") else out + "\n"


def env_summary(old_env: Mapping[str, Any], new_env: Mapping[str, Any], secrets: list[str]) -> list[str]:
    """One line per env entry that changes (`+ NAME = value`, `~ NAME: old → new`, `- NAME`), secrets hidden:
    readable whatever the file's layout (a one-line settings.json makes a one-line diff)."""
    def show(value: Any) -> str:
        text = json.dumps(value, ensure_ascii=False)
        for secret in secrets:
            text = masked(text, secret)
        return text

    lines = []
    for name, value in new_env.items():
        if name not in old_env:
            lines.append(f"  + {name} = {show(value)}")
        elif old_env[name] != value:
            lines.append(f"  ~ {name}: {show(old_env[name])} → {show(value)}")
    lines += [f"  - {name}" for name in old_env if name not in new_env]
    return lines


# ------------------------------------------------------------------------------------------ the command

def run_setup(config: Config, *, claude_home: Path | None, dry_run: bool, proxy_url: str | None = None,
              out: TextIO = sys.stdout, env: Mapping[str, str] | None = None) -> int:
    """`deepseek-proxy claude setup [--dry-run] [--claude-home DIR] [--proxy-url URL]`. Returns the exit code."""
    env = os.environ if env is None else env
    home = resolve_claude_home(claude_home, env)
    path = home / SETTINGS_FILE
    try:
        old = read_text(path, SETUP_COMMAND)
        current_env = parse_settings(old, str(path)).get("env", {}) if old and old.strip() else {}
        entries, remove, key = env_entries(config, current_env, proxy_url=proxy_url, env=env)
        merged = merge_settings(old, entries, remove, where=str(path))
    except SetupRefused as exc:
        print(f"deepseek-proxy claude setup: {exc}", file=out)
        return 1

    main, fast = model_roles(config)
    print(f"Claude Code settings: {path}", file=out)
    print(f"{BASE_URL_VAR} → {entries[BASE_URL_VAR]}; key from {key.source}; models {main} (main), "
          f"{fast} (haiku, sub-agents)", file=out)
    if current_env.get(API_KEY_VAR):
        print(f"note: {API_KEY_VAR} in the env block is emptied ({TOKEN_VAR} replaces it; with both, Claude Code "
              f"sends both headers)" + ("" if dry_run else "; the backup keeps it"), file=out)
    if old == merged.text:
        print(f"{SETTINGS_FILE} already points Claude Code at the proxy: nothing to change.", file=out)
        return 0
    secrets = [v for v in (key.value, *(current_env.get(k) for k in KEY_VARS)) if isinstance(v, str) and v]
    if dry_run:
        new_env = json.loads(merged.text).get("env", {})
        print("env changes:", *env_summary(current_env, new_env, secrets), sep="\n", file=out)
        out.write(readable_diff(old, merged.text, path, secrets))
        print("(dry run: nothing was written)", file=out)
        return 0
    try:
        if old is not None:
            backup = backup_path(path)
            write_atomically(backup, old, private=True)  # it may hold a key: owner-only
        write_atomically(path, merged.text, private=key.value not in (None, NO_KEY_TOKEN))
    except OSError as exc:
        print(f"deepseek-proxy claude setup: cannot write {path}: {exc.strerror or exc}", file=out)
        return 1
    if old is None:
        print(f"  created    {path}", file=out)
    else:
        print(f"  updated    {path}  (backup: {backup.name}; changed: {', '.join(merged.changed)})", file=out)
    print_next_steps(config, "claude", out)
    return 0
