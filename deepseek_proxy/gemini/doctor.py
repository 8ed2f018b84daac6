"""The Gemini CLI part of `deepseek-proxy doctor`: is Gemini CLI installed, and do its settings and variables send it
to this proxy with a key the proxy takes? Each problem comes with the fix. Key values are never printed.

For someone who does not use Gemini CLI (nothing set up and no --gemini-home) the section is one warning line.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..clientconfig import SetupRefused, key_choice, proxy_base_url, proxy_command, read_text
from ..codex.doctor import Check
from ..config import Config
from .setup import (
    AUTH_TYPE,
    BASE_URL_VAR,
    ENV_FILE,
    KEY_VAR,
    SETTINGS_FILE,
    SETUP_COMMAND,
    parse_env,
    parse_settings,
    resolve_gemini_home,
)

TESTED_VERSION = "0.61.0"  # the Gemini CLI release CLIENTS.md and tests/e2e were measured with
INSTALL_HINT = "npm install -g @google/gemini-cli"
VERSION_TIMEOUT = 30.0


def check_gemini_binary(env: Mapping[str, str]) -> Check:
    found = shutil.which("gemini", path=env.get("PATH", os.defpath))
    if found is None:
        return Check("gemini", False, "Gemini CLI is not installed (no `gemini` on PATH).", INSTALL_HINT)
    try:
        result = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=VERSION_TIMEOUT,
                                check=False, env=dict(env), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("gemini", False, f"{found} does not run: {exc}", f"reinstall it: {INSTALL_HINT}")
    match = re.search(r"(\d+\.\d+\.\d+)", result.stdout)
    if result.returncode != 0 or not match:
        return Check("gemini", False, f"{found} --version failed (exit {result.returncode}).",
                     f"reinstall it: {INSTALL_HINT}")
    version = match.group(1)
    tested = "" if version == TESTED_VERSION else f" (deepseek-proxy was tested with {TESTED_VERSION})"
    return Check("gemini", True, f"Gemini CLI {version} at {found}{tested}")


def check_gemini_settings(config: Config, home: Path, env: Mapping[str, str], *, setup: str) -> Iterator[Check]:
    settings_path, env_path = home / SETTINGS_FILE, home / ENV_FILE
    try:
        data = parse_settings(read_text(settings_path, SETUP_COMMAND), str(settings_path))
        env_file = parse_env(read_text(env_path, SETUP_COMMAND))
    except SetupRefused as exc:
        yield Check("gemini settings", False, str(exc).split(" Nothing was changed")[0], setup)
        return
    selected = ((data.get("security") or {}).get("auth") or {}).get("selectedType") \
        if isinstance(data.get("security"), dict) else None
    if selected != AUTH_TYPE:
        yield Check("gemini settings", False, f"{settings_path}: security.auth.selectedType is {selected!r}, not "
                                              f"{AUTH_TYPE!r}: Gemini CLI does not use the API key (with only the "
                                              f"base URL set, `gemini -p` exits 41).", setup)
    else:
        yield Check("gemini settings", True, f"{settings_path} selects the {AUTH_TYPE} auth type")

    expected = proxy_base_url(config)
    shell, in_file = env.get(BASE_URL_VAR), env_file.get(BASE_URL_VAR)
    actual, origin = (shell, "the shell's") if shell else (in_file, str(env_path))
    if not actual:
        yield Check("gemini base URL", False, f"{BASE_URL_VAR} is set neither in the shell nor in {env_path}: Gemini "
                                              f"CLI talks to Google, not the proxy.", setup)
    elif actual.rstrip("/") != expected:
        yield Check("gemini base URL", False, f"{origin} {BASE_URL_VAR} is {actual!r} but the proxy serves "
                                              f"{expected!r} (the shell's value wins over .env).",
                    setup if not shell else f"export {BASE_URL_VAR}={shlex.quote(expected)}")
    else:
        note = "" if shell else " (read only in folders Gemini CLI trusts, and only when the project has no .env)"
        yield Check("gemini base URL", True, f"{origin} {BASE_URL_VAR} points Gemini CLI at {expected}{note}")

    key = env.get(KEY_VAR) or env_file.get(KEY_VAR)
    choice = key_choice(config)
    if not key:
        yield Check("gemini key", False, f"{KEY_VAR} is set neither in the shell nor in {env_path}: Gemini CLI "
                                         f"refuses to start.", setup)
    elif choice.env_key == "DEEPSEEK_PROXY_KEY" and key not in config.server.client_keys:
        yield Check("gemini key", False, f"{KEY_VAR} is not one of the proxy's client keys (server.client_keys): "
                                         f"every request gets 400 API_KEY_INVALID.",
                    f"export DEEPSEEK_PROXY_KEY=<a client key>, then {setup}")
    else:
        yield Check("gemini key", True, f"{KEY_VAR} is set" + (" (the proxy passes it on to DeepSeek)"
                                                               if choice.env_key == "DEEPSEEK_API_KEY" else ""))


def _opted_in(home: Path, env: Mapping[str, str]) -> bool:
    if env.get(BASE_URL_VAR):
        return True
    try:
        return BASE_URL_VAR in parse_env(read_text(home / ENV_FILE, SETUP_COMMAND))
    except SetupRefused:
        return True


def collect_gemini_checks(config: Config, *, gemini_home: Path | None, env: Mapping[str, str]) -> Iterator[Check]:
    """The Gemini CLI section of doctor: binary, then settings and variables. Failures only for a Gemini CLI meant
    to use the proxy (--gemini-home given, or a base URL set); anyone else gets one warning line."""
    home = resolve_gemini_home(gemini_home, env)
    setup = proxy_command(config, "gemini", "setup", *(["--gemini-home", str(home)] if gemini_home else []))
    if gemini_home is None and not _opted_in(home, env):
        binary = check_gemini_binary(env)
        if binary.ok:
            yield Check("gemini", True, f"{binary.message}; not set up to use the proxy (skip this if you do not "
                                        f"want it to).", setup, warning=True)
        else:
            yield Check("gemini", True, "Gemini CLI is not installed and not set up (skip this if you do not use it).",
                        f"{INSTALL_HINT}, then {setup}", warning=True)
        return
    yield check_gemini_binary(env)
    yield from check_gemini_settings(config, home, env, setup=setup)
