"""deploy/gunicorn.conf.py: the team deployment path (gunicorn called directly) serves like `deepseek-proxy serve`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import requests

from tests.conftest import FAKE_KEY, REPO, TEST_SECRET, free_port
from tests.fakes.fake_deepseek import Reply


def test_gunicorn_with_the_deploy_config_serves_responses(upstream, tmp_path):
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"),
        "DEEPSEEK_API_KEY": FAKE_KEY, "DEEPSEEK_BASE_URL": upstream.base_url, "DEEPSEEK_PROXY_SECRET": TEST_SECRET,
        "DEEPSEEK_PROXY_CONFIG": os.devnull, "DEEPSEEK_PROXY_PORT": str(port),
    }
    with open(tmp_path / "gunicorn.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(REPO / "deploy" / "gunicorn.conf.py"),
                                    "deepseek_proxy.app:create_app()"], env=env, cwd=tmp_path, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).ok:
                        break
                except requests.RequestException:
                    assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
                    assert time.monotonic() < deadline, "gunicorn did not come up"
                    time.sleep(0.1)
            upstream.script(Reply.text("Served by the deploy config."))
            response = requests.post(f"http://127.0.0.1:{port}/v1/responses",
                                     json={"model": "deepseek-v4-pro", "input": "hi"}, timeout=30)
            assert response.status_code == 200
            assert response.json()["output"][-1]["content"][0]["text"] == "Served by the deploy config."
            output = (tmp_path / "gunicorn.log").read_text()
            assert "StreamingWorker" in output, "the deploy config uses the package's worker settings"
            assert FAKE_KEY not in output
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=20)
