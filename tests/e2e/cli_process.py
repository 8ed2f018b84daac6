"""What the drivers of the pinned CLIs (``codex_cli``, ``gemini_cli``) share: finding the npm launcher in
``tests/e2e/node_modules`` and running it with stdin closed, in its own process group.

The launcher is node, which starts the real client (a native binary, or the client's own child processes for the
tools it runs): on a timeout the whole group is killed, so nothing keeps running after the test
(``subprocess.run`` would kill only node).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

NODE_BIN = Path(__file__).resolve().parent / "node_modules" / ".bin"


def npm_launcher(name: str, missing: Exception) -> Path:
    """``tests/e2e/node_modules/.bin/NAME``; raises ``missing`` (which says how to install it) when it is absent."""
    path = NODE_BIN / name
    if not path.exists():
        raise missing
    return path


def run_in_own_group(args: list[str], *, cwd: Path | None, env: Mapping[str, str],
                     timeout: float) -> subprocess.CompletedProcess:
    """Run ``args`` with stdin closed and text output captured; on timeout kill its process group and raise
    TimeoutExpired carrying what was printed so far."""
    proc = subprocess.Popen(args, cwd=str(cwd) if cwd else None, env=dict(env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise subprocess.TimeoutExpired(proc.args, timeout, output=stdout, stderr=stderr) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
