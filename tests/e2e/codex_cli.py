"""Drive the real, pinned Codex CLI (``@openai/codex`` from ``tests/e2e/package.json``) in tests.

Install it with ``npm ci --prefix tests/e2e`` (what ``.ci/run`` does). Tests fail -- they never skip --
when it is missing, so a CI run without Codex cannot pass by accident.

Facts about Codex 0.169.0 this module relies on (measured, see the README's Codex section and ``tests/fixtures/codex/``):

* ``CODEX_HOME`` must not be under a temp dir: Codex refuses to create its helper binaries there, so
  homes live under ``tests/e2e/.work/`` (gitignored) instead of pytest's ``tmp_path``.
* ``codex exec ... </dev/null`` runs one non-interactive turn; as root it needs
  ``--dangerously-bypass-approvals-and-sandbox`` (``--full-auto`` no longer exists).
* Any ``OPENAI_*`` variable in the environment can change which provider/key Codex uses, so the child
  gets a clean environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path

from tests.e2e.cli_process import npm_launcher, run_in_own_group

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parent.parent
CODEX_VERSION = json.loads((E2E_DIR / "package.json").read_text())["dependencies"]["@openai/codex"]


def _under_tmp(path: Path) -> bool:
    return path == Path("/tmp") or Path("/tmp") in path.parents


def _work_dir() -> Path:
    """Where CODEX_HOMEs and work trees go: tests/e2e/.work (gitignored), unless the checkout itself is under /tmp
    (CI may clone there), then the user's cache dir. $DEEPSEEK_PROXY_E2E_DIR overrides both."""
    if os.environ.get("DEEPSEEK_PROXY_E2E_DIR"):
        return Path(os.environ["DEEPSEEK_PROXY_E2E_DIR"])
    local = E2E_DIR / ".work"
    if not _under_tmp(local.resolve()):
        return local
    return Path.home() / ".cache" / "deepseek-proxy-e2e"


WORK_DIR = _work_dir()
INSTALL_HINT = (
    f"the pinned Codex CLI (@openai/codex@{CODEX_VERSION}) is not installed for the tests.\n"
    f"Install it with:  npm ci --prefix tests/e2e   (run from {REPO_ROOT})"
)


class CodexMissing(RuntimeError):
    pass


def codex_binary() -> Path:
    """Path of the pinned Codex launcher; raises CodexMissing with the install command if absent."""
    return npm_launcher("codex", CodexMissing(INSTALL_HINT))


def new_work_dir(name: str) -> Path:
    """A fresh directory under WORK_DIR (outside /tmp, see module doc)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:60]
    path = WORK_DIR / f"{safe}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


# Without these, every Codex start tries github.com / chatgpt.com (curated plugin sync) and analytics.
OFFLINE_TOML = """[features]
plugins = false

[analytics]
enabled = false
"""


def _toml_str(value: str) -> str:
    # JSON string syntax is valid TOML basic-string syntax for the characters we write.
    return json.dumps(value)


def make_codex_home(
    root: Path,
    *,
    base_url: str,
    model: str,
    env_key: str | None,
    catalog: dict | None = None,
    catalog_url: str | None = None,
    extra_toml: str = "",
    provider_id: str = "deepseek-proxy",
    offline: bool = True,
    max_retries: int = 0,
) -> Path:
    """Create ``root/codex-home`` with a config.toml pointing Codex at ``base_url``.

    ``catalog`` is written to ``model_catalog.json`` and referenced by ``model_catalog_json``;
    ``catalog_url`` sets ``model_catalog_url`` (which Codex honours only inside the provider table).
    ``offline`` adds OFFLINE_TOML so Codex makes no calls beyond the provider. ``root`` must not be under /tmp.
    """
    root = Path(root).resolve()
    if _under_tmp(root):
        raise ValueError(f"CODEX_HOME must be outside /tmp (Codex refuses helper binaries there): {root}")
    home = root / "codex-home"
    home.mkdir(parents=True, exist_ok=True)
    lines = [
        f"model = {_toml_str(model)}",
        f"model_provider = {_toml_str(provider_id)}",
    ]
    if catalog is not None:
        catalog_path = home / "model_catalog.json"
        catalog_path.write_text(json.dumps(catalog, indent=1))
        lines.append(f"model_catalog_json = {_toml_str(str(catalog_path))}")
    lines += [
        "",
        f"[model_providers.{provider_id}]",
        'name = "DeepSeek proxy"',
        f"base_url = {_toml_str(base_url)}",
        'wire_api = "responses"',
        # Keep failing tests fast: Codex's defaults retry up to ~30 times with backoff. A test of how often Codex
        # retries sets its own number.
        f"request_max_retries = {max_retries}",
        f"stream_max_retries = {max_retries}",
    ]
    if env_key:
        lines.append(f"env_key = {_toml_str(env_key)}")
    if catalog_url is not None:
        lines.append(f"model_catalog_url = {_toml_str(catalog_url)}")
    text = "\n".join(lines) + "\n"
    if offline:
        text += "\n" + OFFLINE_TOML
    if extra_toml:
        text += "\n" + extra_toml.strip("\n") + "\n"
    (home / "config.toml").write_text(text)
    return home


def codex_env(codex_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment for Codex: HOME (the work dir holding CODEX_HOME, so nothing lands in the real
    home), PATH, CODEX_HOME and whatever the caller adds. No OPENAI_*."""
    env = {
        "HOME": str(Path(codex_home).resolve().parent),
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "CODEX_HOME": str(codex_home),
        "NO_COLOR": "1",
        "RUST_LOG": "warn",
    }
    env.update(extra or {})
    return {k: v for k, v in env.items() if not k.startswith("OPENAI_")}


def run_codex(
    args: list[str],
    *,
    codex_home: Path,
    cwd: Path | None = None,
    env_extra: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run ``codex ARGS`` with stdin closed and a clean env; text output captured.

    The npm launcher (node) spawns the native binary; on timeout the whole process group is killed so
    no orphaned ``codex`` keeps running (``subprocess.run`` would only kill node).
    """
    return run_in_own_group([str(codex_binary()), *args], cwd=cwd, env=codex_env(codex_home, env_extra),
                            timeout=timeout)


def run_codex_exec(
    codex_home: Path,
    workdir: Path,
    prompt: str,
    *,
    env_key_value: Mapping[str, str] | str | None,
    profile: str | None = None,
    timeout: float = 120,
    extra_args: list[str] | None = None,
) -> subprocess.CompletedProcess:
    """``codex exec --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox PROMPT </dev/null``.

    ``env_key_value`` is the key's value, exported under every ``env_key`` named in
    ``codex_home/config.toml`` (so callers need not repeat the variable name), or an explicit mapping
    of variables, or None for no key at all.
    """
    if isinstance(env_key_value, str):
        env_extra = {name: env_key_value for name in provider_env_keys(codex_home)}
    else:
        env_extra = dict(env_key_value or {})
    args = ["exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox"]
    if profile:
        args += ["-p", profile]
    args += list(extra_args or [])
    args.append(prompt)
    return run_codex(args, codex_home=codex_home, cwd=workdir, env_extra=env_extra, timeout=timeout)


def provider_env_keys(codex_home: Path) -> list[str]:
    """Every ``env_key`` of every ``[model_providers.*]`` in ``codex_home/config.toml``."""
    config = tomllib.loads((Path(codex_home) / "config.toml").read_text())
    providers = config.get("model_providers", {})
    return sorted({p["env_key"] for p in providers.values() if isinstance(p, dict) and p.get("env_key")})


def codex_version() -> str:
    """``codex --version`` of the pinned binary, e.g. ``"0.169.0"``."""
    out = subprocess.run([str(codex_binary()), "--version"], capture_output=True, text=True, timeout=60)
    return out.stdout.strip().split()[-1]


def cleanup(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
