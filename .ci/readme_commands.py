#!/usr/bin/env python3
"""Runs the README's newcomer commands as written, so the CI log shows them working.

The README marks each block with `<!-- ci: NAME ... -->` on the line before its fence; the text run is the text
shown, read from README.md at run time (so the two cannot drift apart):

    python3 .ci/readme_commands.py install   # Quick start: pipx install, then `deepseek-proxy serve`
    python3 .ci/readme_commands.py test      # Quick start: `make test`

`install` runs in a fresh HOME under a temp dir (so a new pipx home and ~/.local/bin), from the repository root,
against the fake upstream (tests/fakes/fake_deepseek.py, run by the repo's test venv, answering the README's
example key). DEEPSEEK_BASE_URL points `serve` at the fake and DEEPSEEK_PROXY_PORT moves it off 8787 (which
another program may hold on a CI machine); the command text itself is unchanged. Once `serve` answers, one
streamed Responses request checks it serves; then SIGTERM ends it and the block must exit 0.

`test` runs the block in the repository with the caller's environment; its exit code (pytest's, through make;
5 when no test was collected) is this script's.

As root without `sudo` (a CI container), `sudo` runs its arguments directly: what sudo does for root.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from user_install_check import (  # a sibling script (its directory is on sys.path), not a package
    REPO,
    CheckFailed,
    clean_path,
    free_port,
    start_fake,
    stream_one_response,
    wait_healthy,
)

INSTALL_TIMEOUT = 600.0  # pipx builds the package and downloads its dependencies before serve starts


def say(message: str) -> None:
    print(f"[readme] {message}", flush=True)


def readme_block(name: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^<!-- ci: " + re.escape(name) + r"\b[^\n]*-->\n```(?:sh|bash)\n(.*?)^```", text,
                      re.MULTILINE | re.DOTALL)
    if not match:
        raise CheckFailed(f"README.md has no ```sh block marked <!-- ci: {name} -->")
    return match.group(1)


def base_env(work: Path) -> dict[str, str]:
    """The caller's environment, without what would point into the repo or at another installation."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIPX_", "DEEPSEEK_", "XDG_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH",
                                                                            "PYTHONHOME", "CODEX_HOME")}
    extra = []
    if os.geteuid() == 0 and shutil.which("sudo") is None:
        shim = work / "sudo-shim"
        shim.mkdir()
        (shim / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
        (shim / "sudo").chmod(0o755)
        extra.append(shim)
    env["PATH"] = clean_path(extra)
    env["DEBIAN_FRONTEND"] = "noninteractive"
    return env


def show_block(name: str, block: str) -> None:
    say(f"README block `{name}`, run as written (bash -eux):")
    for line in block.rstrip("\n").splitlines():
        print(f"    {line}", flush=True)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def run_install(test_python: str) -> int:
    block = readme_block("install")
    show_block("install", block)
    key_match = re.search(r"DEEPSEEK_API_KEY=(\S+)", block)
    key = key_match.group(1) if key_match else "sk-your-key"
    work = Path(tempfile.mkdtemp(prefix="deepseek-proxy-readme-"))
    home = work / "home"
    home.mkdir()
    fake, fake_url = start_fake(work, test_python, api_key=key, name="fake-readme")
    port = free_port()
    env = dict(base_env(work), HOME=str(home), DEEPSEEK_BASE_URL=fake_url, DEEPSEEK_PROXY_PORT=str(port))
    say(f"HOME={home} (fresh), DEEPSEEK_BASE_URL={fake_url} (the fake, key {key}), DEEPSEEK_PROXY_PORT={port}")

    started = time.monotonic()
    shell = subprocess.Popen(["bash", "-eux", "-c", block], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def relay() -> None:  # the block's own output, as it comes, into the CI log
        assert shell.stdout is not None
        for raw in shell.stdout:
            print(f"    | {raw.decode(errors='replace').rstrip()}", flush=True)

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    try:
        wait_healthy(port, lambda: shell.poll() is not None, timeout=INSTALL_TIMEOUT)
        say(f"installed and serving on 127.0.0.1:{port} after {time.monotonic() - started:.0f} s")
        installed = home / ".local/bin/deepseek-proxy"
        if not installed.exists():
            raise CheckFailed(f"{installed} does not exist: the systemd unit's ExecStart would not find it")
        say(f"{installed} exists (the systemd unit's ExecStart=%h/.local/bin/deepseek-proxy)")
        say(f"streamed POST /v1/responses: {stream_one_response(port)}")

        # bash may exec the block's last command itself; otherwise serve is the shell's child (gunicorn's
        # workers, the master's children, have the same command line and must not get the signal).
        servers = [shell.pid] if "serve" in cmdline(shell.pid) else \
            [p for p in children_of(shell.pid) if "serve" in cmdline(p)]
        if len(servers) != 1:
            raise CheckFailed(f"expected one `deepseek-proxy serve` under the block's shell, found {servers}")
        stop_started = time.monotonic()
        os.kill(servers[0], signal.SIGTERM)
        try:
            code = shell.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise CheckFailed("the block still runs 30 s after SIGTERM to serve") from None
        reader.join(timeout=5)
        if code != 0:
            raise CheckFailed(f"the block exited {code} after SIGTERM to serve (expected 0)")
        say(f"SIGTERM: serve ended and the block exited 0 after {time.monotonic() - stop_started:.2f} s")
    except CheckFailed as exc:
        reader.join(timeout=1)
        print(f"----- fake upstream log -----\n{fake.output()}-----", flush=True)
        say(f"FAILED: {exc}")
        say(f"work directory kept: {work}")
        return 1
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
        fake.stop()
    shutil.rmtree(work, ignore_errors=True)
    return 0


def run_test() -> int:
    block = readme_block("test")
    show_block("test", block)
    work = Path(tempfile.mkdtemp(prefix="deepseek-proxy-readme-"))
    try:
        started = time.monotonic()
        code = subprocess.run(["bash", "-eux", "-c", block], cwd=REPO, env=base_env(work),
                              stdin=subprocess.DEVNULL, check=False).returncode
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"README block `test` exited {code} after {time.monotonic() - started:.0f} s")
    return code


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("install", "test"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if argv[0] == "install":
            return run_install(str(REPO / ".venv/bin/python"))
        return run_test()
    except CheckFailed as exc:
        say(f"FAILED: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
