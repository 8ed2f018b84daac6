"""Drive the real, pinned Gemini CLI (``@google/gemini-cli`` from ``tests/e2e/package.json``) in tests.

Install it with ``npm ci --prefix tests/e2e``. Tests fail -- they never skip -- when it is missing. The package is
a self-contained bundle from the npm registry (its optional native add-ons' install scripts are not needed: without
them it falls back to its JS implementations, and nothing is downloaded from elsewhere).

Facts about Gemini CLI 0.61.0 this module relies on (measured; see CLIENTS.md and ``tests/fixtures/gemini-cli``):

* ``gemini -p PROMPT --yolo`` runs one non-interactive session (tools approved) and prints the final text; the exit
  code of an API error is its HTTP status mod 256 (400 → 144, 402 → 146).
* ``GOOGLE_GEMINI_BASE_URL`` + ``GEMINI_API_KEY`` with ``security.auth.selectedType: "gemini-api-key"`` in
  ``$HOME/.gemini/settings.json`` (without it the base URL alone selects the "gateway" auth type: exit 41).
* Its own traffic to Google (usage statistics / Clearcut, telemetry, the update check) is switched off by
  OFFLINE_SETTINGS; folder trust is off so the temp work dir needs no trust prompt. ``test_gemini_through_proxy``
  runs every session behind a refusing HTTPS proxy and asserts nothing tried to leave.
* Any GEMINI_* / GOOGLE_* variable of the test runner could change what it does: the child gets a clean environment.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.cli_process import npm_launcher, run_in_own_group

E2E_DIR = Path(__file__).resolve().parent
GEMINI_PACKAGE = "@google/gemini-cli"
GEMINI_VERSION = json.loads((E2E_DIR / "package.json").read_text())["dependencies"][GEMINI_PACKAGE]
INSTALL_HINT = (f"the pinned Gemini CLI ({GEMINI_PACKAGE}@{GEMINI_VERSION}) is not installed for the tests.\n"
                f"Install it with:  npm ci --prefix tests/e2e")

OFFLINE_SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
}


class GeminiMissing(RuntimeError):
    pass


def gemini_binary() -> Path:
    return npm_launcher("gemini", GeminiMissing(INSTALL_HINT))


@dataclass
class GeminiHome:
    """A throw-away user: ``home`` (HOME, holds .gemini/settings.json) and ``workdir`` (the project)."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def workdir(self) -> Path:
        return self.root / "wd"

    @property
    def settings_path(self) -> Path:
        return self.home / ".gemini" / "settings.json"


def make_gemini_home(root: Path, *, settings: dict | None = None) -> GeminiHome:
    home = GeminiHome(Path(root).resolve())
    home.settings_path.parent.mkdir(parents=True, exist_ok=True)
    home.workdir.mkdir(parents=True, exist_ok=True)
    home.settings_path.write_text(json.dumps(OFFLINE_SETTINGS if settings is None else settings, indent=2) + "\n")
    return home


def gemini_env(home: GeminiHome, *, base_url: str, api_key: str = "test-key", https_proxy: str | None = None,
               extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        "HOME": str(home.home),
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "GOOGLE_GEMINI_BASE_URL": base_url,
        "GEMINI_API_KEY": api_key,
        "NO_COLOR": "1",
        "TERM": "dumb",
    }
    if https_proxy is not None:
        env.update({"HTTPS_PROXY": https_proxy, "HTTP_PROXY": https_proxy, "NO_PROXY": "127.0.0.1,localhost"})
    env.update(extra or {})
    return env


def run_gemini_print(home: GeminiHome, prompt: str, *, base_url: str, model: str | None = None,
                     https_proxy: str | None = None, extra_args: list[str] | None = None,
                     env_extra: Mapping[str, str] | None = None, timeout: float = 150) -> subprocess.CompletedProcess:
    """``gemini -p PROMPT --yolo [-m MODEL]`` in ``home.workdir`` with stdin closed; the process group is killed on
    timeout (it runs tools as child processes)."""
    args = [str(gemini_binary()), "-p", prompt, "--yolo", *(["-m", model] if model else []), *(extra_args or [])]
    return run_in_own_group(args, cwd=home.workdir, timeout=timeout,
                            env=gemini_env(home, base_url=base_url, https_proxy=https_proxy, extra=env_extra))
