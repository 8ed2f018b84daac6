"""The running-proxy state files: written, read, removed; stale ones ignored; which proxy a command follows."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepseek_proxy import runstate
from deepseek_proxy.config import load_config


@pytest.fixture()
def env(tmp_path) -> dict[str, str]:
    return {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"), "DEEPSEEK_PROXY_SECRET": "s"}


@pytest.fixture()
def proxy_pid():
    """A live process whose command line names the proxy (what a state file's pid must be to count as running)."""
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "deepseek-proxy-stand-in"])
    yield stand_in.pid
    stand_in.kill()
    stand_in.wait()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_record_read_remove(env, tmp_path, proxy_pid):
    config = load_config(os.devnull, env=env)
    path = runstate.record(config, host="127.0.0.1", port=9000, version="9.9", pid=proxy_pid, env=env)
    assert path == tmp_path / "state" / "deepseek-proxy" / "running" / "9000.json"
    [entry] = runstate.running(env)
    assert (entry.pid, entry.host, entry.port, entry.base_url, entry.config, entry.version) == (
        proxy_pid, "127.0.0.1", 9000, "http://127.0.0.1:9000/v1", os.devnull, "9.9")
    assert runstate.listening_on(9000, env) == entry and runstate.listening_on(9001, env) is None
    runstate.remove(9000, pid=proxy_pid, env=env)
    assert runstate.running(env) == [] and not path.exists()


def test_remove_leaves_another_process_file_alone(env):
    config = load_config(os.devnull, env=env)
    path = runstate.record(config, host="127.0.0.1", port=9000, pid=os.getppid(), env=env)
    runstate.remove(9000, env=env)  # this process did not write it
    assert path.exists()


def test_stale_and_broken_files_are_ignored_and_removed(env):
    config = load_config(os.devnull, env=env)
    stale = runstate.record(config, host="127.0.0.1", port=9000, pid=dead_pid(), env=env)
    broken = stale.with_name("9001.json")
    broken.write_text("{not json")
    assert runstate.running(env) == []
    assert not stale.exists() and not broken.exists()


def test_a_reused_pid_is_not_taken_for_the_proxy(env):
    """After a reboot the file may name a pid that another program has now: not a proxy, so ignored."""
    other = subprocess.Popen(["sleep", "30"])
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/proc/{other.pid}/cmdline").read_bytes():  # just started: the kernel may not show it yet
            assert time.monotonic() < deadline
            time.sleep(0.01)
        config = load_config(os.devnull, env=env)
        runstate.record(config, host="127.0.0.1", port=9000, pid=other.pid, env=env)
        assert runstate.running(env) == []
    finally:
        other.kill()
        other.wait()


def test_no_state_dir_means_nothing_runs(env):
    assert runstate.running(env) == []


def test_target_is_the_configured_address_when_a_proxy_listens_there(env, proxy_pid):
    config = load_config(os.devnull, env=env, overrides={"port": 9000})
    runstate.record(config, host="127.0.0.1", port=9000, pid=proxy_pid, env=env)
    target = runstate.find_target(config, env=env)
    assert target.config is config and target.note is None


def test_target_follows_the_one_proxy_started_with_this_config_on_another_port(env, tmp_path, proxy_pid):
    path = tmp_path / "proxy.toml"
    path.write_text("")
    config = load_config(path, env=env)
    runstate.record(config.listening_at("127.0.0.1", 9000), host="127.0.0.1", port=9000, pid=proxy_pid, env=env)
    target = runstate.find_target(config, env=env)
    assert target.config.public_base_url() == "http://127.0.0.1:9000/v1"
    assert "not at the configured 127.0.0.1:8787; using it" in (target.note or "")
    assert "--port 9000" in (target.note or "")


def test_target_does_not_follow_a_proxy_with_another_config(env, tmp_path, proxy_pid):
    other = tmp_path / "other.toml"
    other.write_text("")
    runstate.record(load_config(other, env=env), host="127.0.0.1", port=9000, pid=proxy_pid, env=env)
    config = load_config(os.devnull, env=env)
    target = runstate.find_target(config, env=env)
    assert target.config.public_base_url() == "http://127.0.0.1:8787/v1"
    assert f"with config {other}" in (target.note or "") and "--proxy-url" in (target.note or "")


def test_proxy_url_wins(env, proxy_pid):
    config = load_config(os.devnull, env=env)
    runstate.record(config, host="127.0.0.1", port=9000, pid=proxy_pid, env=env)
    target = runstate.find_target(config, proxy_url="https://proxy.example/ds", env=env)
    assert target.config.public_base_url() == "https://proxy.example/ds/v1"
    assert target.note == "using the proxy at https://proxy.example/ds/v1 (--proxy-url)"
