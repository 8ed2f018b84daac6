#!/usr/bin/env python3
"""The user-install check: what a user gets from `pip install deepseek-proxy` serves, with nothing else.

Builds the sdist and the wheel (`python -m build`, in a throw-away venv: `build` is a CI tool, not a dependency),
then for each of them: installs it ALONE, no extras, into a fresh `python3 -m venv`; checks that nothing of the
test extras came along and that install_requires is exactly the third-party modules the package imports; starts
the fake upstream (tests/fakes/fake_deepseek.py, with the repo's test venv python,
outside the user's venv) and the user's `deepseek-proxy serve --port FREE` against it; streams one Responses
request with the standard library and checks its events; runs `deepseek-proxy codex setup` into a temporary
CODEX_HOME and `deepseek-proxy doctor`; and ends `serve` with SIGTERM, which must exit 0 within 2 s.

Run by .ci/run before the test suite, or by hand from the repository root:

    python3 .ci/user_install_check.py            # wheel and sdist
    python3 .ci/user_install_check.py --only wheel

Needs: python3 with venv, the repo's test venv (`make install`: .venv and tests/e2e/node_modules), network access
to the package index. Standard library only, so any python3 runs it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "deepseek_proxy"
FAKE_KEY = "sk-fake-deepseek"
REPLY_TEXT = "Hello from the fake upstream."
MODEL = "deepseek-v4-pro"
# The test extras (setup.cfg [test]) as import names: none of them may come with a plain install.
TEST_ONLY_MODULES = ("pytest", "pytest_timeout", "responses", "openai", "anthropic")
SIGTERM_LIMIT = 2.0  # seconds from SIGTERM to exit, with no connection open
START_TIMEOUT = 60.0


class CheckFailed(Exception):
    """A step failed; the message says what was expected and what happened."""


def say(message: str) -> None:
    print(f"[user-install] {message}", flush=True)


def run(cmd: list[str], *, what: str, env: dict | None = None, cwd: Path | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command to completion; on failure raise with its output (which otherwise stays out of the log)."""
    result = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=timeout, check=False)
    if result.returncode != 0:
        raise CheckFailed(f"{what} failed (exit {result.returncode}): {' '.join(map(str, cmd))}\n"
                          f"--- stdout ---\n{result.stdout}--- stderr ---\n{result.stderr}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_path(extra: Sequence[Path] = ()) -> str:
    """The caller's PATH without anything inside the repository (its .venv), with `extra` in front."""
    kept = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep)
            if p and not Path(p).resolve().is_relative_to(REPO)]
    return os.pathsep.join([str(p) for p in extra] + kept)


# ------------------------------------------------------------------------------------------------ build

def build_dists(work: Path, python: str) -> tuple[Path, Path]:
    started = time.monotonic()
    tools = work / "build-venv"
    run([python, "-m", "venv", str(tools)], what="creating the build venv")
    run([str(tools / "bin" / "python"), "-m", "pip", "install", "--quiet", "build"], what="installing build")
    dist = work / "dist"
    # No --sdist/--wheel: build makes the sdist, then the wheel FROM that sdist, which proves the sdist holds
    # everything a build needs.
    run([str(tools / "bin" / "python"), "-m", "build", "--outdir", str(dist), str(REPO)], what="python -m build")
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        raise CheckFailed(f"expected one wheel and one sdist in {dist}, found {[p.name for p in dist.iterdir()]}")
    say(f"built {sdists[0].name} and {wheels[0].name} (wheel from the sdist) in {time.monotonic() - started:.1f} s")
    return wheels[0], sdists[0]


def package_files() -> set[str]:
    """Every file of the package in the source tree (code and data), as paths relative to the repo root."""
    root = REPO / PACKAGE
    return {str(p.relative_to(REPO)) for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")}


def check_contents(wheel: Path, sdist: Path) -> None:
    expected = package_files()
    with zipfile.ZipFile(wheel) as zf:
        in_wheel = set(zf.namelist())
    missing = sorted(expected - in_wheel)
    if missing:
        raise CheckFailed(f"the wheel lacks package files the product may read at run time: {missing}")
    if not any(name.endswith((".dist-info/licenses/LICENSE", ".dist-info/LICENSE"))
               for name in in_wheel):
        raise CheckFailed(f"the wheel has no LICENSE in its .dist-info: {sorted(in_wheel)}")
    with tarfile.open(sdist) as tf:
        top = tf.getnames()[0].split("/")[0]
        in_sdist = {name.split("/", 1)[1] for name in tf.getnames() if "/" in name}
    needed = expected | {"LICENSE", "README.md", "pyproject.toml", "setup.cfg", "PKG-INFO"}
    missing = sorted(needed - in_sdist)
    if missing:
        raise CheckFailed(f"the sdist {top} lacks {missing}")
    say(f"contents: the wheel has all {len(expected)} package files and LICENSE; the sdist also has LICENSE, "
        f"README.md, pyproject.toml, setup.cfg")


# ---------------------------------------------------------------------------------------------- install

def install_alone(artifact: Path, venv: Path, python: str) -> None:
    started = time.monotonic()
    run([python, "-m", "venv", str(venv)], what="creating the user's venv")
    vpy = str(venv / "bin" / "python")
    run([vpy, "-m", "pip", "install", "--quiet", str(artifact)], what=f"pip install {artifact.name}")
    say(f"installed {artifact.name} alone (no extras) into a fresh venv in {time.monotonic() - started:.1f} s")
    run([vpy, "-m", "pip", "check"], what="pip check (installed dependencies are consistent)")
    # From a neutral directory, so the repository's own deepseek_proxy/ cannot be what is imported.
    probe = ("import importlib.util, json, deepseek_proxy; print(json.dumps({'file': deepseek_proxy.__file__, "
             f"'present': [m for m in {TEST_ONLY_MODULES!r} if importlib.util.find_spec(m)]}}))")
    found = json.loads(run([vpy, "-c", probe], what="importing the installed package", cwd=venv).stdout)
    if not Path(found["file"]).resolve().is_relative_to(venv.resolve()):
        raise CheckFailed(f"deepseek_proxy was imported from {found['file']}, not from the user's venv")
    if found["present"]:
        raise CheckFailed(f"a plain install brought test-only packages along: {found['present']}")
    say(f"pip check ok; none of the test extras importable ({', '.join(TEST_ONLY_MODULES)})")
    check_imports_declared(vpy, venv)


# Run by the user's venv python: the third-party modules the installed package imports (any `import`/`from`
# in its files, also inside functions and try blocks) against its declared requirements, both ways (an import may
# also be an optional feature's extra, never the test extra).
IMPORTS_PROBE = r"""
import ast, importlib.metadata as md, json, pathlib, re, sys
import deepseek_proxy
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
imported = set()
for path in pathlib.Path(deepseek_proxy.__file__).parent.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
third_party = sorted(m for m in imported if m not in sys.stdlib_module_names and m != "deepseek_proxy")
requires = md.requires("deepseek-proxy") or []
name = lambda r: norm(re.match(r"[A-Za-z0-9_.-]+", r).group(0))
declared = {name(r) for r in requires if "extra ==" not in r}
# Optional features' extras (e.g. redis, for the Redis store) may be imported too; the test extra may not.
optional = {name(r) for r in requires if "extra ==" in r and 'extra == "test"' not in r}
dists = md.packages_distributions()
undeclared = [m for m in third_party if not {norm(d) for d in dists.get(m, [m])} & (declared | optional)]
used = {norm(d) for m in third_party for d in dists.get(m, [m])}
unused = sorted(declared - used)
print(json.dumps({"imported": third_party, "undeclared": undeclared, "unused": unused}))
"""


def check_imports_declared(vpy: str, cwd: Path) -> None:
    found = json.loads(run([vpy, "-c", IMPORTS_PROBE], what="comparing imports with requirements", cwd=cwd).stdout)
    if found["undeclared"] or found["unused"]:
        raise CheckFailed(f"the package imports {found['imported']}; not declared in install_requires: "
                          f"{found['undeclared']}; declared but never imported: {found['unused']}")
    say(f"install_requires is exactly what the package imports: {', '.join(found['imported'])}")


# ------------------------------------------------------------------------------------------ processes

class Proc:
    """A background process whose output goes to a log file (shown when a step fails)."""

    def __init__(self, name: str, cmd: list[str], *, log: Path, env: dict | None = None, cwd: Path | None = None):
        self.name, self.log = name, log
        self.handle = open(log, "wb")  # noqa: SIM115 - open as long as the process runs; stop() closes it
        self.popen = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self.handle,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        self.handle.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait()
        self.handle.close()


def start_fake(work: Path, test_python: str, *, api_key: str = FAKE_KEY, name: str = "fake") -> tuple[Proc, str]:
    """tests/fakes/fake_deepseek.py as a command, with the repo's python (it is test code, not the product)."""
    script = work / f"{name}-script.json"
    script.write_text(json.dumps([{"kind": "text", "text": REPLY_TEXT}]))
    fake = Proc(name, [test_python, "-m", "tests.fakes.fake_deepseek", "--port", "0", "--api-key", api_key,
                       "--script", str(script)], log=work / f"{name}.log", cwd=REPO)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in fake.output().splitlines():
            if line.startswith("LISTENING "):
                return fake, line.split(" ", 1)[1].strip()
        if fake.popen.poll() is not None:
            break
        time.sleep(0.05)
    raise CheckFailed(f"the fake upstream did not start:\n{fake.output()}")


def http_get(port: int, path: str, timeout: float = 5) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_healthy(port: int, server_exited, *, timeout: float = START_TIMEOUT) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if server_exited():
            raise CheckFailed("serve exited before answering /healthz")
        try:
            if http_get(port, "/healthz", timeout=2)[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.1)
    raise CheckFailed(f"serve did not answer GET /healthz on 127.0.0.1:{port} within {timeout:.0f} s")


def stream_one_response(port: int) -> str:
    """POST /v1/responses with stream: true, standard library only; checks the event sequence. Returns a summary."""
    body = json.dumps({"model": MODEL, "input": "Say hello.", "stream": True}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/responses", body=body, headers={
            "Content-Type": "application/json", "Accept": "text/event-stream", "Connection": "close"})
        response = conn.getresponse()
        raw = response.read().decode("utf-8", errors="replace")
        status, content_type = response.status, response.getheader("Content-Type", "")
    finally:
        conn.close()  # no idle keep-alive connection may hold up the SIGTERM check
    if status != 200 or not content_type.startswith("text/event-stream"):
        raise CheckFailed(f"POST /v1/responses answered {status} {content_type!r}:\n{raw[:2000]}")
    events = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(line[5:].lstrip() for line in block.split("\n") if line.startswith("data:"))
        if data and data != "[DONE]":
            events.append(json.loads(data))
    types = [event.get("type") for event in events]
    text = "".join(event.get("delta", "") for event in events if event.get("type") == "response.output_text.delta")
    problems = []
    if not types or types[0] != "response.created":
        problems.append("the first event is not response.created")
    if not types or types[-1] != "response.completed":
        problems.append("the last event is not response.completed")
    if text != REPLY_TEXT:
        problems.append(f"the text deltas say {text!r}, the upstream said {REPLY_TEXT!r}")
    if problems:
        raise CheckFailed("streamed Responses request: " + "; ".join(problems) + f"\nevents: {types}\n{raw[:4000]}")
    deltas = types.count("response.output_text.delta")
    return f"{len(events)} events, response.created … response.completed, {deltas} text deltas = {text!r}"


def sigterm_and_wait(proc: Proc, *, limit: float = SIGTERM_LIMIT) -> float:
    started = time.monotonic()
    proc.popen.send_signal(signal.SIGTERM)
    try:
        code = proc.popen.wait(timeout=max(limit * 5, 10))
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"serve still runs {time.monotonic() - started:.1f} s after SIGTERM") from None
    elapsed = time.monotonic() - started
    if code != 0 or elapsed > limit:
        raise CheckFailed(f"SIGTERM: serve exited {code} after {elapsed:.2f} s; expected exit 0 within {limit:g} s")
    return elapsed


# ---------------------------------------------------------------------------------------------- one run

def serve_and_check(label: str, venv: Path, work: Path, test_python: str) -> None:
    fake, fake_url = start_fake(work, test_python, name=f"fake-{label}")
    home = work / f"home-{label}"
    codex_home = work / f"codex-home-{label}"
    for d in (home, codex_home):
        d.mkdir()
    port = free_port()
    env = {
        "PATH": clean_path([venv / "bin"]), "HOME": str(home), "LANG": "C.UTF-8",
        "XDG_CONFIG_HOME": str(home / ".config"), "XDG_STATE_HOME": str(home / ".local/state"),
        "XDG_CACHE_HOME": str(home / ".cache"), "XDG_DATA_HOME": str(home / ".local/share"),
        "CODEX_HOME": str(codex_home), "NO_PROXY": "127.0.0.1,localhost",
        "DEEPSEEK_API_KEY": FAKE_KEY, "DEEPSEEK_BASE_URL": fake_url,
        # `serve --port` sets the port for serve; `codex setup` and `doctor` have no --port flag and read it from
        # the same environment variable a user would set.
        "DEEPSEEK_PROXY_PORT": str(port),
    }
    exe = str(venv / "bin" / "deepseek-proxy")
    server = Proc("serve", [exe, "serve", "--port", str(port)], log=work / f"serve-{label}.log", env=env, cwd=home)
    try:
        took = wait_healthy(port, lambda: server.popen.poll() is not None)
        say(f"{label}: `deepseek-proxy serve --port {port}` answers /healthz after {took:.1f} s "
            f"(upstream: the fake at {fake_url})")
        say(f"{label}: streamed POST /v1/responses: {stream_one_response(port)}")

        # doctor requires an installed Codex (it runs `codex --version` and lets Codex parse the catalog). The
        # pinned one from `npm ci --prefix tests/e2e` (make install) stands in for the user's global install.
        codex_bin = REPO / "tests/e2e/node_modules/.bin"
        if not (codex_bin / "codex").exists():
            raise CheckFailed(f"{codex_bin}/codex is missing: run `make install` (npm ci --prefix tests/e2e) first")
        codex_env = dict(env, PATH=clean_path([venv / "bin", codex_bin]))
        setup = run([exe, "codex", "setup", "--codex-home", str(codex_home)], what="deepseek-proxy codex setup",
                    env=codex_env, cwd=home, timeout=120)
        written = sorted(p.name for p in codex_home.rglob("*") if p.is_file())
        say(f"{label}: `deepseek-proxy codex setup --codex-home …` wrote {', '.join(written)}")
        if not setup.stdout.strip():
            raise CheckFailed("codex setup printed nothing")
        doctor = run([exe, "doctor", "--codex-home", str(codex_home)], what="deepseek-proxy doctor",
                     env=codex_env, cwd=home, timeout=180)
        say(f"{label}: `deepseek-proxy doctor --codex-home …` passed:")
        for line in doctor.stdout.strip().splitlines():
            print(f"      {line}", flush=True)

        took = sigterm_and_wait(server)
        say(f"{label}: SIGTERM (no connection open): serve exited 0 after {took:.2f} s (limit {SIGTERM_LIMIT:g} s)")
    except BaseException:
        print(f"\n----- {label}: serve log ({server.log}) -----\n{server.output()}"
              f"----- {label}: fake upstream log -----\n{fake.output()}-----", flush=True)
        raise
    finally:
        server.stop()
        fake.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["wheel", "sdist"], help="check one artifact (default: both)")
    parser.add_argument("--python", default="python3", help="the python the user's venvs are made with")
    parser.add_argument("--test-python", default=str(REPO / ".venv/bin/python"),
                        help="runs the fake upstream (default: the repo's test venv)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, venvs)")
    args = parser.parse_args(argv)
    if not Path(args.test_python).exists():
        print(f"[user-install] FAILED: {args.test_python} is missing: run `make install` first", flush=True)
        return 1

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="deepseek-proxy-user-install-"))
    try:
        wheel, sdist = build_dists(work, args.python)
        check_contents(wheel, sdist)
        for label, artifact in (("wheel", wheel), ("sdist", sdist)):
            if args.only and args.only != label:
                continue
            venv = work / f"user-venv-{label}"
            install_alone(artifact, venv, args.python)
            serve_and_check(label, venv, work, args.test_python)
    except CheckFailed as exc:
        print(f"[user-install] FAILED: {exc}", flush=True)
        print(f"[user-install] work directory kept: {work}", flush=True)
        return 1
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    say(f"all passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
