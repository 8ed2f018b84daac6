"""deploy/systemd/: both units pass `systemd-analyze verify`, are hardened as deploy/README.md says, stop within
their TimeoutStopSec, and the proxy really serves under MemoryDenyWriteExecute's rule.

There is no systemd as PID 1 here, so the units are not started; `systemd-analyze verify` loads each unit file
as the service manager would (unknown settings, bad values, a missing ExecStart binary are errors). ExecStart
must exist for that, so a temporary copy points it at this venv's `deepseek-proxy`.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import FAKE_KEY, REPO, TEST_SECRET, free_port
from tests.fakes.fake_deepseek import Reply

UNITS = REPO / "deploy" / "systemd"
USER_UNIT, SYSTEM_UNIT = "deepseek-proxy.service", "deepseek-proxy-system.service"
VENV_BINARY = Path(sys.executable).parent / "deepseek-proxy"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("these tests need `systemd-analyze`: apt-get install systemd (Debian/Ubuntu), part of systemd "
                    "on Arch")
    return found


def settings(name: str) -> dict[str, list[str]]:
    """The unit's `Key=value` lines (every value of a key that is repeated)."""
    found: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def verify(unit_text: str, name: str, tmp: Path, *, user: bool) -> subprocess.CompletedProcess:
    unit = tmp / name.replace("-system", "")
    unit.write_text(unit_text)
    runtime = tmp / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    # The user manager wants a runtime directory ($XDG_RUNTIME_DIR), even just to load unit files.
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    return subprocess.run([systemd_analyze(), "verify", *(["--user"] if user else []), str(unit)],
                          check=False, capture_output=True, text=True, env=env, timeout=60, cwd=tmp)


def with_venv_binary(name: str) -> str:
    text = (UNITS / name).read_text()
    text, count = re.subn(r"^ExecStart=\S+", f"ExecStart={VENV_BINARY}", text, flags=re.MULTILINE)
    assert count == 1, f"{name}: one ExecStart line"
    return text


@pytest.mark.parametrize("name,user", [(USER_UNIT, True), (SYSTEM_UNIT, False)])
def test_units_pass_systemd_analyze_verify(name, user, tmp_path):
    assert VENV_BINARY.exists()
    result = verify(with_venv_binary(name), name, tmp_path, user=user)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", f"verify warned:\n{result.stderr}"


def test_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: a unit whose binary does not exist, or with a misspelt setting, does not pass."""
    missing = with_venv_binary(SYSTEM_UNIT).replace(str(VENV_BINARY), str(tmp_path / "nowhere" / "deepseek-proxy"))
    assert verify(missing, SYSTEM_UNIT, tmp_path, user=False).returncode != 0
    misspelt = with_venv_binary(SYSTEM_UNIT).replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    result = verify(misspelt, SYSTEM_UNIT, tmp_path, user=False)
    assert "NoNewPrivilege" in result.stderr


HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "SystemCallFilter": "@system-service",
    "MemoryDenyWriteExecute": "yes", "LockPersonality": "yes", "Restart": "on-failure", "KillSignal": "SIGTERM",
    "KillMode": "mixed",
}


@pytest.mark.parametrize("name", [USER_UNIT, SYSTEM_UNIT])
def test_units_are_hardened(name):
    unit = settings(name)
    for key, value in HARDENING.items():
        assert value in unit.get(key, []), f"{name}: {key}={value}"
    assert unit["ProtectHome"] == (["read-only"] if name == USER_UNIT else ["yes"])
    assert unit["StateDirectory"] == ["deepseek-proxy"]
    if name == USER_UNIT:
        # the state dir (reasoning secret, run-state files) and the data dir (the SQLite response store) only
        assert unit["ReadWritePaths"] == ["-%S/deepseek-proxy", "-%h/.local/share/deepseek-proxy"]
    else:  # a dynamic user's StateDirectory is made writable by systemd itself
        assert unit["DynamicUser"] == ["yes"] and "ReadWritePaths" not in unit
        assert "XDG_DATA_HOME=/var/lib" in unit["Environment"], "the store must land in the StateDirectory"
    assert unit["EnvironmentFile"][0].startswith("-") and unit["EnvironmentFile"][0].endswith("/env")


@pytest.mark.parametrize("name", [USER_UNIT, SYSTEM_UNIT])
def test_stop_timeout_outlasts_the_graceful_stop(name):
    """systemd's SIGKILL must come after gunicorn's own deadline for its workers (graceful_timeout: the grace
    period plus the final events' time, with margin), or a stop cuts streams without their final event."""
    from deepseek_proxy.config import ServerConfig
    from deepseek_proxy.worker import FINAL_EVENT_SECONDS

    grace = ServerConfig().shutdown_grace_seconds
    graceful_timeout = math.ceil(grace) + 5
    assert graceful_timeout > grace + FINAL_EVENT_SECONDS
    assert int(settings(name)["TimeoutStopSec"][0]) >= graceful_timeout + 10


# ---- MemoryDenyWriteExecute ---------------------------------------------------------------------------------------


_MDWE_LAUNCHER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(f"prctl(PR_SET_MDWE) failed: errno {ctypes.get_errno()} (Linux >= 6.3 has it)")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""

_WX_PROBE = """
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(65, 1, 0, 0, 0) == 0, ctypes.get_errno()
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    print("refused")
else:
    print("allowed")
"""


def test_the_proxy_serves_with_memory_deny_write_execute(upstream, tmp_path):
    """The units set MemoryDenyWriteExecute=yes: no memory both writable and executable, which a JIT or a libffi
    closure without static trampolines would need. The kernel's own form of the rule (prctl PR_SET_MDWE, Linux
    >= 6.3, inherited across fork and exec like systemd's seccomp filter) is applied before `deepseek-proxy
    serve` starts; gunicorn, gevent, greenlet, orjson and jsonschema-rs must then serve a stream."""
    probe = subprocess.run([sys.executable, "-c", _WX_PROBE], check=False, capture_output=True, text=True, timeout=30)
    assert probe.stdout.strip() == "refused", f"the rule is not enforced here: {probe.stdout}{probe.stderr}"

    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"),
           "DEEPSEEK_API_KEY": FAKE_KEY, "DEEPSEEK_BASE_URL": upstream.base_url, "DEEPSEEK_PROXY_SECRET": TEST_SECRET}
    log_path = tmp_path / "proxy.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", _MDWE_LAUNCHER, "-m", "deepseek_proxy.cli", "--config", os.devnull, "serve",
             "--port", str(port), "--workers", "2"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok:
                    break
            except requests.RequestException:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        upstream.script(Reply.text("Still streaming under W^X.", reasoning="Thinking first.", delay=0.01))
        with requests.post(f"http://127.0.0.1:{port}/v1/responses", stream=True, timeout=30,
                           json={"model": "deepseek-v4-pro", "input": "hi", "stream": True}) as response:
            assert response.status_code == 200
            body = b"".join(response.iter_content(None))
        assert b"response.completed" in body and b"W^X" in body
    finally:
        process.send_signal(signal.SIGTERM)  # what systemd sends (KillSignal=SIGTERM): the graceful stop
        try:
            returncode = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert returncode == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text()
