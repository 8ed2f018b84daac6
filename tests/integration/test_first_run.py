"""The first run, on the real server (`deepseek-proxy serve`: gunicorn + gevent on a loopback port): started without
a key, on a taken port, stopped with Ctrl-C, given a literal key in its file, started with `--port` and then found
by `codex setup` and `doctor`, or reached through `--proxy-url`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from deepseek_proxy.codex import catalog as catalog_mod
from tests.conftest import FAKE_KEY, free_port
from tests.e2e.codex_cli import codex_binary
from tests.fakes.fake_deepseek import Reply

CLI = [sys.executable, "-m", "deepseek_proxy.cli"]


def cli_env(home: Path, *, with_codex: bool = False, **extra: str) -> dict[str, str]:
    """The environment ProxyProcess gives the server (same HOME and state dir), for the client-side commands;
    `with_codex`: the pinned Codex binary on PATH (what `codex setup` and `doctor` run)."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "XDG_STATE_HOME": str(home / "state"),
           "DEEPSEEK_PROXY_SECRET": "test-secret", **extra}
    if with_codex:
        env["PATH"] = f"{codex_binary().parent}{os.pathsep}{env['PATH']}"
        env[catalog_mod.CODEX_BIN_ENV] = str(codex_binary())
    return env


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)


def running_files(home: Path) -> list[Path]:
    return sorted((home / "state" / "deepseek-proxy" / "running").glob("*.json"))


# ------------------------------------------------------------------------------------------- no key at start

NO_KEY_CONFIG = """
[upstreams.local]
base_url = "{url}"
api_key = "env:LOCAL_KEY"
profile = "openai"

[models."deepseek-v4-pro"]
upstream = "deepseek"

[models."local-coder"]
upstream = "local"
upstream_model = "deepseek-v4-flash"
"""


def test_start_without_a_key_names_it_and_serves_the_other_models(upstream, start_proxy, tmp_path):
    proxy = start_proxy(upstream.base_url, NO_KEY_CONFIG.format(url=upstream.base_url),
                        extra_env={"DEEPSEEK_API_KEY": "", "LOCAL_KEY": FAKE_KEY})
    log = proxy.log()
    assert "warning: no API key for upstream deepseek" in log
    assert "environment variable DEEPSEEK_API_KEY is not set" in log
    assert "fix: export DEEPSEEK_API_KEY=" in log  # the exact command
    assert "deepseek-v4-pro answers 401 upstream_key_missing" in log and "the other models work" in log

    keyless = requests.post(f"{proxy.base_url}/v1/responses", timeout=30,
                            json={"model": "deepseek-v4-pro", "input": "hi", "stream": False})
    assert keyless.status_code == 401
    error = keyless.json()["error"]
    assert error["code"] == "upstream_key_missing"
    assert "deepseek-proxy itself has no API key" in error["message"]
    assert "not your request or your key" in error["message"] and "DEEPSEEK_API_KEY" in error["message"]
    assert upstream.chat_requests == [], "nothing was sent upstream without a key"

    upstream.script(Reply.text("fine"))
    served = requests.post(f"{proxy.base_url}/v1/responses", timeout=30,
                           json={"model": "local-coder", "input": "hi", "stream": False})
    assert served.status_code == 200, served.text

    ready = requests.get(f"{proxy.base_url}/readyz", timeout=30)
    assert ready.status_code == 503
    assert ready.json()["upstreams"]["deepseek"]["key"] == "missing"


# ---------------------------------------------------------------------------------------------- a taken port

def test_a_taken_port_is_one_line_and_exit_1(proxy, tmp_path):
    result = run_cli("--config", os.devnull, "serve", "--port", str(proxy.port), env=cli_env(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [(f"deepseek-proxy: 127.0.0.1:{proxy.port} is already in use — another deepseek-proxy? "
                      f"(choose another port with --port)")], result.stderr
    assert "Connection in use" not in result.stderr + result.stdout  # gunicorn's 5-second retry loop never ran
    assert requests.get(f"{proxy.base_url}/healthz", timeout=10).status_code == 200  # the first one is untouched


def test_ipv6_host_serves_and_its_taken_port_names_the_running_proxy(upstream, tmp_path):
    port = free_port()
    env = {**cli_env(tmp_path), "DEEPSEEK_API_KEY": FAKE_KEY, "DEEPSEEK_BASE_URL": upstream.base_url}
    server = subprocess.Popen([*CLI, "--config", os.devnull, "serve", "--host", "::1", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while not running_files(tmp_path):
            assert server.poll() is None and time.monotonic() < deadline, "the IPv6 server did not start"
            time.sleep(0.05)
        assert requests.get(f"http://[::1]:{port}/healthz", timeout=10).status_code == 200
        entry = json.loads(running_files(tmp_path)[0].read_text())
        assert (entry["host"], entry["port"], entry["base_url"]) == ("::1", port, f"http://[::1]:{port}/v1")

        second = run_cli("--config", os.devnull, "serve", "--host", "::1", "--port", str(port), env=env)
        assert second.returncode == 1
        assert second.stderr.startswith(f"deepseek-proxy: [::1]:{port} is already in use — by deepseek-proxy "
                                        f"(pid {server.pid}, started ")
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=30)[0]
    assert server.returncode == 0, output
    assert f"listening on http://[::1]:{port}" in output


# --------------------------------------------------------------------------------------------------- Ctrl-C

def test_ctrl_c_exits_0_with_one_line(upstream, tmp_path):
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the master and every worker.
    A stream is open at that moment (Ctrl-C is the quick stop: it is cut, quietly)."""
    upstream.script(Reply.text("word " * 400, delay=0.05))
    port = free_port()
    env = {**cli_env(tmp_path), "DEEPSEEK_API_KEY": FAKE_KEY, "DEEPSEEK_BASE_URL": upstream.base_url}
    server = subprocess.Popen([*CLI, "--config", os.devnull, "serve", "--port", str(port), "--workers", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.05)
        assert len(running_files(tmp_path)) == 1
        stream = requests.post(f"http://127.0.0.1:{port}/v1/responses", stream=True, timeout=30,
                               json={"model": "deepseek-v4-pro", "input": "hi", "stream": True})
        events = stream.iter_lines()
        assert next(line for line in events if line.startswith(b"event: response.output_text.delta"))
        os.killpg(server.pid, signal.SIGINT)
        output = server.communicate(timeout=30)[0]
        stream.close()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert server.returncode == 0, output
    assert "Traceback" not in output and "SystemExit" not in output, output
    lines = output.strip().splitlines()
    assert lines[0].startswith("deepseek-proxy 0.") and f"listening on http://127.0.0.1:{port}" in lines[0]
    assert lines[-1] == "deepseek-proxy stopped"
    assert [ln for ln in lines if not ln.startswith(("deepseek-proxy ", "  "))] == [], output
    assert running_files(tmp_path) == []  # removed on a clean exit


# ------------------------------------------------------------------------------------------ a literal secret

def test_literal_key_in_the_config_is_named_never_shown(tmp_path):
    literal = "sk-" + "0123456789abcdef" * 2  # built, so no scanner takes it for a real key
    config = tmp_path / "config.toml"
    config.write_text(f'[upstreams.deepseek]\napi_key = "{literal}"\n')
    result = run_cli("--config", str(config), "serve", "--port", str(free_port()), env=cli_env(tmp_path))
    assert result.returncode == 2
    assert "`upstreams.deepseek.api_key`" in result.stderr and str(config) in result.stderr
    assert 'api_key = "env:DEEPSEEK_API_KEY"' in result.stderr  # what to write instead
    assert literal not in result.stderr + result.stdout and literal[3:12] not in result.stderr


def test_config_command_names_secret_settings_without_their_values(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[server]\nclient_keys = ["sk-client-one-secret", "client-two-secret"]\n'
                      'reasoning_secret = "reasoning-secret-value"\n')
    env = cli_env(tmp_path, DEEPSEEK_API_KEY="sk-env-secret")
    del env["DEEPSEEK_PROXY_SECRET"]  # the file's secret is the one in use
    result = run_cli("--config", str(config), "config", env=env)
    assert result.returncode == 0, result.stderr
    for secret in ("client-one-secret", "client-two-secret", "reasoning-secret-value", "sk-env-secret"):
        assert secret not in result.stdout
    assert "client keys: 2 (values hidden)" in result.stdout
    assert "reasoning secret: server.reasoning_secret in the config file (value hidden)" in result.stdout
    assert "key=env:DEEPSEEK_API_KEY (set)" in result.stdout


# ----------------------------------------------------------------------- --port, then codex setup and doctor

@pytest.mark.e2e  # runs the pinned Codex binary
def test_codex_setup_and_doctor_follow_the_proxy_started_with_port(upstream, start_proxy, tmp_path, work):
    proxy = start_proxy(upstream.base_url, extra_env={catalog_mod.CODEX_BIN_ENV: str(codex_binary())})
    config = tmp_path / f"config-{proxy.port}.toml"  # the proxy's own (empty) config: it says port 8787
    env = cli_env(tmp_path, with_codex=True, DEEPSEEK_API_KEY=FAKE_KEY, DEEPSEEK_BASE_URL=upstream.base_url)
    home = work / "codex-home"

    setup = run_cli("--config", str(config), "codex", "setup", "--codex-home", str(home), env=env)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert (f"note: the running deepseek-proxy listens at {proxy.base_url}/v1 (pid {proxy.process.pid}, "
            in setup.stdout), setup.stdout
    assert "not at the configured 127.0.0.1:8787; using it" in setup.stdout
    assert f'base_url = "{proxy.base_url}/v1"' in (home / "config.toml").read_text()

    doctor = run_cli("--config", str(config), "doctor", "--codex-home", str(home), env=env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"[ ok ] proxy: deepseek-proxy answers at {proxy.base_url}" in doctor.stdout
    assert "All checks passed." in doctor.stdout

    shown = run_cli("--config", str(config), "config", env=env)
    assert f"running: deepseek-proxy at {proxy.base_url}/v1 (pid {proxy.process.pid}" in shown.stdout


@pytest.mark.e2e  # runs the pinned Codex binary
def test_codex_setup_and_doctor_with_proxy_url(upstream, start_proxy, tmp_path, work):
    """A proxy elsewhere (behind nginx): here the real proxy, reached only by the URL given, no state file."""
    proxy = start_proxy(upstream.base_url, extra_env={catalog_mod.CODEX_BIN_ENV: str(codex_binary())})
    elsewhere = tmp_path / "elsewhere"  # another user's machine: no state file names the proxy
    env = cli_env(elsewhere, with_codex=True, DEEPSEEK_API_KEY=FAKE_KEY, DEEPSEEK_BASE_URL=upstream.base_url)
    home = work / "codex-home"

    setup = run_cli("--config", os.devnull, "codex", "setup", "--codex-home", str(home),
                    "--proxy-url", proxy.base_url + "/", env=env)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    text = (home / "config.toml").read_text()
    assert f'base_url = "{proxy.base_url}/v1"' in text
    assert f'model_catalog_url = "{proxy.base_url}/v1/codex/models.json"' in text
    assert f"deepseek-proxy doctor --proxy-url {proxy.base_url}/v1" in setup.stdout
    assert "deepseek-proxy serve" not in setup.stdout  # nothing to start on this machine

    doctor = run_cli("--config", os.devnull, "doctor", "--codex-home", str(home), "--proxy-url",
                     f"{proxy.base_url}/v1", env=env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"[ ok ] proxy: deepseek-proxy answers at {proxy.base_url}" in doctor.stdout

    bad = run_cli("--config", os.devnull, "doctor", "--proxy-url", "proxy.example:8787", env=env)
    assert bad.returncode == 2 and "--proxy-url must be an http:// or https:// URL" in bad.stderr
