"""Shared fixtures: the captured real-client fixtures, a fake DeepSeek, and the real server (gunicorn + gevent).

The proxy under test is the installed `deepseek-proxy serve` console path, run as a subprocess on a free
loopback port, exactly as a user starts it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from bench.run import self_signed_cert
from tests.fakes.fake_deepseek import FakeDeepSeek

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"  # captured real-client traffic, copied into the repository
CODEX_FIXTURES = FIXTURES / "codex"
CLAUDE_FIXTURES = FIXTURES / "claude-code"
GEMINI_FIXTURES = FIXTURES / "gemini-cli"
FAKE_KEY = "sk-fake-deepseek"
TEST_SECRET = "test-reasoning-secret"


def codex_fixture(relative: str) -> dict:
    path = CODEX_FIXTURES / relative
    if not path.exists():
        pytest.fail(f"captured fixture {path} is missing from tests/fixtures/")
    return json.loads(path.read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ProxyProcess:
    """`deepseek-proxy serve` in a subprocess; its output is collected for assertions (e.g. no secrets logged)."""

    def __init__(self, tmp: Path, *, upstream_url: str, config_text: str = "", extra_env: dict | None = None,
                 workers: int = 1):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"proxy-{self.port}.log"
        config = tmp / f"config-{self.port}.toml"
        config.write_text(config_text)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp),
            "XDG_STATE_HOME": str(tmp / "state"),
            "DEEPSEEK_API_KEY": FAKE_KEY,
            "DEEPSEEK_BASE_URL": upstream_url,
            "DEEPSEEK_PROXY_SECRET": TEST_SECRET,
            **(extra_env or {}),
        }
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deepseek_proxy.cli", "--config", str(config), "serve",
             "--port", str(self.port), "--workers", str(workers), "--log-level", "info"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=tmp,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()  # a server that never became healthy must not outlive the test
            raise

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.process.returncode}:\n{self.log()}")
            try:
                # The first request may wait for the worker to boot (imports) on a busy machine.
                if requests.get(self.base_url + "/healthz", timeout=10).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.05)
        raise RuntimeError(f"proxy did not become healthy in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # gunicorn's quick shutdown; SIGTERM waits for idle keep-alives
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture()
def work(request):
    """A fresh directory outside /tmp (Codex refuses helper binaries under temp dirs) with `wd/` (a work tree)
    and `codex-home/`; removed afterwards."""
    from tests.e2e.codex_cli import cleanup, new_work_dir

    path = new_work_dir(request.node.name)
    (path / "wd").mkdir()
    (path / "codex-home").mkdir()
    yield path
    cleanup(path)


@pytest.fixture(scope="session")
def fake_deepseek():
    fake = FakeDeepSeek(api_key=FAKE_KEY).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory) -> tuple[str, str]:
    """(certfile, keyfile): a throw-away self-signed certificate for 127.0.0.1, made with the openssl command.
    The certificate is its own CA: pass it as REQUESTS_CA_BUNDLE to trust it."""
    if shutil.which("openssl") is None:
        pytest.fail("the TLS tests need the `openssl` command (Debian: apt-get install openssl)")
    return self_signed_cert(str(tmp_path_factory.mktemp("tls")))  # the benchmark's --tls-upstream makes it the same way


@pytest.fixture()
def tls_upstream(tls_cert):
    """A fake DeepSeek of its own serving HTTPS (base_url https://127.0.0.1:PORT) with the `tls_cert` certificate."""
    with FakeDeepSeek(api_key=FAKE_KEY, tls=tls_cert) as fake:
        yield fake


@pytest.fixture()
def upstream(fake_deepseek):
    """The session's fake DeepSeek, with an empty script and request log for this test."""
    fake_deepseek.reset()
    yield fake_deepseek


@pytest.fixture(scope="session")
def proxy(fake_deepseek, tmp_path_factory):
    server = ProxyProcess(tmp_path_factory.mktemp("proxy"), upstream_url=fake_deepseek.base_url)
    yield server
    server.stop()


@pytest.fixture()
def start_proxy(tmp_path):
    """Start an extra proxy with its own config for one test."""
    started: list[ProxyProcess] = []

    def start(upstream_url: str, config_text: str = "", **kwargs) -> ProxyProcess:
        server = ProxyProcess(tmp_path, upstream_url=upstream_url, config_text=config_text, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free loopback port (tests/redis_server.py); fails, never skips, without one."""
    from tests.redis_server import RedisServer

    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()
