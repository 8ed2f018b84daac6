"""`deepseek-proxy doctor`: is everything between Codex and DeepSeek in place? Says what is wrong, in plain
words, with the command that fixes it. Exit code 1 when any check fails.

The checks run in the order a request travels backwards: the proxy answers; the upstream is reachable and takes
the key; Codex is installed; its config.toml has our provider and profiles and nothing that stops Codex from
starting; the model catalog is there and Codex can parse it. Later checks still run after a failure, so one
run shows every problem.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import requests

from ..clientconfig import proxy_command, read_text
from ..config import Config, key_source_fix
from . import catalog as catalog_mod
from .config_toml import (
    PROVIDER_ID,
    SETUP_COMMAND,
    SetupRefused,
    catalog_file,
    catalog_url,
    key_choice,
    parse_toml,
    profile_file,
    profile_name,
    provider_settings,
    resolve_codex_home,
)

HTTP_TIMEOUT = 5.0
DEEP_TIMEOUT = 45.0  # /readyz?deep=1 asks every upstream for its model list


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    fix: str | None = None
    warning: bool = False  # shown, but does not fail the run


def proxy_root(config: Config) -> str:
    return config.public_base_url().removesuffix("/v1")


def _client_bearer(config: Config, env: Mapping[str, str]) -> dict[str, str]:
    """The Authorization header Codex would send (its env_key variable, read from this environment)."""
    key = key_choice(config).env_key
    value = env.get(key, "").strip() if key else provider_settings(config)[0].get("experimental_bearer_token", "")
    return {"Authorization": f"Bearer {value}"} if value else {}


# -------------------------------------------------------------------------------------------- 1. the proxy

def check_proxy(config: Config, session: requests.Session) -> Check:
    root = proxy_root(config)
    try:
        response = session.get(f"{root}/healthz", timeout=HTTP_TIMEOUT)
    except requests.ConnectionError:
        if config.public_url:  # --proxy-url: a proxy elsewhere, not one this machine starts
            return Check("proxy", False, f"Nothing answers at {root} (--proxy-url).",
                         "check that URL and that the proxy behind it is running")
        return Check("proxy", False, f"Nothing answers at {root}: the proxy is not running (or listens elsewhere).",
                     proxy_command(config, "serve"))
    except requests.Timeout:
        return Check("proxy", False, f"{root} accepted the connection but did not answer within {HTTP_TIMEOUT:g} s.",
                     f"restart it: {proxy_command(config, 'serve')}")
    if response.status_code != 200:
        return Check("proxy", False, f"{root}/healthz answered HTTP {response.status_code}: another program is "
                     f"listening on port {config.server.port}, not deepseek-proxy.",
                     "stop that program, or set [server] port in the proxy config, then "
                     + proxy_command(config, "serve"))
    return Check("proxy", True, f"deepseek-proxy answers at {root}")


# ---------------------------------------------------------------------------------------- 2. the upstreams

def _upstream_fix(config: Config, name: str, status: int | None, detail: str) -> str:
    upstream = config.upstreams[name]
    source = upstream.api_key
    restart = f"then restart `{proxy_command(config, 'serve')}`"
    no_key = status is None and any(w in detail for w in ("not set", "gave no key", "could not run"))
    if no_key and source.startswith(("env:", "pass:")):
        return key_source_fix(upstream, restart=proxy_command(config, "serve"))  # the words `serve` itself uses
    if status in (401, 403) or "not set" in detail or "gave no key" in detail:
        if source == "client":
            return "export DEEPSEEK_API_KEY=<a valid DeepSeek key> (Codex sends it; the proxy passes it on)"
        if source.startswith("env:"):
            return f"export {source[4:]}=<a valid key for {upstream.base_url}>, {restart}"
        if source.startswith("pass:"):
            return f"pass edit {source[5:]}  (put a valid key on its first line), {restart}"
        return f"set upstreams.{name}.api_key in the proxy config, {restart}"
    if status == 402:
        return "top up the account balance with the provider (https://platform.deepseek.com for DeepSeek)"
    where = f"upstreams.{name}.base_url" + (f" in {config.path}" if config.path else "")
    return f"check the network and {where} (DEEPSEEK_BASE_URL overrides it for DeepSeek), {restart}"


def _status_of(error: str) -> int | None:
    match = re.match(r"\s*(\d{3})\b", error or "")
    return int(match.group(1)) if match else None


def _explain(status: int | None, error: str, base_url: str) -> str:
    if status in (401, 403):
        return f"{base_url} rejected the API key (HTTP {status}: {error.split(':', 1)[-1].strip()})"
    if status == 402:
        return f"{base_url} says the balance is insufficient (HTTP 402)"
    if status in (502, 504) or status is None:
        return f"cannot reach {base_url}: {error}"
    return f"{base_url} answered HTTP {status}: {error.split(':', 1)[-1].strip()}"


def check_upstreams_via_proxy(config: Config, session: requests.Session, env: Mapping[str, str]) -> list[Check] | None:
    """Ask the running proxy (GET /readyz?deep=1); None when it has no such endpoint."""
    try:
        response = session.get(f"{proxy_root(config)}/readyz", params={"deep": "1"},
                               headers=_client_bearer(config, env), timeout=DEEP_TIMEOUT)
    except requests.RequestException:
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 404 or not isinstance(body, dict) or not isinstance(body.get("upstreams"), dict):
        return None
    checks = []
    for name, info in sorted(body["upstreams"].items()):
        base_url = info.get("base_url") or name
        pool = _pool_text(info.get("keys"))
        if info.get("ok"):
            checks.append(Check(f"upstream {name}", True, f"{base_url} is reachable and accepts the key "
                                                          f"(checked by the proxy){pool}"))
            continue
        error = str(info.get("error") or "not ready")
        status = _status_of(error)
        if info.get("key") == "missing":
            message = f"the proxy has no key for {base_url}: {error}"
        else:
            message = _explain(status, error, base_url)
        checks.append(Check(f"upstream {name}", False, message + pool,
                            _upstream_fix(config, name, status, error) if name in config.upstreams else None))
    return checks


def _pool_text(keys: object) -> str:
    """The key pool's state as /readyz describes it (masked keys), one `; `-separated line; "" without a pool."""
    if not isinstance(keys, list) or not keys:
        return ""
    parts = []
    for key in keys:
        if isinstance(key, dict):
            left = f" {key['seconds_left']} s" if "seconds_left" in key else ""
            why = f" ({key['reason']})" if key.get("reason") else ""
            parts.append(f"{key.get('source')} {key.get('key') or '-'} {key.get('state')}{left}{why}")
    return "; keys: " + "; ".join(parts)


def check_upstreams_direct(config: Config, env: Mapping[str, str]) -> list[Check]:
    """Without a running proxy: ask each upstream's models endpoint ourselves, with the key the proxy would use."""
    from ..upstream.client import UpstreamClient, UpstreamError

    checks = []
    for name in sorted({m.upstream for m in config.models.values()}):
        upstream = config.upstreams[name]
        client = UpstreamClient(upstream, env=env)
        label = f"upstream {name}"
        if client.key_error:
            checks.append(Check(label, False, f"no key for {upstream.base_url}: {client.key_error}",
                                _upstream_fix(config, name, None, client.key_error)))
            continue
        client_key = None
        if client.passes_client_key:
            client_key = env.get("DEEPSEEK_API_KEY", "").strip() or None
            if client_key is None:
                checks.append(Check(label, False, "DEEPSEEK_API_KEY is not set in this shell (with api_key = "
                                                  "\"client\" Codex sends it and the proxy passes it on)",
                                    _upstream_fix(config, name, None, "not set")))
                continue
        try:
            client.list_models(client_key=client_key)
        except UpstreamError as exc:
            error = f"{exc.status}: {exc.message}"
            checks.append(Check(label, False, _explain(exc.status, error, upstream.base_url),
                                _upstream_fix(config, name, exc.status, error)))
        except requests.RequestException as exc:
            error = short_error(exc)
            checks.append(Check(label, False, _explain(None, error, upstream.base_url),
                                _upstream_fix(config, name, None, error)))
        else:
            checks.append(Check(label, True, f"{upstream.base_url} is reachable and accepts the key "
                                             f"(checked directly; the proxy is not running)"))
        finally:
            client.session.close()
    return checks


def short_error(exc: BaseException) -> str:
    """The useful words of a requests exception ("connection refused"), not its whole urllib3 repr."""
    text = str(exc)
    for phrase in ("Connection refused", "Name or service not known", "Temporary failure in name resolution",
                   "No route to host", "Network is unreachable", "certificate verify failed", "timed out",
                   "Connection reset by peer", "Remote end closed connection"):
        if phrase.lower() in text.lower():
            return phrase.lower()
    return exc.__class__.__name__


# ------------------------------------------------------------------------------------------------ 3. Codex

def check_codex(env: Mapping[str, str]) -> tuple[Check, Path | None, str | None]:
    codex = catalog_mod.find_codex(env)
    if codex is None:
        return (Check("codex", False, f"Codex is not installed: {catalog_mod.codex_missing_message(env)}.",
                      catalog_mod.INSTALL_HINT), None, None)
    try:
        version = catalog_mod.codex_version(codex, env=env)
    except (catalog_mod.CatalogUnavailable, OSError) as exc:
        return (Check("codex", False, f"{codex} does not run: {exc}", f"reinstall it: {catalog_mod.INSTALL_HINT}"),
                None, None)
    return Check("codex", True, f"Codex {version} at {codex}"), codex, version


# ----------------------------------------------------------------------------------------- 4. config.toml

def check_codex_config(config: Config, home: Path, env: Mapping[str, str]) -> Iterator[Check]:
    setup = proxy_command(config, "codex", "setup")
    path = home / "config.toml"
    try:
        text = read_text(path, SETUP_COMMAND)
        plain = parse_toml(text, str(path))[1] if text is not None else None
    except SetupRefused as exc:
        yield Check("config.toml", False, str(exc).split(" Nothing was changed")[0],
                    f"repair or move {path} away (setup leaves backups as config.toml.bak-*), then {setup}")
        return
    if plain is None:
        yield Check("config.toml", False, f"{path} does not exist: Codex does not know the proxy.", setup)
        return

    if "profile" in plain:
        yield Check("config.toml", False, f'{path} has a top-level `profile = "{plain["profile"]}"`, which Codex '
                    f"0.169 refuses: no Codex command starts.", f"delete that line from {path}")
    providers = plain.get("model_providers")
    if not isinstance(providers, dict):
        providers = {}
    for pid, provider in sorted(providers.items()):
        if isinstance(provider, dict) and provider.get("wire_api") == "chat":
            fix = setup if pid == PROVIDER_ID else \
                f'edit {path}: set wire_api = "responses" in [model_providers.{pid}] (or delete that provider)'
            yield Check("config.toml", False, f'[model_providers.{pid}] has wire_api = "chat": Codex refuses to '
                        f"start while any provider has it.", fix)

    ours = providers.get(PROVIDER_ID)
    if not isinstance(ours, dict):
        yield Check("config.toml", False, f"{path} has no [model_providers.{PROVIDER_ID}]: Codex does not know "
                    f"the proxy.", setup)
    else:
        problems = []
        if str(ours.get("name", "")).strip().lower() == "openai":
            problems.append('it is named "OpenAI", which makes Codex call OpenAI-only endpoints '
                            "(/responses/compact)")
        if ours.get("base_url") != config.public_base_url():
            problems.append(f"base_url is {ours.get('base_url')!r} but the proxy serves {config.public_base_url()!r}")
        expected_key = key_choice(config).env_key
        if ours.get("env_key") != expected_key:
            problems.append(f"env_key is {ours.get('env_key')!r}, the proxy expects {expected_key!r}")
        if config.codex.catalog == "url":
            if ours.get("model_catalog_url") != catalog_url(config):
                problems.append(f"model_catalog_url is {ours.get('model_catalog_url')!r}, expected "
                                f"{catalog_url(config)!r}")
            if not expected_key and not ours.get("experimental_bearer_token"):
                problems.append("it has no credential, so Codex skips model_catalog_url")
        if problems:
            yield Check("config.toml", False, f"[model_providers.{PROVIDER_ID}]: " + "; ".join(problems) + ".", setup)
        else:
            yield Check("config.toml", True, f"[model_providers.{PROVIDER_ID}] points at {config.public_base_url()}")
        if expected_key and not env.get(expected_key, "").strip():
            key = key_choice(config)
            yield Check("key", False, f"{expected_key} is not set in this shell: Codex stops with "
                        f"\"Missing environment variable: `{expected_key}`\". {key.instructions}",
                        f"export {expected_key}=…")

    legacy = plain.get("profiles")
    if not isinstance(legacy, dict):
        legacy = {}
    for model in config.models.values():
        name = profile_name(model.id)
        yield from _check_profile(config, home, model.id, name, in_legacy=name in legacy, setup=setup)


def _check_profile(config: Config, home: Path, model_id: str, name: str, *, in_legacy: bool,
                   setup: str) -> Iterator[Check]:
    path = profile_file(home, model_id)
    label = f"profile {name}"
    if in_legacy:
        yield Check(label, False, f"config.toml still has a [profiles.{name}] table: Codex 0.169 refuses "
                    f"`codex -p {name}` while it exists.", f"{setup}  (moves it into {path.name})")
    try:
        text = read_text(path, SETUP_COMMAND)
        plain = parse_toml(text, str(path))[1] if text is not None else None
    except SetupRefused as exc:
        yield Check(label, False, str(exc).split(" Nothing was changed")[0], f"repair or delete {path}, then {setup}")
        return
    if plain is None:
        yield Check(label, False, f"{path} is missing: `codex -p {name}` does not exist.", setup)
        return
    if plain.get("model") != model_id or plain.get("model_provider") != PROVIDER_ID:
        yield Check(label, False, f"{path.name} selects model {plain.get('model')!r} on provider "
                    f"{plain.get('model_provider')!r}, not {model_id!r} on {PROVIDER_ID!r}"
                    + (" (without model_provider Codex uses OpenAI)" if not plain.get("model_provider") else "")
                    + ".", setup)
        return
    if config.codex.catalog == "file" and plain.get("model_catalog_json") != str(catalog_file(home)):
        yield Check(label, False, f"{path.name} does not use the catalog file {catalog_file(home)}.", setup)
        return
    yield Check(label, True, f"`codex -p {name}` → {model_id} through the proxy")


# ---------------------------------------------------------------------------------------------- 5. catalog

def parse_with_codex(codex: Path, catalog_path: Path, env: Mapping[str, str]) -> tuple[list[str] | None, str]:
    """(slugs Codex read from the catalog file, error). Runs with a CODEX_HOME that does not exist, so only the
    catalog is judged, not the rest of the user's config."""
    result = catalog_mod.run_codex(
        codex, ["debug", "models", "-c", f"model_catalog_json={json.dumps(str(catalog_path))}"], env=env)
    try:
        return [m.get("slug") for m in json.loads(result.stdout)["models"]], ""
    except (ValueError, KeyError, TypeError):
        lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error")] or result.stderr.splitlines()
        return None, (lines[0] if lines else f"exit {result.returncode}")


def check_catalog(config: Config, home: Path, codex: Path | None, installed_version: str | None,
                  session: requests.Session, env: Mapping[str, str]) -> Iterator[Check]:
    setup = proxy_command(config, "codex", "setup")
    if config.codex.catalog == "file":
        path = catalog_file(home)
        if not path.is_file():
            yield Check("catalog", False, f"the model catalog {path} is missing: Codex would print \"Model "
                        f"metadata ... not found\" and send no apply_patch tool and no reasoning effort.", setup)
            return
        source = str(path)
        try:
            built_with = json.loads(path.read_text()).get("generated_by", {}).get("codex_version")
        except (OSError, ValueError, AttributeError):
            built_with = None
        yield from _parse_check(config, codex, path, source, setup, env)
        if built_with and installed_version and built_with != installed_version:
            yield Check("catalog", True, f"the catalog was built from Codex {built_with}, Codex {installed_version} "
                        f"is installed: re-run setup to use its instructions.", setup, warning=True)
        return

    url = catalog_url(config)
    try:
        response = session.get(url, params={"client_version": installed_version or ""},
                               headers=_client_bearer(config, env), timeout=DEEP_TIMEOUT)
    except requests.RequestException:
        yield Check("catalog", False, f"cannot fetch the model catalog from {url}: the proxy is not answering.",
                    proxy_command(config, "serve"))
        return
    if response.status_code != 200:
        yield Check("catalog", False, f"{url} answered HTTP {response.status_code}: {_error_text(response)}",
                    "follow the message above" if response.status_code == 503 else setup)
        return
    with tempfile.TemporaryDirectory(prefix="deepseek-proxy-doctor-") as scratch:
        path = Path(scratch) / "catalog.json"
        path.write_bytes(response.content)
        yield from _parse_check(config, codex, path, url, setup, env)


def _error_text(response: requests.Response) -> str:
    """The message of an OpenAI-style error body, else the start of the body."""
    try:
        message = response.json()["error"]["message"]
        if isinstance(message, str):
            return message
    except (ValueError, KeyError, TypeError):
        pass
    return response.text.strip()[:300]


def _parse_check(config: Config, codex: Path | None, path: Path, source: str, setup: str,
                 env: Mapping[str, str]) -> Iterator[Check]:
    if codex is None:
        yield Check("catalog", False, f"cannot check the catalog from {source}: Codex is not installed.",
                    catalog_mod.INSTALL_HINT)
        return
    slugs, error = parse_with_codex(codex, path, env)
    if slugs is None:
        yield Check("catalog", False, f"Codex cannot read the catalog from {source}: {error}", setup)
        return
    missing = [m for m in config.models if m not in slugs]
    if missing:
        yield Check("catalog", False, f"the catalog from {source} has no entry for {', '.join(missing)}.", setup)
        return
    yield Check("catalog", True, f"Codex reads the catalog from {source} ({len(slugs)} models, "
                                 f"{', '.join(config.models)} included)")


# ------------------------------------------------------------------------------------------ the command

def collect_checks(config: Config, *, codex_home: Path | None, env: Mapping[str, str],
                   claude_home: Path | None = None, gemini_home: Path | None = None) -> Iterator[Check]:
    home = resolve_codex_home(codex_home, env)
    with requests.Session() as session:
        session.trust_env = False  # a loopback check must not go through an HTTP(S)_PROXY
        proxy = check_proxy(config, session)
        yield proxy
        upstream_checks = check_upstreams_via_proxy(config, session, env) if proxy.ok else None
        yield from upstream_checks if upstream_checks is not None else check_upstreams_direct(config, env)
        codex_check, codex, version = check_codex(env)
        yield codex_check
        yield from check_codex_config(config, home, env)
        yield from check_catalog(config, home, codex, version, session, env)
    from ..claude.doctor import collect_claude_checks

    yield from collect_claude_checks(config, claude_home=claude_home, env=env)
    from ..gemini.doctor import collect_gemini_checks

    yield from collect_gemini_checks(config, gemini_home=gemini_home, env=env)


def run_doctor(config: Config, *, codex_home: Path | None, out: TextIO = sys.stdout,
               env: Mapping[str, str] | None = None, claude_home: Path | None = None,
               gemini_home: Path | None = None) -> int:
    """`deepseek-proxy doctor`. Prints one line per check (and the fix for each failure); returns the exit code."""
    env = os.environ if env is None else env
    home = resolve_codex_home(codex_home, env)
    print(f"deepseek-proxy doctor — proxy config: {config.path or 'built-in defaults'}; CODEX_HOME: {home}", file=out)
    failures = 0
    for check in collect_checks(config, codex_home=codex_home, env=env, claude_home=claude_home,
                                gemini_home=gemini_home):
        mark = "warn" if check.warning else (" ok " if check.ok else "FAIL")
        print(f"[{mark}] {check.name}: {check.message}", file=out)
        if check.fix and (not check.ok or check.warning):
            print(f"       fix: {check.fix}", file=out)
        failures += 0 if check.ok else 1
    print(f"\n{failures} problem(s) found." if failures else "\nAll checks passed.", file=out)
    return 1 if failures else 0
