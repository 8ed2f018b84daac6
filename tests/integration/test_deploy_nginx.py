"""deploy/nginx/, exercised: the real nginx (Debian's package) in front of the real proxy (`deepseek-proxy serve`).

nginx runs from a temporary prefix on free loopback ports (`-p DIR -c DIR/nginx.conf`, `daemon off`, its pid,
logs and temporary files under DIR), with the shipped files copied in the layout Debian's nginx.conf includes
(conf.d/, snippets/, sites-enabled/). The copies differ from the shipped files only on their marked lines (listen
address, proxy address, certificate paths, access-log directory), and each of those substitutions must match
exactly once: a shipped file that drifts from what is tested fails here instead of being silently rewritten.
"""

from __future__ import annotations

import http.server
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest
import requests

from tests.conftest import REPO, ProxyProcess, free_port
from tests.fakes.fake_deepseek import Reply

NGINX_DIR = REPO / "deploy" / "nginx"
MODEL = "deepseek-v4-pro"
MISSING = ("these tests run the real nginx and it is not installed: apt-get install nginx (Debian/Ubuntu; "
           "nginx-light is the same package on Debian 12), pacman -S nginx (Arch). .ci/run installs it.")


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.path.exists(p)), None)
    if found is None:
        pytest.fail(MISSING)
    return found


def render(name: str, substitutions: dict[str, str]) -> str:
    """The shipped file `name` with its marked values replaced; each must occur exactly once."""
    text = (NGINX_DIR / name).read_text()
    for old, new in substitutions.items():
        count = text.count(old)
        assert count == 1, f"deploy/nginx/{name}: expected {old!r} exactly once, found it {count} times"
        text = text.replace(old, new)
    return text


class Nginx:
    """nginx with the shipped upstream, locations and both sites, in front of `upstream_port`."""

    def __init__(self, tmp: Path, upstream_port: int, cert: tuple[str, str]):
        self.binary = nginx_binary()
        self.dir = tmp
        self.http_port, self.https_port = free_port(), free_port()
        self.http_url = f"http://127.0.0.1:{self.http_port}"
        self.https_url = f"https://127.0.0.1:{self.https_port}"
        for sub in ("conf.d", "snippets", "sites-enabled", "logs", "temp"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        logs = f"{tmp}/logs/"
        (tmp / "conf.d" / "deepseek-proxy-upstream.conf").write_text(render(
            "deepseek-proxy-upstream.conf", {"server 127.0.0.1:8787;": f"server 127.0.0.1:{upstream_port};"}))
        (tmp / "snippets" / "deepseek-proxy-locations.conf").write_text(render("deepseek-proxy-locations.conf", {}))
        (tmp / "sites-enabled" / "deepseek-proxy.conf").write_text(render("deepseek-proxy.conf", {
            "listen 127.0.0.1:8788;": f"listen 127.0.0.1:{self.http_port};", "/var/log/nginx/": logs}))
        (tmp / "sites-enabled" / "deepseek-proxy-tls.conf").write_text(render("deepseek-proxy-tls.conf", {
            "listen 443 ssl;": f"listen 127.0.0.1:{self.https_port} ssl;", "/var/log/nginx/": logs,
            "/etc/ssl/certs/ssl-cert-snakeoil.pem;": f"{cert[0]};",
            "/etc/ssl/private/ssl-cert-snakeoil.key;": f"{cert[1]};"}))
        # The stand-in for the distribution's /etc/nginx/nginx.conf: only what a temporary prefix needs. As root
        # (CI), nginx's workers would switch to `nobody`, who cannot read this directory: keep them root.
        temp = {kind: f"{tmp}/temp/{kind}" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
        (tmp / "nginx.conf").write_text(f"""
{"user root;" if os.geteuid() == 0 else ""}
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/logs/error.log info;
events {{ worker_connections 512; }}
http {{
    default_type application/octet-stream;
    access_log {tmp}/logs/access.log;
    {"".join(f"{kind}_temp_path {path}; " for kind, path in temp.items())}
    include conf.d/*.conf;
    include sites-enabled/*.conf;
}}
""")
        self.command = [self.binary, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", f"{tmp}/logs/error.log"]
        self.process: subprocess.Popen | None = None

    def test_config(self) -> subprocess.CompletedProcess:
        return subprocess.run([*self.command, "-t"], check=False, capture_output=True, text=True, timeout=30)

    def start(self) -> Nginx:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        for port in (self.http_port, self.https_port):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{self.error_log()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"nginx did not listen on {port}:\n{self.error_log()}") from None
                    time.sleep(0.05)
        return self

    def error_log(self) -> str:
        path = self.dir / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # nginx's fast shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def proxy_behind_nginx(fake_deepseek, tmp_path_factory):
    """The proxy as deploy/README.md runs it behind nginx: max_connections_per_address = 0 (every client arrives
    from nginx's address); max_body_mb = 1 so that a test's too-large body is small."""
    server = ProxyProcess(tmp_path_factory.mktemp("proxy-behind-nginx"), upstream_url=fake_deepseek.base_url,
                          config_text="[server]\nmax_body_mb = 1\nmax_connections_per_address = 0\n")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def front(proxy_behind_nginx, tls_cert, tmp_path_factory):
    nginx = Nginx(tmp_path_factory.mktemp("nginx"), proxy_behind_nginx.port, tls_cert)
    nginx.start()
    yield nginx
    nginx.stop()


def stream(url: str, body: dict, **kwargs) -> requests.Response:
    return requests.post(url + "/v1/responses", json=body, stream=True, timeout=(5, 30), **kwargs)


def delta_arrivals(response: requests.Response) -> list[float]:
    arrivals = []
    for line in response.iter_lines():
        if line.startswith(b"data:") and b'"response.output_text.delta"' in line:
            arrivals.append(time.monotonic())
    return arrivals


# ---- the shipped files, as nginx reads them ---------------------------------------------------------------------


def test_nginx_accepts_both_sites_as_shipped(tmp_path, tls_cert):
    """`nginx -t` on the plain and the TLS site together (the upstream block included once, both sites enabled):
    only the marked lines differ from the shipped files."""
    nginx = Nginx(tmp_path, free_port(), tls_cert)
    result = nginx.test_config()
    assert result.returncode == 0, result.stderr + nginx.error_log()
    assert "test is successful" in result.stderr


def test_nginx_refuses_the_tls_site_without_its_certificate(tmp_path, tls_cert):
    """The certificate lines are what the TLS site needs: point them at nothing and `nginx -t` says so (the test
    above is not passing for a reason unrelated to them)."""
    nginx = Nginx(tmp_path, free_port(), (str(tmp_path / "missing.pem"), tls_cert[1]))
    result = nginx.test_config()
    assert result.returncode != 0
    assert "missing.pem" in result.stderr + nginx.error_log()


def test_nginx_body_limit_sits_above_the_proxy_default():
    """nginx must let through every body the proxy accepts, so the proxy's own 413 (in the client's format) is
    the one clients see; its default is server.max_body_mb = 64."""
    from deepseek_proxy.config import MB, ServerConfig

    text = (NGINX_DIR / "deepseek-proxy-locations.conf").read_text()
    match = re.search(r"^\s*client_max_body_size\s+(\d+)m;", text, re.MULTILINE)
    assert match, "client_max_body_size in megabytes"
    assert int(match.group(1)) * MB > ServerConfig().max_body_bytes


# ---- the proxy behind nginx ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_events_arrive_one_by_one_through_nginx(front, upstream, scheme, tls_cert):
    """The fake paces its tokens 0.4 s apart: each delta reaches the client about 0.4 s after the one before.
    Buffering anywhere on the way (nginx's proxy_buffering, gzip) would deliver them together at the end."""
    pace = 0.4
    upstream.script(Reply.text("one two three four five six", reasoning=None, delay=pace))
    url, verify = (front.http_url, True) if scheme == "http" else (front.https_url, tls_cert[0])
    with stream(url, {"model": MODEL, "input": "hi", "stream": True}, verify=verify) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        arrivals = delta_arrivals(response)
    assert len(arrivals) == 6
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert min(gaps) > pace * 0.4, f"deltas arrived together (gaps {gaps}): nginx buffered the stream"
    assert pace * 0.6 < statistics.median(gaps) < pace * 2, f"gaps {gaps} do not follow the upstream's pacing"


def test_a_client_disconnect_through_nginx_reaches_the_upstream(front, upstream):
    """Ctrl-C in the client: nginx closes its connection to the proxy (proxy_ignore_client_abort off), and the
    proxy closes its upstream request, which the fake counts."""
    upstream.script(Reply.text(" ".join(["word"] * 400), reasoning=None, delay=0.05))  # ~20 s if nobody leaves
    with stream(front.http_url, {"model": MODEL, "input": "hi", "stream": True}) as response:
        for line in response.iter_lines():
            if b"output_text.delta" in line:
                break
    started = time.monotonic()
    assert upstream.wait_for_disconnects(1, timeout=10), "the upstream kept streaming after the client left"
    assert time.monotonic() - started < 10


def test_a_too_large_body_gets_the_proxys_json_413(front, upstream):
    """Past the proxy's max_body_mb (1 here) but under nginx's limit: the proxy's 413 in OpenAI's format passes
    through nginx untouched, not nginx's HTML page, and the upstream is never called."""
    body = b'{"model": "deepseek-v4-pro", "input": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = requests.post(front.http_url + "/v1/responses", data=body,
                             headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and error["type"] == "invalid_request_error"
    assert response.headers.get("x-request-id", "").startswith("req_"), "the proxy answered, not nginx"
    assert upstream.chat_requests == []


def test_a_body_past_nginxs_own_limit_is_json_too(front):
    """A body larger than even nginx accepts (client_max_body_size): nginx answers from its Content-Length alone,
    with the shipped JSON error page, in a shape both OpenAI's and Anthropic's SDKs read."""
    with socket.create_connection(("127.0.0.1", front.http_port), timeout=10) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % (200 * 1024 * 1024))
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"content-type: application/json" in head.lower()
    parsed = json.loads(payload)
    assert parsed["type"] == "error"
    assert parsed["error"]["code"] == parsed["error"]["type"] == "request_too_large"
    assert "client_max_body_size" in parsed["error"]["message"]


def test_a_large_body_under_both_limits_reaches_the_upstream(front, upstream):
    """Request buffering on: nginx takes a body of several client_body_buffer_sizes (via its temporary file)
    and hands it to the proxy whole."""
    upstream.script(Reply.text("got it", reasoning=None))
    text = "y" * (900 * 1024)
    response = requests.post(front.http_url + "/v1/responses", json={"model": MODEL, "input": text}, timeout=30)
    assert response.status_code == 200, response.text[:300]
    assert text in upstream.chat_requests[-1].raw.decode()


# ---- what nginx sends the proxy ------------------------------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Stands in for the proxy: records each request's headers and the client port it came from."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[dict, int, str]]] = []

    def do_GET(self) -> None:
        type(self).seen.append(({k.lower(): v for k, v in self.headers.items()}, self.client_address[1],
                                self.request_version))
        self.send_response(200)
        self.send_header("content-length", "2")
        self.send_header("x-request-id", "req_recorder")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


def test_nginx_passes_forwarding_headers_and_reuses_connections(tmp_path, tls_cert):
    recorder = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.seen = []
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    nginx = Nginx(tmp_path, recorder.server_address[1], tls_cert).start()
    try:
        with requests.Session() as session:
            first = session.get(nginx.http_url + "/healthz", headers={"X-Request-Id": "client-chosen-id"}, timeout=10)
            second = session.get(nginx.http_url + "/healthz", headers={"Connection": "close"}, timeout=10)
        assert first.status_code == second.status_code == 200
    finally:
        nginx.stop()
        recorder.shutdown()
        recorder.server_close()
    (headers1, port1, version1), (headers2, port2, _) = _Recorder.seen
    assert headers1["x-forwarded-for"] == "127.0.0.1" and headers1["x-real-ip"] == "127.0.0.1"
    assert headers1["x-forwarded-proto"] == "http"
    assert headers1["x-request-id"] == "client-chosen-id", "the client's request id is passed on"
    assert re.fullmatch(r"[0-9a-f]{32}", headers2["x-request-id"]), "nginx makes one when the client has none"
    assert version1 == "HTTP/1.1" and headers2.get("connection", "") != "close"
    assert port1 == port2, "nginx reused its keep-alive connection to the proxy"
    log = (tmp_path / "logs" / "deepseek-proxy.access.log").read_text()
    assert "id=client-chosen-id proxy_id=req_recorder" in log, log


def test_the_proxy_down_is_a_json_502(tmp_path, tls_cert):
    nginx = Nginx(tmp_path, free_port(), tls_cert).start()  # nothing listens on the proxy's port
    try:
        response = requests.post(nginx.http_url + "/v1/responses", json={"model": MODEL, "input": "hi"}, timeout=30)
    finally:
        nginx.stop()
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "proxy_unavailable"
    assert response.headers["retry-after"] == "2"


def test_codex_websocket_passes_through_nginx(front, upstream):
    """Codex's Responses API over WebSocket through the shipped site: the upgrade reaches the proxy (the map in the
    upstream file), and a response streams back as text frames; the plain HTTP keep-alive still works after it."""
    from tests.ws_client import WsClient

    upstream.script(Reply.text("through nginx", reasoning=None))
    client = WsClient(front.http_port)
    try:
        client.send({"type": "response.create", "model": MODEL, "input": "hi", "tools": [], "store": False})
        events = client.response()
    finally:
        client.close()
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "through nginx"
    assert requests.get(front.http_url + "/healthz", timeout=5).status_code == 200
