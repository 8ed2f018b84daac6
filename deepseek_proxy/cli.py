"""The `deepseek-proxy` command: serve, codex setup, doctor, config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .config import Config, ConfigError, load_config


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
    return args.handler(config, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepseek-proxy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"deepseek-proxy {__version__}")
    parser.add_argument("--config", type=Path, default=None,
                        help="TOML config file (default: $DEEPSEEK_PROXY_CONFIG or ~/.config/deepseek-proxy/config.toml)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy (gunicorn + gevent)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="bind port (default 8787)")
    serve.add_argument("--workers", type=int, help="gevent worker processes (default 1)")
    serve.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(handler=_serve)

    show = commands.add_parser("config", help="print the effective configuration (no secrets)")
    show.set_defaults(handler=_show_config)

    codex = commands.add_parser("codex", help="Codex CLI integration")
    codex_commands = codex.add_subparsers(dest="codex_command", metavar="SUBCOMMAND", required=True)
    setup = codex_commands.add_parser("setup", help="write the provider, profiles and catalog into ~/.codex/config.toml")
    setup.add_argument("--dry-run", action="store_true", help="show the change, write nothing")
    setup.add_argument("--codex-home", type=Path, default=None, help="default: $CODEX_HOME or ~/.codex")
    setup.set_defaults(handler=_codex_setup)

    claude = commands.add_parser("claude", help="Claude Code integration")
    claude_commands = claude.add_subparsers(dest="claude_command", metavar="SUBCOMMAND", required=True)
    claude_setup = claude_commands.add_parser("setup", help="merge the proxy's env block into Claude Code's settings.json")
    claude_setup.add_argument("--dry-run", action="store_true", help="show the change, write nothing")
    claude_setup.add_argument("--claude-home", type=Path, default=None, help="default: $CLAUDE_CONFIG_DIR or ~/.claude")
    claude_setup.add_argument("--proxy-url", default=None, help="the proxy's URL (default: from the proxy config)")
    claude_setup.set_defaults(handler=_claude_setup)

    doctor = commands.add_parser("doctor", help="check proxy, upstream, key and Codex set-up; say what to fix")
    doctor.add_argument("--codex-home", type=Path, default=None)
    doctor.add_argument("--claude-home", type=Path, default=None)
    doctor.set_defaults(handler=_doctor)
    return parser


def _serve(config: Config, args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication

    from .server import configure_logging, gunicorn_settings

    class ProxyApplication(BaseApplication):
        def load_config(self) -> None:
            for key, value in gunicorn_settings(config).items():
                if key in self.cfg.settings:  # a setting an older gunicorn lacks is simply not applied
                    self.cfg.set(key, value)
            self.cfg.set("when_ready", lambda server: _announce(config))
            self.cfg.set("post_worker_init", lambda worker: configure_logging(config.server.log_level))

        def load(self):
            from .app import create_app

            return create_app(config)

    ProxyApplication().run()
    return 0


def _announce(config: Config) -> None:
    lines = [f"deepseek-proxy {__version__} listening on http://{config.server.host}:{config.server.port}"
             f" (Responses API at {config.public_base_url()}/responses)"]
    for model in config.models.values():
        upstream = config.upstreams[model.upstream]
        lines.append(f"  model {model.id} → {upstream.name} {upstream.base_url} ({model.upstream_model})")
    print("\n".join(lines), flush=True)


def _show_config(config: Config, args: argparse.Namespace) -> int:
    print(f"config file: {config.path or '(none, built-in defaults)'}")
    print(f"listen: {config.server.host}:{config.server.port}  workers: {config.server.workers}  "
          f"max body: {config.server.max_body_bytes // (1024 * 1024)} MB")
    for up in config.upstreams.values():
        print(f"upstream {up.name}: {up.base_url} profile={up.profile} key={up.api_key}")
    for m in config.models.values():
        print(f"model {m.id}: upstream={m.upstream} model={m.upstream_model} thinking={m.thinking} "
              f"images={m.images} stream={m.stream}")
    return 0


def _codex_setup(config: Config, args: argparse.Namespace) -> int:
    from .codex.config_toml import run_setup

    return run_setup(config, codex_home=args.codex_home, dry_run=args.dry_run, out=sys.stdout)


def _claude_setup(config: Config, args: argparse.Namespace) -> int:
    from .claude.setup import run_setup

    return run_setup(config, claude_home=args.claude_home, dry_run=args.dry_run, proxy_url=args.proxy_url,
                     out=sys.stdout)


def _doctor(config: Config, args: argparse.Namespace) -> int:
    from .codex.doctor import run_doctor

    return run_doctor(config, codex_home=args.codex_home, claude_home=args.claude_home, out=sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
