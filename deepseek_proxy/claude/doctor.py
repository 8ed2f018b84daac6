"""The Claude Code part of `deepseek-proxy doctor`: is Claude Code installed, and does its settings.json send it to
this proxy, with a key the proxy takes and model names the proxy serves? Each problem comes with the command or
edit that fixes it. Key values are never printed.

For someone who does not use Claude Code (no `claude` on PATH and no settings pointing at the proxy) the section
is one warning line, not a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..clientconfig import SetupRefused, key_choice, proxy_base_url, proxy_command, read_text
from ..codex.doctor import Check
from ..config import Config
from .setup import (
    API_KEY_VAR,
    ATTRIBUTION_VAR,
    BASE_URL_VAR,
    MODEL_VARS,
    SETTINGS_FILE,
    SETUP_COMMAND,
    TOKEN_VAR,
    parse_settings,
    resolve_claude_home,
)

TESTED_VERSION = "2.1.197"  # the Claude Code release CLIENTS.md and tests/e2e were measured with
INSTALL_HINT = "npm install -g @anthropic-ai/claude-code"
VERSION_TIMEOUT = 30.0


def find_claude(env: Mapping[str, str]) -> Path | None:
    found = shutil.which("claude", path=env.get("PATH", os.defpath))
    return Path(found) if found else None


def claude_version(binary: Path, env: Mapping[str, str]) -> str:
    """`claude --version` → "2.1.197"; raises OSError/ValueError when it does not run or says something else."""
    result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT,
                            check=False, env={**env, "DISABLE_AUTOUPDATER": "1"}, stdin=subprocess.DEVNULL)
    match = re.match(r"\s*(\d+\.\d+\.\d+)", result.stdout)
    if result.returncode != 0 or not match:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise ValueError(detail[0] if detail else f"exit {result.returncode}")
    return match.group(1)


def check_claude_binary(env: Mapping[str, str]) -> Check:
    binary = find_claude(env)
    if binary is None:
        return Check("claude", False, "Claude Code is not installed (no `claude` on PATH).", INSTALL_HINT)
    try:
        version = claude_version(binary, env)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return Check("claude", False, f"{binary} does not run: {exc}", f"reinstall it: {INSTALL_HINT}")
    tested = "" if version == TESTED_VERSION else f" (deepseek-proxy was tested with {TESTED_VERSION})"
    return Check("claude", True, f"Claude Code {version} at {binary}{tested}")


def check_settings(config: Config, home: Path, env: Mapping[str, str], *, setup: str | None = None) -> Iterator[Check]:
    setup = setup or proxy_command(config, "claude", "setup")
    path = home / SETTINGS_FILE
    try:
        text = read_text(path, SETUP_COMMAND)
        data = parse_settings(text, str(path)) if text is not None and text.strip() else None
    except SetupRefused as exc:
        yield Check("settings.json", False, str(exc).split(" Nothing was changed")[0],
                    f"repair or move {path} away (setup leaves backups as {SETTINGS_FILE}.bak-*), then {setup}")
        return
    if data is None:
        yield Check("settings.json", False, f"{path} does not exist (or is empty): Claude Code does not know the "
                                            f"proxy.", setup)
        return
    block = data.get("env") or {}

    expected = proxy_base_url(config)
    actual = block.get(BASE_URL_VAR)
    if actual is None:
        yield Check("settings.json", False, f"{path} sets no {BASE_URL_VAR}: Claude Code talks to Anthropic, not "
                                            f"the proxy.", setup)
    elif not isinstance(actual, str) or actual.rstrip("/") != expected:
        hint = " (Claude Code adds /v1/messages itself: drop the /v1)" if str(actual).rstrip("/").endswith(
            "/v1") else ""
        yield Check("settings.json", False, f"{BASE_URL_VAR} is {actual!r} but the proxy serves {expected!r}"
                                            f"{hint}.", setup)
    else:
        yield Check("settings.json", True, f"{BASE_URL_VAR} points Claude Code at {expected}")

    yield _check_key(config, block, setup)
    if API_KEY_VAR not in block and env.get(API_KEY_VAR, "").strip():
        yield Check("key", True, f"{API_KEY_VAR} is set in this shell and settings.json does not blank it: Claude "
                                 f"Code also sends it to the proxy (as x-api-key) next to the token.", setup,
                    warning=True)
    yield from _check_models(config, block, setup)
    if str(block.get(ATTRIBUTION_VAR, "")) != "0":
        yield Check("prompt cache", True, f"{ATTRIBUTION_VAR} is not \"0\": every session starts with a different "
                                           f"system block, so DeepSeek's prompt cache cannot reuse the tens of "
                                           f"thousands of prompt tokens behind it.", setup, warning=True)


def _check_key(config: Config, block: Mapping[str, object], setup: str) -> Check:
    token, api_key = block.get(TOKEN_VAR), block.get(API_KEY_VAR)
    values = [v for v in (token, api_key) if isinstance(v, str) and v.strip()]
    choice = key_choice(config)
    if not values:
        return Check("key", False, f"settings.json sets neither {TOKEN_VAR} nor {API_KEY_VAR}: Claude Code asks "
                                   f"to log in to Anthropic instead of using the proxy.", setup)
    if choice.env_key == "DEEPSEEK_PROXY_KEY":
        if not any(v in config.server.client_keys for v in values):
            return Check("key", False, "the key in settings.json is not one of the proxy's client keys "
                                       "(server.client_keys): every request gets 401.",
                         f"export DEEPSEEK_PROXY_KEY=<a client key>, then {setup}")
        return Check("key", True, "settings.json holds one of the proxy's client keys")
    if choice.env_key == "DEEPSEEK_API_KEY":
        return Check("key", True, "settings.json holds a key; the proxy passes it on to DeepSeek (doctor cannot "
                                  "tell whether DeepSeek takes it before a request is made)")
    return Check("key", True, "settings.json holds a key (the proxy asks for none)")


def _check_models(config: Config, block: Mapping[str, object], setup: str) -> Iterator[Check]:
    unknown = {var: block[var] for var in MODEL_VARS if var in block and block[var] not in config.models}
    missing = [var for var in ("ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_HAIKU_MODEL") if var not in block]
    served = ", ".join(config.models)
    if unknown:
        listed = "; ".join(f"{var}={value!r}" for var, value in unknown.items())
        yield Check("models", False, f"settings.json names models the proxy does not serve ({listed}); it "
                                     f"serves {served}.", setup)
    elif missing:
        yield Check("models", True, f"settings.json sets no {' / '.join(missing)}: Claude Code asks for claude-* "
                                    f"model names and relies on the proxy's name mapping.", setup, warning=True)
    else:
        named = sorted({str(block[var]) for var in MODEL_VARS if var in block})
        yield Check("models", True, f"Claude Code asks for {', '.join(named)} (served by the proxy)")


def _opted_in(home: Path) -> bool:
    """Whether this user's Claude Code is meant to use a gateway: its settings set a base URL."""
    try:
        text = read_text(home / SETTINGS_FILE, SETUP_COMMAND)
        return text is not None and BASE_URL_VAR in (parse_settings(text, "").get("env") or {})
    except SetupRefused:
        return True  # a broken settings.json is worth a failure either way


def collect_claude_checks(config: Config, *, claude_home: Path | None,
                          env: Mapping[str, str]) -> Iterator[Check]:
    """The Claude Code section of doctor, in the order a user fixes things: binary, then settings.

    Failures only for a Claude Code that is meant to use the proxy (--claude-home given, or settings.json sets
    a base URL); anyone else gets one warning line saying how to set it up.
    """
    home = resolve_claude_home(claude_home, env)
    setup = proxy_command(config, "claude", "setup", *(["--claude-home", str(home)] if claude_home else []))
    if claude_home is None and not _opted_in(home):
        binary = check_claude_binary(env)
        if binary.ok:
            message = f"{binary.message}; not set up to use the proxy (skip this if you do not want it to)."
            fix = setup
        else:
            message = "Claude Code is not installed and not set up (skip this if you do not use it)."
            fix = f"{INSTALL_HINT}, then {setup}"
        yield Check("claude", True, message, fix, warning=True)
        return
    yield check_claude_binary(env)
    yield from check_settings(config, home, env, setup=setup)
