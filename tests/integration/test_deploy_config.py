"""deploy/config.example.toml: the file the Arch package installs as /etc/deepseek-proxy/config.toml and the
system unit reads. It must load, state the built-in defaults truthfully, and its commented-out tables must load
too once uncommented."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import replace

from deepseek_proxy.config import load_config
from tests.conftest import REPO, TEST_SECRET

EXAMPLE = REPO / "deploy" / "config.example.toml"


def env(tmp_path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"),
            "DEEPSEEK_PROXY_SECRET": TEST_SECRET}


def test_example_config_loads_with_the_cli(tmp_path):
    result = subprocess.run([sys.executable, "-m", "deepseek_proxy.cli", "--config", str(EXAMPLE), "config"],
                            env=env(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"config file: {EXAMPLE}" in result.stdout
    assert "model deepseek-v4-pro:" in result.stdout and "model deepseek-v4-flash:" in result.stdout


def test_example_config_states_the_defaults(tmp_path):
    """Every value it sets is the built-in default (it says so): loading it changes nothing."""
    example = load_config(EXAMPLE, env=env(tmp_path))
    defaults = load_config(os.devnull, env=env(tmp_path))
    assert replace(example, path=None) == replace(defaults, path=None)


def test_example_configs_commented_tables_load(tmp_path):
    """Uncomment every commented-out setting and table: still a valid config (an extra upstream and models)."""
    text = re.sub(r"^# (\[|[a-z_]+ = )", r"\1", EXAMPLE.read_text(), flags=re.MULTILINE)
    uncommented = tmp_path / "all.toml"
    uncommented.write_text(text)
    without_secret = {k: v for k, v in env(tmp_path).items() if k != "DEEPSEEK_PROXY_SECRET"}
    config = load_config(uncommented, env=without_secret)
    assert set(config.models) == {"deepseek-v4-pro", "qwen-coder"}
    assert config.upstreams["local"].base_url == "http://127.0.0.1:8000/v1"
    assert config.server.reasoning_secret == b"..."
