"""Drive the real, pinned Claude Code (``@anthropic-ai/claude-code`` from ``tests/e2e/package.json``) in tests.

Install it with ``npm ci --prefix tests/e2e`` (``make install`` does). Tests fail -- they never skip -- when it is
missing, so a CI run without Claude Code cannot pass by accident. The npm package's postinstall only links the
native binary out of the platform package (``@anthropic-ai/claude-code-linux-x64``); nothing is downloaded from
outside the npm registry.

Facts about Claude Code 2.1.197 this module relies on (measured; see CLIENTS.md and ``tests/fixtures/claude-code``):

* ``claude -p PROMPT`` runs one non-interactive session and prints the final text; exit 1 on an API error.
  As root, ``--dangerously-skip-permissions`` needs ``IS_SANDBOX=1``.
* ``ANTHROPIC_BASE_URL`` + ``ANTHROPIC_API_KEY`` (sent as ``x-api-key``) or ``ANTHROPIC_AUTH_TOKEN`` (sent as
  ``Authorization: Bearer``). Settings come from ``$CLAUDE_CONFIG_DIR/settings.json`` (default
  ``~/.claude``) and their ``env`` block overrides the process environment.
* Even with a non-Anthropic base URL it calls api.anthropic.com at start-up (``/api/claude_cli/bootstrap``, the
  MCP registry, the org's fast-mode status) unless ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`` is set; that
  switch also drops the session-title side request. ``DISABLE_TELEMETRY``, ``DISABLE_ERROR_REPORTING``,
  ``DISABLE_AUTOUPDATER``/``DISABLE_UPDATES`` and ``DISABLE_GROWTHBOOK`` (feature flags) stop the rest. OFFLINE_ENV
  holds them all; ``test_claude_harness`` checks that with them nothing but loopback is contacted.
* Any ``ANTHROPIC_*`` / ``CLAUDE_*`` variable in the test runner's own environment could change what Claude Code
  does, so the child gets a clean environment.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.cli_process import run_in_own_group

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parent.parent
CLAUDE_PACKAGE = "@anthropic-ai/claude-code"
CLAUDE_VERSION = json.loads((E2E_DIR / "package.json").read_text())["dependencies"][CLAUDE_PACKAGE]
INSTALL_HINT = (
    f"the pinned Claude Code ({CLAUDE_PACKAGE}@{CLAUDE_VERSION}) is not installed for the tests.\n"
    f"Install it with:  npm ci --prefix tests/e2e   (run from {REPO_ROOT})"
)

# Everything that would reach beyond ANTHROPIC_BASE_URL, switched off (see the module doc).
OFFLINE_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_UPDATES": "1",
    "DISABLE_GROWTHBOOK": "1",
    "DISABLE_BUG_COMMAND": "1",
    "DISABLE_FEEDBACK_COMMAND": "1",
    "DISABLE_INSTALLATION_CHECKS": "1",
}
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY", "all_proxy",
                   "NO_PROXY", "no_proxy")


class ClaudeMissing(RuntimeError):
    pass


def claude_binary() -> Path:
    """The pinned native ``claude`` binary; raises ClaudeMissing with the install command if absent.

    ``node_modules/.bin/claude`` is that binary once the package's postinstall has linked it in; if an npm that
    skips install scripts left the placeholder stub there, the platform package's own copy is used instead.
    """
    launcher = E2E_DIR / "node_modules" / ".bin" / "claude"
    if launcher.exists() and launcher.stat().st_size > 1_000_000:
        return launcher
    for platform_dir in sorted((E2E_DIR / "node_modules" / "@anthropic-ai").glob("claude-code-*")):
        native = platform_dir / "claude"
        if native.exists():
            return native
    raise ClaudeMissing(INSTALL_HINT)


@dataclass
class ClaudeHome:
    """A throw-away user for one Claude Code run: ``home`` (HOME), ``config_dir`` (CLAUDE_CONFIG_DIR, holds
    settings.json) and ``workdir`` (the project directory Claude Code works in)."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def config_dir(self) -> Path:
        return self.home / ".claude"

    @property
    def workdir(self) -> Path:
        return self.root / "wd"

    @property
    def settings_path(self) -> Path:
        return self.config_dir / "settings.json"

    def session_files(self) -> list[Path]:
        """The saved sessions (one JSON line per message), which ``claude -p --continue`` / ``--resume ID`` read
        back: ``projects/<workdir with / as ->/<session id>.jsonl``. Edit one to fake a history (e.g. an assistant
        tool-call turn without its thinking block, as after a model switch)."""
        return sorted((self.config_dir / "projects").glob("*/*.jsonl"))

    def write_settings(self, settings: dict) -> Path:
        self.settings_path.write_text(json.dumps(settings, indent=2) + "\n")
        return self.settings_path


def make_claude_home(root: Path, *, settings: dict | None = None) -> ClaudeHome:
    """Create ``root/home/.claude`` (with ``settings.json`` when given) and ``root/wd``. Unlike Codex, Claude Code
    is content with pytest's ``tmp_path`` (under /tmp)."""
    home = ClaudeHome(Path(root).resolve())
    home.config_dir.mkdir(parents=True, exist_ok=True)
    home.workdir.mkdir(parents=True, exist_ok=True)
    if settings is not None:
        home.write_settings(settings)
    return home


def claude_env(home: ClaudeHome, *, base_url: str | None = None, api_key: str | None = None,
               auth_token: str | None = None, https_proxy: str | None = None, offline: bool = True,
               extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment for Claude Code: HOME and CLAUDE_CONFIG_DIR inside ``home``, PATH, IS_SANDBOX=1 (we
    run as root), OFFLINE_ENV unless ``offline=False``, and the endpoint/key when given (None leaves them to
    settings.json). ``https_proxy`` routes every non-loopback request through that proxy (e.g. a RefusingProxy)."""
    env = {
        "HOME": str(home.home),
        "CLAUDE_CONFIG_DIR": str(home.config_dir),
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "IS_SANDBOX": "1",
        "NO_COLOR": "1",
        "TERM": "dumb",
    }
    if offline:
        env.update(OFFLINE_ENV)
    if base_url is not None:
        env["ANTHROPIC_BASE_URL"] = base_url
    if api_key is not None:
        env["ANTHROPIC_API_KEY"] = api_key
    if auth_token is not None:
        env["ANTHROPIC_AUTH_TOKEN"] = auth_token
    if https_proxy is not None:
        env.update({"HTTPS_PROXY": https_proxy, "HTTP_PROXY": https_proxy, "NO_PROXY": "127.0.0.1,localhost"})
    env.update(extra or {})
    return env


def run_claude(args: list[str], *, env: Mapping[str, str], cwd: Path, timeout: float = 120,
               wrapper: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run ``claude ARGS`` in ``cwd`` with stdin closed and exactly ``env``; text output captured.

    On timeout the whole process group is killed (Claude Code runs tools as child processes) and TimeoutExpired
    carries what was printed so far. ``wrapper`` prefixes the command line (e.g. ``strace …``).
    """
    return run_in_own_group([*(wrapper or []), str(claude_binary()), *args], cwd=cwd, env=env, timeout=timeout)


def run_claude_print(home: ClaudeHome, prompt: str, *, base_url: str | None = None, api_key: str | None = None,
                     auth_token: str | None = None, model: str | None = None, https_proxy: str | None = None,
                     offline: bool = True, env_extra: Mapping[str, str] | None = None,
                     extra_args: list[str] | None = None, timeout: float = 120,
                     wrapper: list[str] | None = None) -> subprocess.CompletedProcess:
    """``claude -p PROMPT --dangerously-skip-permissions [--model M]`` in ``home.workdir``.

    ``base_url`` is any Anthropic Messages endpoint: a ScriptedMessages server, or the proxy
    (``http://127.0.0.1:PORT``; Claude Code appends ``/v1/messages``).
    """
    args = ["-p", prompt, "--dangerously-skip-permissions"]
    if model:
        args += ["--model", model]
    args += list(extra_args or [])
    env = claude_env(home, base_url=base_url, api_key=api_key, auth_token=auth_token, https_proxy=https_proxy,
                     offline=offline, extra=env_extra)
    return run_claude(args, env=env, cwd=home.workdir, timeout=timeout, wrapper=wrapper)


def claude_version() -> str:
    """``claude --version`` of the pinned binary, e.g. ``"2.1.197"``."""
    out = subprocess.run([str(claude_binary()), "--version"], check=False, capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ.get("PATH", ""), "DISABLE_AUTOUPDATER": "1"})
    return out.stdout.strip().split()[0]
