"""What the three clients' `setup` and `doctor` commands share (codex/, claude/, gemini/): which key a client must
send, where the proxy is, and reading, backing up and writing the clients' config files. Each client's module keeps
what is its own (file formats, variable names, its checks).

- `key_choice`: which key a client sends to this proxy (the real DeepSeek key, a proxy client key, or none);
  `key_plan`: for a client whose config holds the key's value (Claude Code's settings.json, Gemini CLI's .env),
  the value to write and where it comes from (Codex's config names a variable instead);
- `proxy_base_url`: the proxy's root URL, as the clients that append their API's path themselves want it;
- `client_home`: where a client keeps its config;
- `read_text`, `backup_path`, `write_atomically`: a config file's text (refused, with the fix, when it is not
  readable UTF-8), the name of its backup, and a write that never leaves half a file;
- `proxy_command`, `print_next_steps`: deepseek-proxy command lines for this config, to show the user.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .config import Config

NO_KEY_TOKEN = "no-key-needed"  # what a client sends when the proxy needs no key (some refuse to start without one)


class SetupRefused(Exception):
    """A file we must not overwrite (broken, unreadable, or not safely mergeable), or a value we cannot know. The
    message says what to do."""


# ------------------------------------------------------------------------------------------------- the key

@dataclass(frozen=True)
class KeyChoice:
    env_key: str | None  # the variable whose value the client sends as its key; None = no key
    instructions: str | None  # what to set, shown when the variable is missing


def key_choice(config: Config) -> KeyChoice:
    """Which key a client must send to this proxy.

    An upstream that takes the client's own key gets the real DeepSeek key; otherwise a proxy with client keys
    gets one of those; otherwise nothing (Codex then sends no Authorization header at all).
    """
    used = {m.upstream for m in config.models.values()}
    if any(getattr(config.upstreams.get(u), "api_key", "") == "client" for u in used):
        return KeyChoice("DEEPSEEK_API_KEY",
                         "Set DEEPSEEK_API_KEY to your DeepSeek API key; deepseek-proxy passes it on to DeepSeek.")
    if config.server.client_keys:
        where = f" in {config.path}" if config.path else ""
        return KeyChoice("DEEPSEEK_PROXY_KEY",
                         f"Set DEEPSEEK_PROXY_KEY to one of the proxy's client keys (server.client_keys{where}).")
    return KeyChoice(None, None)


@dataclass(frozen=True)
class KeyPlan:
    value: str | None  # what to write as the client's key; None: keep the one in its config
    source: str  # said to the user, never the value itself


def key_plan(config: Config, existing: Any, env: Mapping[str, str], *, client: str, command: str,
             where: str) -> KeyPlan:
    """The key value a client's config must hold, with codex setup's semantics (`key_choice`):

    * the proxy asks for no key: a fixed placeholder (Claude Code and Gemini CLI refuse to start without any key);
    * it asks for one of its client keys: $DEEPSEEK_PROXY_KEY, which must be one of them; without it, a key
      already in the config (`existing`) that is one of them is kept;
    * an upstream takes the client's own key: $DEEPSEEK_API_KEY (or the key already there).
    The config holds a value, not a variable name, so the value is read now, from this shell. `client` names the
    client, `command` the setup command (e.g. "claude setup"), `where` the file that holds the key, for the user.
    """
    choice = key_choice(config)
    existing = existing if isinstance(existing, str) and existing and existing != NO_KEY_TOKEN else None
    if choice.env_key is None:
        return KeyPlan(NO_KEY_TOKEN, "a placeholder (the proxy asks for no key)")
    value = env.get(choice.env_key, "").strip()
    client_keys = set(config.server.client_keys)
    if choice.env_key == "DEEPSEEK_PROXY_KEY":
        if value:
            if value not in client_keys:
                raise SetupRefused(f"${choice.env_key} is set but is not one of the proxy's client keys "
                                   f"(server.client_keys). Nothing was changed; export the right key and run again.")
            return KeyPlan(value, f"${choice.env_key}")
        if existing in client_keys:
            return KeyPlan(None, f"the client key already in {where}")
    else:
        if value:
            return KeyPlan(value, f"${choice.env_key}")
        if existing:
            return KeyPlan(None, f"the key already in {where}")
    raise SetupRefused(f"the proxy asks {client} for a key. {choice.instructions} Then run "
                       f"`deepseek-proxy {command}` again; it copies the value into {where}. Nothing was changed.")


# ------------------------------------------------------------------------------------------- the proxy

def proxy_base_url(config: Config, proxy_url: str | None = None) -> str:
    """The proxy's root URL, for a client that appends its API's path itself (Claude Code `/v1/messages`, Gemini
    CLI `/v1beta/models/…`).

    `proxy_url` (--proxy-url) wins over the configured address; a trailing `/v1` or `/` is dropped from either."""
    url = (proxy_url or config.public_base_url()).strip().rstrip("/")
    return url.removesuffix("/v1").rstrip("/")


def proxy_command(config: Config, *words: str) -> str:
    """A deepseek-proxy command line for this config (with --config when one was given), shell-quoted."""
    prefix = ["deepseek-proxy"] + (["--config", str(config.path)] if config.path else [])
    return shlex.join(prefix + list(words))


# ------------------------------------------------------------------------------------------- files

def client_home(given: Path | str | None, env: Mapping[str, str], variable: str, default: str, *,
                inside: str = "") -> Path:
    """A client's config directory: `given` (the --<client>-home option), else $`variable` (joined with `inside`),
    else `default` under the home directory; absolute, so paths written from it do not depend on the directory the
    client is started from."""
    if given:
        path = Path(given)
    elif env.get(variable):
        path = Path(env[variable]) / inside
    else:
        path = Path(env.get("HOME") or Path.home()) / default
    return path.expanduser().absolute()


def read_text(path: Path, command: str) -> str | None:
    """A config file's text, None when absent. Refuses what cannot be read as UTF-8 text (a directory, binary
    data…), saying how to go on with `deepseek-proxy <command>` (e.g. "codex setup")."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise SetupRefused(f"{path} is a directory, not a file. Nothing was changed; move it away and run "
                           f"`deepseek-proxy {command}` again.") from None
    except UnicodeDecodeError as exc:
        raise SetupRefused(f"{path} is not UTF-8 text ({exc}). Nothing was changed; fix or move the file away "
                           f"and run `deepseek-proxy {command}` again.") from None
    except OSError as exc:
        raise SetupRefused(f"{path} cannot be read ({exc.strerror}). Nothing was changed.") from None


def backup_path(path: Path, now: float | None = None) -> Path:
    """Where to keep `path`'s old text: `NAME.bak-<local time>`, with `-N` added when that exists already."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    candidate = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.bak-{stamp}-{n}")
        n += 1
    return candidate


def write_atomically(path: Path, text: str, *, private: bool = False) -> None:
    """Write via a temporary file and rename. Keeps an existing file's permissions; a new file is created with the
    umask's, or readable by its owner only when `private` (it holds a real key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    try:
        os.chmod(tmp, path.stat().st_mode & 0o7777)
    except FileNotFoundError:
        if private:
            os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def print_next_steps(config: Config, client: str, out: TextIO) -> None:
    """What to run after a client's setup: the proxy (when it is not running yet), the client, doctor."""
    print("\nNext:", file=out)
    print(f"  {proxy_command(config, 'serve')}           # if it is not running yet", file=out)
    print(f"  {client}", file=out)
    print(f"  {proxy_command(config, 'doctor')}          # checks every step", file=out)
