"""Where running proxies listen: one small JSON file per `deepseek-proxy serve`, in the user state directory.

`serve` writes `running/<port>.json` (pid, host, port, base URL, config file, start time) once it listens and
removes it on a clean exit. `codex setup`, `doctor` and `config` read them, so that after `serve --port 9000` they
point at port 9000 rather than at the configured one. A file whose process is gone (the proxy was killed) is
ignored and removed when it is next read.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import Config, default_state_dir

RUN_DIR = "running"


@dataclass(frozen=True)
class RunningProxy:
    pid: int
    host: str
    port: int
    base_url: str  # the public /v1 URL clients use
    config: str | None  # the config file it was started with; None = built-in defaults
    started_at: float  # Unix time
    version: str = ""

    def describe(self) -> str:
        return f"{self.base_url} ({self.process()})"

    def process(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at))
        return f"pid {self.pid}, started {started}"


def run_dir(env: Mapping[str, str] = os.environ) -> Path:
    return default_state_dir(env) / RUN_DIR


def state_file(port: int, env: Mapping[str, str] = os.environ) -> Path:
    return run_dir(env) / f"{port}.json"


def _config_id(path: Path | None) -> str | None:
    return str(Path(path).expanduser().absolute()) if path else None


def record(config: Config, *, host: str, port: int, version: str = "", pid: int | None = None,
           env: Mapping[str, str] = os.environ) -> Path:
    """Write the state file of the proxy that now listens on host:port (atomically: readers never see half)."""
    entry = RunningProxy(pid=pid or os.getpid(), host=host, port=port,
                         base_url=config.listening_at(host, port).public_base_url(), config=_config_id(config.path),
                         started_at=time.time(), version=version)
    path = state_file(port, env)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(entry), indent=1) + "\n")
    os.replace(tmp, path)
    return path


def remove(port: int, *, pid: int | None = None, env: Mapping[str, str] = os.environ) -> None:
    """Remove the state file for `port` if it is this process's (another proxy may have taken the port since)."""
    path = state_file(port, env)
    entry = _read(path)
    if entry is not None and entry.pid != (pid or os.getpid()):
        return
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    """Whether `pid` is still a deepseek-proxy. After a reboot or a kill -9 the file outlives its process and the
    pid may belong to something else by now: where /proc tells, the command line must name the proxy."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS) or not readable: the pid is all there is to go on
    # Empty: a process just started (or a zombie); nothing to judge by.
    return not cmdline or b"deepseek" in cmdline or b"gunicorn" in cmdline


def _read(path: Path) -> RunningProxy | None:
    try:
        data = json.loads(path.read_text())
        return RunningProxy(pid=int(data["pid"]), host=str(data["host"]), port=int(data["port"]),
                            base_url=str(data["base_url"]), config=data.get("config"),
                            started_at=float(data.get("started_at", 0)), version=str(data.get("version", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running(env: Mapping[str, str] = os.environ) -> list[RunningProxy]:
    """The proxies that are running now, by port; stale files (dead process, unreadable) are removed."""
    found = []
    for path in sorted(run_dir(env).glob("*.json")):
        entry = _read(path)
        if entry is None or not _alive(entry.pid):
            try:
                path.unlink()
            except OSError:
                pass
            continue
        found.append(entry)
    return sorted(found, key=lambda e: e.port)


def listening_on(port: int, env: Mapping[str, str] = os.environ) -> RunningProxy | None:
    return next((e for e in running(env) if e.port == port), None)


@dataclass(frozen=True)
class Target:
    """Which proxy a client-side command (codex setup, doctor, config) should talk to, and why."""

    config: Config  # the config with the proxy's real address
    note: str | None  # said to the user when it is not simply the configured address


def find_target(config: Config, *, proxy_url: str | None = None, env: Mapping[str, str] = os.environ) -> Target:
    """--proxy-url wins; else a running proxy on the configured port; else the one running proxy started with the
    same config file (then say so); else the configured address."""
    if proxy_url:
        reached = config.reached_at(proxy_url)
        return Target(reached, f"using the proxy at {reached.public_base_url()} (--proxy-url)")
    instances = running(env)
    if any(e.port == config.server.port for e in instances):
        return Target(config, None)
    same_config = [e for e in instances if e.config == _config_id(config.path)]
    configured = f"{config.server.host}:{config.server.port}"
    if len(same_config) == 1:
        e = same_config[0]
        return Target(config.listening_at(e.host, e.port),
                      f"the running deepseek-proxy listens at {e.describe()}, not at the configured {configured}; "
                      f"using it (start it with --port {e.port}, or set [server] port = {e.port}, to keep that "
                      f"address)")
    if instances:
        listed = "; ".join(e.describe() + (f" with config {e.config}" if e.config else "") for e in instances)
        return Target(config, f"no deepseek-proxy with this config runs at the configured {configured}; running: "
                              f"{listed}. Pass --proxy-url URL (or --config) to use one of them")
    return Target(config, None)
