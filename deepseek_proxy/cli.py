"""The `deepseek-proxy` command: serve, codex setup, doctor, config."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import __version__
from .config import Config, ConfigError, UpstreamConfig, key_source_fix, load_config


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    overrides = {key: getattr(args, key, None) for key in ("host", "port", "workers", "log_level")}
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"deepseek-proxy: invalid configuration: {exc}", file=sys.stderr)
        return 2
    try:
        return args.handler(config, args)
    except ConfigError as exc:  # e.g. a bad --proxy-url
        print(f"deepseek-proxy: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndeepseek-proxy: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepseek-proxy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"deepseek-proxy {__version__}")
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML config file (default: $DEEPSEEK_PROXY_CONFIG or "
                             "~/.config/deepseek-proxy/config.toml)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy (gunicorn + gevent)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="bind port (default 8787)")
    serve.add_argument("--workers", type=int, help="gevent worker processes (default 1)")
    serve.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(handler=_serve)

    show = commands.add_parser("config", help="print the effective configuration (no secrets)")
    show.set_defaults(handler=_show_config)

    setup = _client_setup(commands, "codex", "Codex CLI integration",
                          "write the provider, profiles and catalog into ~/.codex/config.toml", _codex_setup)
    setup.add_argument("--websockets", action="store_true",
                       help="let Codex use the Responses WebSocket transport (only new items are sent each turn)")
    _client_setup(commands, "claude", "Claude Code integration",
                  "merge the proxy's env block into Claude Code's settings.json", _claude_setup)
    gemini_setup = _client_setup(commands, "gemini", "Gemini CLI integration",
                                 "point Gemini CLI at the proxy (~/.gemini/settings.json, .env)", _gemini_setup)
    gemini_setup.add_argument("--offline", action="store_true", help="also switch off telemetry, usage statistics, "
                                                                     "auto-update and its notification")

    doctor = commands.add_parser("doctor", help="check proxy, upstream, key and Codex set-up; say what to fix")
    doctor.add_argument("--codex-home", type=Path, default=None)
    doctor.add_argument("--claude-home", type=Path, default=None, help=_HOME_HELP["claude"])
    doctor.add_argument("--gemini-home", type=Path, default=None, help=_HOME_HELP["gemini"])
    doctor.add_argument("--proxy-url", dest="proxy_url", metavar="URL", help=_PROXY_URL_HELP)
    doctor.set_defaults(handler=_doctor)
    _ops_commands(commands)
    return parser


_PROXY_URL_HELP = ("the proxy's URL as the client reaches it, e.g. https://host/deepseek behind nginx (default: the "
                   "running proxy, else the configured host and port)")
_HOME_HELP = {"codex": "default: $CODEX_HOME or ~/.codex", "claude": "default: $CLAUDE_CONFIG_DIR or ~/.claude",
              "gemini": "default: ~/.gemini"}


def _client_setup(commands: Any, client: str, group_help: str, setup_help: str,
                  handler: Any) -> argparse.ArgumentParser:
    """`deepseek-proxy <client> setup` with the options every client's setup has (--dry-run, --<client>-home,
    --proxy-url); the caller adds the client's own."""
    group = commands.add_parser(client, help=group_help)
    subcommands = group.add_subparsers(dest=f"{client}_command", metavar="SUBCOMMAND", required=True)
    setup = subcommands.add_parser("setup", help=setup_help)
    setup.add_argument("--dry-run", action="store_true", help="show the change, write nothing")
    setup.add_argument(f"--{client}-home", type=Path, default=None, help=_HOME_HELP[client])
    setup.add_argument("--proxy-url", dest="proxy_url", metavar="URL", help=_PROXY_URL_HELP)
    setup.set_defaults(handler=handler)
    return setup


def _ops_commands(commands: Any) -> None:
    """keys and usage (deepseek_proxy/ops/cli.py)."""
    from .ops.cli import add_commands

    add_commands(commands)


# ------------------------------------------------------------------------------------------------------ serve

class BindError(Exception):
    """The listening address cannot be taken; the message is the one line the user sees."""


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_listener(host: str, port: int) -> socket.socket:
    """Bind the listening socket the way gunicorn would (same family choice, SO_REUSEADDR), so a taken port is
    one clear line at once instead of gunicorn's five retries; gunicorn is then handed this very socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BindError(_bind_problem(host, port, exc)) from None
    return sock


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    where = _address(host, port)
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {where}: the host name {host!r} does not resolve (--host / server.host)"
    if exc.errno == errno.EADDRINUSE:
        from . import runstate

        other = runstate.listening_on(port)
        if other is not None:
            return (f"{where} is already in use — by deepseek-proxy ({other.process()}); stop it first, or choose "
                    f"another port with --port")
        return f"{where} is already in use — another deepseek-proxy? (choose another port with --port)"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need root; use --port 8787)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: {host} is not an address of this machine (--host / server.host)"
    return f"cannot listen on {where}: {exc.strerror or exc}"


def key_problems(config: Config, env: Mapping[str, str] = os.environ) -> list[tuple[UpstreamConfig, list[str], str]]:
    """(upstream, its models, why) for every upstream a model uses whose key source gives no key."""
    from .config import KeyUnavailable, resolve_key

    problems = []
    for name in dict.fromkeys(m.upstream for m in config.models.values()):
        upstream = config.upstreams[name]
        if upstream.api_key in ("client", "none"):
            continue
        try:
            resolve_key(upstream.api_key, env)
        except KeyUnavailable as exc:
            models = [m.id for m in config.models.values() if m.upstream == name]
            problems.append((upstream, models, str(exc)))
    return problems


def announcement(config: Config, problems: list[tuple[UpstreamConfig, list[str], str]]) -> str:
    """What `serve` says once it listens: where, each model → upstream, and what has no key (and the fix)."""
    root = config.public_base_url().removesuffix("/v1")
    lines = [(f"deepseek-proxy {__version__} listening on {root} (Responses API at {config.public_base_url()}"
              f"/responses); Ctrl-C stops it")]
    width = max((len(m) for m in config.models), default=0)
    missing = {up.name for up, _, _ in problems}
    for model in config.models.values():
        upstream = config.upstreams[model.upstream]
        flag = "  [no key]" if upstream.name in missing else ""
        lines.append(f"  {model.id:<{width}} → {upstream.name} {upstream.base_url} ({model.upstream_model}){flag}")
    others_work = len(missing) < len({m.upstream for m in config.models.values()})
    for upstream, models, why in problems:
        answer = "answers" if len(models) == 1 else "answer"
        lines.append(f"warning: no API key for upstream {upstream.name} ({upstream.base_url}): {why}.")
        lines.append(f"  {', '.join(models)} {answer} 401 upstream_key_missing until it has one"
                     + ("; the other models work." if others_work else "."))
        lines.append(f"  fix: {key_source_fix(upstream)}")
    return "\n".join(lines)


def _serve(config: Config, args: argparse.Namespace) -> int:
    from . import runstate

    problems = key_problems(config)
    try:
        listener = bind_listener(config.server.host, config.server.port)
    except BindError as exc:
        print(f"deepseek-proxy: {exc}", file=sys.stderr)
        return 1
    listen_fd = listener.detach()  # gunicorn owns (and closes) it from here on

    from gunicorn.app.base import BaseApplication

    from .server import configure_logging, gunicorn_settings

    master_pid = os.getpid()
    recorded: dict[str, Any] = {}

    def when_ready(server: Any) -> None:
        port = server.LISTENERS[0].sock.getsockname()[1] if server.LISTENERS else config.server.port
        actual = config.listening_at(config.server.host, port)  # port 0 means "any free port": say which
        try:
            runstate.record(config, host=config.server.host, port=port, version=__version__)
            recorded["port"] = port
        except OSError as exc:
            print(f"warning: cannot record the running proxy in {runstate.run_dir()} ({exc.strerror}); "
                  f"`codex setup` and `doctor` will assume the configured address", file=sys.stderr)
        print(announcement(actual, problems), flush=True)

    def post_worker_init(worker: Any) -> None:
        configure_logging(config.server.log_level)
        # Ctrl-C reaches every process of the terminal's group; the master then stops the workers itself (SIGQUIT).
        # A worker that also acted on the terminal's SIGINT would run its quit handler a second time while exiting,
        # and gevent prints that as a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    class ProxyApplication(BaseApplication):
        def load_config(self) -> None:
            for key, value in gunicorn_settings(config).items():
                if key in self.cfg.settings:  # a setting an older gunicorn lacks is simply not applied
                    self.cfg.set(key, value)
            self.cfg.set("bind", [f"fd://{listen_fd}"])  # the socket bound above, so it cannot be taken in between
            if config.server.log_level != "debug":
                # gunicorn's own info lines (booting, signals, worker exits) are noise in a terminal; the proxy's
                # log keeps its level, and gunicorn's warnings and errors still show.
                self.cfg.set("loglevel", "warning")
            self.cfg.set("when_ready", when_ready)
            self.cfg.set("post_worker_init", post_worker_init)

        def load(self):
            from .app import create_app

            return create_app(config)

    code = 0
    try:
        ProxyApplication().run()
    except SystemExit as exc:
        if os.getpid() != master_pid:
            raise  # a worker process leaving through these frames: not the server's end
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:  # Ctrl-C before gunicorn's own handlers were in place
        code = 0
    finally:
        if os.getpid() == master_pid and "port" in recorded:
            runstate.remove(recorded["port"])
    if os.getpid() == master_pid and code == 0:
        print("deepseek-proxy stopped", flush=True)
    return code


def _target(config: Config, args: argparse.Namespace) -> Config:
    """The proxy a client-side command talks to (--proxy-url, else the running one), saying so when it is not the
    configured address."""
    from .runstate import find_target

    target = find_target(config, proxy_url=getattr(args, "proxy_url", None))
    if target.note:
        print(f"note: {target.note}", flush=True)
    return target.config


def _show_config(config: Config, args: argparse.Namespace) -> int:
    from .runstate import find_target, running

    server = config.server
    print(f"config file: {config.path or '(none, built-in defaults)'}")
    print(f"listen: {_address(server.host, server.port)}  workers: {server.workers}  "
          f"max body: {server.max_body_bytes // (1024 * 1024)} MB  log level: {server.log_level}")
    for entry in running():
        print(f"running: deepseek-proxy at {entry.describe()}")
    target = find_target(config)
    if target.note:
        print(f"note: {target.note}")
    elif not running():
        print("running: no deepseek-proxy is running (for this user)")
    # Secrets are named and described, never shown.
    print(f"client keys: {len(server.client_keys)} (values hidden)" if server.client_keys else
          "client keys: none (clients need no key)")
    secret_from = ("DEEPSEEK_PROXY_SECRET" if os.environ.get("DEEPSEEK_PROXY_SECRET") else
                   "server.reasoning_secret in the config file" if _file_sets(config, "reasoning_secret") else
                   "generated, kept in the state directory")
    print(f"reasoning secret: {secret_from} (value hidden)")
    for up in config.upstreams.values():
        print(f"upstream {up.name}: {up.base_url} profile={up.profile} key={up.api_key}{_key_state(up)}")
    for m in config.models.values():
        print(f"model {m.id}: upstream={m.upstream} model={m.upstream_model} thinking={m.thinking} "
              f"images={m.images} stream={m.stream}")
    from .ops.cli import describe_settings

    print(describe_settings(config))
    return 0


def _file_sets(config: Config, name: str) -> bool:
    from .config import tomllib

    try:
        return bool(config.path) and name in tomllib.loads(Path(config.path or "").read_text()).get("server", {})
    except (OSError, ValueError):
        return False


def _key_state(upstream: UpstreamConfig) -> str:
    """Whether the key source gives a key, where that is cheap to know (an environment variable)."""
    kind, _, arg = upstream.api_key.partition(":")
    if kind == "env":
        return " (set)" if os.environ.get(arg, "").strip() else f" (NOT SET: {key_source_fix(upstream)})"
    return ""


def _codex_setup(config: Config, args: argparse.Namespace) -> int:
    from .codex.config_toml import run_setup

    return run_setup(_target(config, args), codex_home=args.codex_home, dry_run=args.dry_run, out=sys.stdout,
                     websockets=args.websockets)


def _claude_setup(config: Config, args: argparse.Namespace) -> int:
    from .claude.setup import run_setup

    # _target resolves --proxy-url (or the running proxy) into the config's public URL, as for codex setup.
    return run_setup(_target(config, args), claude_home=args.claude_home, dry_run=args.dry_run, out=sys.stdout)


def _gemini_setup(config: Config, args: argparse.Namespace) -> int:
    from .gemini.setup import run_setup

    return run_setup(_target(config, args), gemini_home=args.gemini_home, dry_run=args.dry_run, offline=args.offline,
                     out=sys.stdout)


def _doctor(config: Config, args: argparse.Namespace) -> int:
    from .codex.doctor import run_doctor

    return run_doctor(_target(config, args), codex_home=args.codex_home, claude_home=args.claude_home,
                      gemini_home=args.gemini_home, out=sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
