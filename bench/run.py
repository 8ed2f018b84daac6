"""Benchmark entry point: ``python -m bench.run [--smoke] [--reps 5] [--only a,b,c,c500,d,e] [--targets ...]``.

Starts the fake upstream and the proxy (``deepseek-proxy serve``, env DEEPSEEK_API_KEY / DEEPSEEK_BASE_URL
pointing at the fake, an empty config file) plus the bare pass-through reference, runs the scenarios with the
targets interleaved rep by rep (direct, proxy, pass-through, then the reverse order: slow drifts of a shared machine
hit every target alike), and prints one markdown table: medians with min-max spreads, ratios against the direct
baseline of the same rep, the issue's targets and PASS/FAIL. Exit status 1 when a target is missed, 2 when the set-up
fails. ``--smoke`` runs every scenario tiny (seconds) and only checks that nothing errors.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from . import load, scenarios
from .procstats import tree

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


# -- servers ---------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A subprocess in its own session (so we can stop it and its workers as one group)."""

    def __init__(self, name: str, argv: list[str], env: dict, port: int, logdir: str, health: str = "/healthz",
                 cwd: str = REPO):
        self.name, self.argv, self.env, self.port, self.health, self.cwd = name, argv, env, port, health, cwd
        self.log = os.path.join(logdir, f"{name}.log")
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.cwd, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", self.health)
                status = conn.getresponse().status
                conn.close()
                if status < 500:
                    # gunicorn answers from the first worker; give the others a moment to boot too
                    time.sleep(0.5)
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer {self.health} within {timeout}s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)   # our own child's process group only
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass

    def restart(self) -> None:
        self.stop()
        self.start()

    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def tail(self, n: int = 30) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""


def venv_bin(name: str) -> str | None:
    cand = os.path.join(os.path.dirname(sys.executable), name)
    return cand if os.path.exists(cand) else shutil.which(name)


MESSAGES_SCENARIOS = ("a", "b", "c", "d")  # the scenarios the Messages door runs too

# Opt-in targets (`--targets direct,proxy,proxy-team,proxy-bare`): the same proxy with issue 12's team features on,
# and with them off, to measure what keys, limits and usage recording cost (the load client sends `Bearer sk-bench`).
# The limits are high enough never to refuse: every request still takes its rpm and concurrency slots in the store.
TEAM_CONFIGS = {
    "proxy-team": ('[server]\nmax_connections_per_address = 0\nclient_keys = ["sk-bench"]\n'
                   "[limits]\nrpm = 100000000\nconcurrency = 100000\nkey_rpm = 100000000\nkey_concurrency = 100000\n"
                   "[usage]\nenabled = true\n"),
    "proxy-bare": "[server]\nmax_connections_per_address = 0\n[usage]\nenabled = false\n",
}


def proxy_argv(port: int, config: str) -> tuple[list[str] | None, str]:
    """How to start the real proxy, or None and why not."""
    exe = venv_bin("deepseek-proxy")
    if exe is None:
        return None, "no `deepseek-proxy` console script (pip install -e . first)"
    try:
        helptext = subprocess.run([exe, "serve", "--help"], capture_output=True, text=True, timeout=60,
                                  cwd=REPO).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"`deepseek-proxy serve --help` failed: {e}"
    if "--port" not in helptext:
        return None, "`deepseek-proxy serve --help` shows no --port"
    argv = [exe]
    # --config may be a global option (before `serve`) or a serve option; use what the help shows
    top = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60, cwd=REPO).stdout
    if "--config" in top:
        argv += ["--config", config]
    argv += ["serve", "--host", "127.0.0.1", "--port", str(port)]
    if "--config" in helptext and "--config" not in top:
        argv += ["--config", config]
    return argv, " ".join(argv[1:])


# -- statistics and formatting ----------------------------------------------------------------------------------------
def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, spec: str = ".2f", scale: float = 1.0) -> str:
    return "–" if v is None else format(v * scale, spec)


def cell(vals, spec=".2f", scale=1.0) -> str:
    """median (min–max) over reps."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    m = statistics.median(vals)
    if len(vals) == 1:
        return fmt(m, spec, scale)
    return f"{fmt(m, spec, scale)} ({fmt(min(vals), spec, scale)}–{fmt(max(vals), spec, scale)})"


def paired(a_reps, b_reps, key, op):
    """Per-rep op(a, b) over reps where both are present (a = proxy, b = direct of the same rep)."""
    out = []
    for a, b in zip(a_reps, b_reps, strict=False):  # a target whose run broke off has fewer reps
        x, y = a.get(key), b.get(key)
        if x is not None and y is not None:
            out.append(op(x, y))
    return out


class Table:
    def __init__(self, targets: list[str], judged: str, smoke: bool):
        self.targets, self.judged, self.smoke = targets, judged, smoke
        self.rows: list[tuple] = []
        self.failed: list[str] = []

    def section(self, title: str) -> None:
        self.rows.append(("section", title))

    def row(self, label: str, cells: dict, ratio: str = "", target: str = "", ok: bool | None = None,
            always_judge: bool = False) -> None:
        """ok None = informational. In --smoke only rows marked always_judge (errors) are judged."""
        if self.smoke and not always_judge:
            verdict = "(smoke)" if ok is not None else ""
        elif ok is None:
            verdict = ""
        else:
            verdict = "PASS" if ok else "**FAIL**"
            if not ok:
                self.failed.append(label)
        self.rows.append(("row", label, cells, ratio, target, verdict))

    def render(self) -> str:
        head = ["metric"] + self.targets + [f"{self.judged} vs direct", "target", "result"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            if r[0] == "section":
                lines.append(f"| **{r[1]}** |" + " |" * (len(head) - 1))
            else:
                _, label, cells, ratio, target, verdict = r
                lines.append("| " + " | ".join([label] + [cells.get(t, "–") for t in self.targets]
                                               + [ratio, target, verdict]) + " |")
        return "\n".join(lines)


def summarize(table: Table, sc: scenarios.Scenario, res: dict, smoke: bool) -> None:
    """Rows for one scenario. res[target] = list of per-rep dicts."""
    J = table.judged
    d, p = res.get("direct", []), res.get(J, [])
    tg = [t for t in table.targets if t in res]

    def cells(key, spec=".2f", scale=1.0):
        return {t: cell([r.get(key) for r in res[t]], spec, scale) for t in tg}

    def errors_row(label="errors / requests"):
        c = {t: f"{sum(r.get('errors', 0) for r in res[t])}/{sum(r.get('n', 1) for r in res[t])}" for t in tg}
        first = next((r.get("error") for t in tg for r in res[t] if r.get("error")), None)
        # judged: the proxy, and direct (errors there mean the bench itself is broken); the reference is shown only
        bad = any(r.get("errors") for t in tg if t in ("direct", J) for r in res[t])
        table.row(label + (f" — e.g. {first[:80]!r}" if first else ""), c, "", "0 errors", not bad,
                  always_judge=True)

    if sc.key == "a":
        table.section(f"(a) {sc.name}: upstream TTFT {sc.upstream['ttft'] * 1e3:.0f} ms")
        for q, lim in (("p50", 1.0), ("p99", 3.0)):
            k = f"ttft_{q}"
            added = paired(p, d, k, lambda x, y: (x - y) * 1e3)
            table.row(f"TTFT {q} (ms)", cells(k, ".1f", 1e3),
                      f"{fmt(med(added), '+.2f')} ms"
                      + (f" ({min(added):+.2f}…{max(added):+.2f})" if len(added) > 1 else ""),
                      f"added ≤ +{lim:g} ms", None if not added else med(added) <= lim)
        if any(r.get("ttft_store_p50") is not None for r in p):
            # Same target, same rep, alternating batches: what `store: true` (SQLite by default) adds.
            store_cost = [(r["ttft_store_p50"] - r["ttft_p50"]) * 1e3 for r in p
                          if r.get("ttft_store_p50") is not None and r.get("ttft_p50") is not None]
            table.row("TTFT p50 with store: true (ms)", cells("ttft_store_p50", ".1f", 1e3),
                      f"{fmt(med(store_cost), '+.2f')} ms vs store: false",
                      "store adds ≤ +0.3 ms", None if not store_cost else med(store_cost) <= 0.3)
        errors_row()
    elif sc.key == "b":
        table.section(f"(b) {sc.name}")
        ratio = paired(p, d, "events_per_s", lambda x, y: x / y)
        table.row("delta events/s (thousands)", cells("events_per_s", ".1f", 1e-3),
                  f"{fmt(med(ratio), '.3f')}×", "", None)
        cpu = med([r.get("cpu_us_per_event") for r in p])
        table.row("proxy CPU per delta (µs)", cells("cpu_us_per_event", ".1f"), "", "≤ 12 µs",
                  None if cpu is None else cpu <= 12.0)
        table.row("… of it in the kernel (%)", cells("kernel_share", ".0f", 100), "", "", None)
        errors_row()
    elif sc.key == "c":
        conc = scenarios.SMOKE_CONC if smoke else sc.info["conc"]
        table.section(f"(c) {conc} streams × {(sc.smoke_upstream if smoke else sc.upstream)['tokens']} tokens @ 10 ms")
        c = {t: f"{min(r['completed'] for r in res[t])}/{conc}" for t in tg}
        cap = p[0].get("timeout", 0) if p else 0
        table.row(f"completed within {cap:.0f} s (worst rep)", c, "", "all", all(r["completed"] == conc for r in p),
                  always_judge=True)
        lim_wall = {500: 1.2, 1000: 1.3}.get(sc.info["conc"])
        w = med([r["wall_ideal"] for r in p])
        table.row("wall / ideal (a timed-out rep counts as the cap)", cells("wall_ideal", ".2f"),
                  f"{fmt(med(paired(p, d, 'wall_ideal', lambda x, y: x / y)), '.2f')}×",
                  f"≤ {lim_wall}×" if lim_wall else "", (w is not None and w <= lim_wall) if lim_wall else None)
        ttft99 = med([r["ttft_p99"] for r in p])
        table.row("TTFT p50 (ms)", cells("ttft_p50", ".0f", 1e3), "", "", None)
        lim_t = 0.4 if sc.info["conc"] == 500 else None
        table.row("TTFT p99 (ms)", cells("ttft_p99", ".0f", 1e3), "", "≤ 400 ms" if lim_t else "",
                  (ttft99 is not None and ttft99 <= lim_t) if lim_t else None)
        gap_ratio = paired(p, d, "gap_p99", lambda x, y: x / y)
        lim_g = 2.0 if sc.info["conc"] == 1000 else None
        table.row("inter-token gap p99 (ms)", cells("gap_p99", ".1f", 1e3), f"{fmt(med(gap_ratio), '.2f')}×",
                  "≤ 2× direct" if lim_g else "",
                  (bool(gap_ratio) and med(gap_ratio) <= lim_g) if lim_g else None)
        rps = med([r["rss_per_stream"] for r in p])
        lim_r = 16 * 1024 if sc.info["conc"] == 1000 else None
        table.row("RSS growth per open stream (KiB)", cells("rss_per_stream", ".1f", 1 / 1024), "",
                  "≤ 16 KiB" if lim_r else "", (rps is not None and rps <= lim_r) if lim_r else None)
        table.row("peak RSS, all processes (MB)", cells("peak_rss", ".0f", 1e-6), "", "", None)
        table.row("proxy CPU per delta (µs)", cells("cpu_us_per_event", ".1f"), "", "", None)
        table.row("… of it in the kernel (%)", cells("kernel_share", ".0f", 100), "", "", None)
        table.row("fake upstream / load client CPU (cores)",
                  {t: f"{fmt(med([r['upstream_util'] for r in res[t]]), '.2f')} / "
                      f"{fmt(med([r['client_util'] for r in res[t]]), '.2f')}" for t in tg}, "", "", None)
        if sc.info["conc"] == 1000 or smoke:
            errors_row()
    elif sc.key == "d":
        table.section(f"(d) {sc.name}")
        ratio = paired(p, d, "rps", lambda x, y: x / y)
        table.row("requests/s", cells("rps", ".0f"), f"{fmt(med(ratio), '.3f')}×", "≥ 0.4× direct",
                  bool(ratio) and med(ratio) >= 0.4)
        table.row("latency p50 (ms)", cells("lat_p50", ".2f", 1e3), "", "", None)
        table.row("latency p99 (ms)", cells("lat_p99", ".2f", 1e3), "", "", None)
        table.row("proxy CPU per request (µs)", cells("cpu_us_per_req", ".0f"), "", "", None)
        table.row("… of it in the kernel (%)", cells("kernel_share", ".0f", 100), "", "", None)
        errors_row()
    elif sc.key == "h":
        n = scenarios.HELD_SMOKE if smoke else scenarios.HELD_STREAMS
        table.section(f"(h) {n} streams waiting for their first token (upstream TTFT {sc.upstream['ttft']:.0f} s)")
        held = {t: f"{min(r['held'] for r in res[t])}/{n}" for t in tg if t != "direct"}
        table.row("requests that reached the upstream (worst rep)", held, "", "all",
                  all(r.get("held") == n for r in p), always_judge=True)
        table.row("RSS growth per held stream (KiB)", cells("rss_per_stream", ".1f", 1 / 1024), "", "", None)


def summarize_cache(table: Table, reps: list[dict]) -> None:
    """(i): per door, the share of input tokens that hit the modelled prefix cache, from the third model call on,
    through the proxy and for the same conversation sent directly."""
    from .cache_session import FROM_CALL, TARGET_SHARE
    for door in reps[0]:
        summarize_cache_door(table, [rep[door] for rep in reps if door in rep], FROM_CALL, TARGET_SHARE)


DIRECT_TOLERANCE = 0.002


def summarize_cache_door(table: Table, reps: list[dict], from_call: int, target: float) -> None:
    plan, sides = reps[0]["plan"], ("direct", "proxy")
    table.section(f"(i) {reps[0]['title']}: {plan['calls']} model calls against the cache-modelling fake "
                  f"({reps[0]['notes']})")
    cells, shares = {}, {}
    for t in sides:
        vals = [r[t]["share"] for r in reps if t in r and r[t].get("share") is not None]
        if vals:
            cells[t], shares[t] = cell(vals, ".1f", 100), med(vals)
    p, d = shares.get("proxy"), shares.get("direct")
    # Judged in --smoke too: the share depends on the bytes sent, not on the machine's speed. "≥ direct" allows
    # 0.2 pts for the proxy's own rendering (another block boundary); a prefix break costs a point or more.
    table.row(f"input tokens hitting the cache from call {from_call} on, {reps[0]['door']} door (%)", cells,
              f"{(p - d) * 100:+.1f} pts" if p is not None and d is not None else "",
              f"≥ {target * 100:.0f}%, ≥ direct − 0.2 pts",
              None if p is None else p >= target and (d is None or p >= d - DIRECT_TOLERANCE), always_judge=True)
    unswitched = [r["unswitched"]["share"] for r in reps if r.get("unswitched", {}).get("share") is not None]
    if unswitched and d is not None:
        cost = (med(unswitched) - d) * 100
        table.row(f"… the same session without the /model switch (before call {plan['switch_at']}, back before call "
                  f"{plan['switch_back_at']}), direct (%)", {"direct": cell(unswitched, ".1f", 100)},
                  f"the switch costs {cost:.1f} pts (the proxy's session switches too)", "", None)
    control = [r["control"]["share"] for r in reps if r.get("control", {}).get("share") is not None]
    table.row("control: direct with a per-request nonce atop the system prompt (%)",
              {"direct": cell(control, ".1f", 100)} if control else {}, "", "< 10%: the measurement sees breaks",
              None if not control else med(control) < 0.10)
    table.row("model calls (+ side calls) seen by the upstream",
              {t: "/".join(f"{r[t]['calls']}" + (f" (+{r[t]['side_calls']})" if r[t].get("side_calls") else "")
                           for r in reps if t in r) for t in sides}, "", "", None)
    failures = [r.get(f"{t}_failure") or r.get(t, {}).get("error") for r in reps for t in sides]
    failures = [f for f in failures if f]
    skipped = next((r["proxy_skip"] for r in reps if r.get("proxy_skip")), None)
    calls_ok = all(r[t]["calls"] == plan["calls"] for r in reps for t in sides if t in r)
    table.row("errors" + (f" — e.g. {failures[0][:80]!r}" if failures else "") + (f" ({skipped})" if skipped else ""),
              {t: str(sum(1 for r in reps if r.get(f"{t}_failure") or r.get(t, {}).get("errors"))) for t in sides},
              "", "0 errors, every call made", not failures and calls_ok, always_judge=True)


def summarize_translate(table: Table, reps: list[dict]) -> None:
    r0 = reps[0]
    table.section(f"(e) translate a {r0['bytes'] / 1e6:.2f} MB Codex request in-process ({r0['json']})")
    floor = med([r["floor_ms"] for r in reps])
    if "skip" in r0:
        table.row(f"SKIPPED: {r0['skip']}", {}, "", "≤ 10 ms", None)
        table.row("floor: parse + serialize only (ms)", {"direct": fmt(floor)}, "", "", None)
        return
    ms = med([r["ms"] for r in reps])
    table.row("parse + translate + serialize (ms)", {table.judged: cell([r["ms"] for r in reps])},
              f"{fmt(ms / floor if floor else None, '.1f')}× floor", "≤ 10 ms", ms <= 10.0)
    table.row("… of which translate_request (ms)", {table.judged: cell([r["translate_ms"] for r in reps])}, "", "",
              None)
    if r0.get("validate_ms") is not None:
        table.row("… of which validation (ms)", {table.judged: cell([r["validate_ms"] for r in reps])}, "", "", None)
    table.row("floor: parse + serialize only (ms)", {"direct": cell([r["floor_ms"] for r in reps])}, "", "", None)


# -- main --------------------------------------------------------------------------------------------------------------
def raise_nofile() -> None:
    """1,000 streams = 1,000 client sockets here + 2,000 in the proxy + 1,000 in the upstream (children inherit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < 5000:
        print(f"warning: RLIMIT_NOFILE hard limit is {hard}; 1,000-stream scenarios may fail", file=sys.stderr)


def get_json(port: int, path: str) -> dict:
    return _json_call(port, "GET", path)


def post_json(port: int, path: str, obj) -> dict:
    return _json_call(port, "POST", path, obj)


def _json_call(port: int, method: str, path: str, obj=None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    if obj is None:
        conn.request(method, path)
    else:
        conn.request(method, path, body=json.dumps(obj), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"{method} {path}: {resp.status} {data[:200]!r}")
    return json.loads(data)


def select_scenarios(only: str | None, smoke: bool):
    chosen = []
    keys = set(only.split(",")) if only else None
    for s in scenarios.SCENARIOS:
        tag = s.key + (str(s.info["conc"]) if "conc" in s.info else "")
        if keys is None or s.key in keys or tag in keys:
            chosen.append(s)
    if keys:
        known = {s.key for s in scenarios.SCENARIOS} | {f"c{s.info['conc']}" for s in scenarios.SCENARIOS
                                                         if "conc" in s.info}
        unknown = keys - known
        if unknown:
            raise SystemExit(f"unknown scenario(s) {sorted(unknown)}; choose from {sorted(known)}")
    if smoke:  # one concurrency level is enough to prove the path works
        seen_c = False
        out = []
        for s in chosen:
            if s.key == "c":
                if seen_c:
                    continue
                seen_c = True
            out.append(s)
        chosen = out
    return chosen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny version of every scenario; judges errors only")
    ap.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 5, smoke 1)")
    ap.add_argument("--only", default=None, help="comma list of scenario keys: a,b,c,c50,c200,c500,c1000,d,h,e,i")
    ap.add_argument("--targets", default=None,
                    help="comma list from direct,proxy,messages,passthrough (default: all that are available), and "
                         "proxy-chat / proxy-gemini (the proxy's Chat Completions / Gemini door; need proxy)")
    ap.add_argument("--passthrough-workers", type=int, default=1,
                    help="gunicorn gevent workers for the bare pass-through reference (default 1)")
    ap.add_argument("--no-restart", action="store_true",
                    help="do not restart servers before each (c) rep (faster; RSS growth then understated)")
    ap.add_argument("--json", default=None, help="also write all per-rep numbers to this file")
    ap.add_argument("--tls-upstream", action="store_true",
                    help="proxy and pass-through reach the fake upstream over HTTPS (self-signed, trusted through "
                         "REQUESTS_CA_BUNDLE / SSL_CERT_FILE), as they reach the real DeepSeek; `direct` stays plain "
                         "HTTP, so the proxy's figures then include TLS. Meant for --only a,d")
    ap.add_argument("--baseline", default=None, metavar="DIR",
                    help="also measure the proxy of another checkout (e.g. a worktree of main) as one more target, "
                         "interleaved with this one: a same-run A/B")
    ap.add_argument("--baseline-name", default="baseline", help="the column name of --baseline (default: baseline)")
    ap.add_argument("--baseline-env", action="append", default=[], metavar="K=V",
                    help="extra environment for the --baseline proxy only (repeatable), e.g. "
                         "DEEPSEEK_PROXY_BODY_READER=iter_content to compare the body readers of one tree")
    ap.add_argument("--baseline-config", action="append", default=[], metavar="TOML",
                    help="a TOML line for the --baseline proxy's config only (repeatable; each `[section] key = "
                         "value`), e.g. '[cache] detect_prefix_breaks = false' to compare a setting in one tree")
    args = ap.parse_args(argv)
    reps = args.reps or (1 if args.smoke else 5)
    chosen = select_scenarios(args.only, args.smoke)
    raise_nofile()

    logdir = tempfile.mkdtemp(prefix="deepseek-proxy-bench-")
    empty_cfg = os.path.join(logdir, "empty-config.toml")
    open(empty_cfg, "w").close()
    # The proxy's defaults, except the per-address connection cap: the load client opens up to 1000 connections
    # from one address, as nginx in front of the proxy would (deploy/README.md sets the cap to 0 there too).
    proxy_cfg = os.path.join(logdir, "proxy-config.toml")
    with open(proxy_cfg, "w") as f:
        f.write("[server]\nmax_connections_per_address = 0\n")
    # No inherited DEEPSEEK_* / DEEPSEEK_PROXY_* settings: the proxy runs on its defaults plus what we set here.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPSEEK_")}
    py = sys.executable
    servers: list[Server] = []
    try:
        # fake upstream
        up_port = free_port()
        up_argv = [py, "-m", "bench.fake_upstream", "--port", str(up_port)]
        base_url = f"http://127.0.0.1:{up_port}"
        tls_env = {}
        if args.tls_upstream:
            cert, key = self_signed_cert(logdir)
            tls_port = free_port()
            up_argv += ["--tls-port", str(tls_port), "--cert", cert, "--key", key]
            base_url = f"https://127.0.0.1:{tls_port}"
            tls_env = {"REQUESTS_CA_BUNDLE": cert, "SSL_CERT_FILE": cert}
        upstream = Server("fake_upstream", up_argv, env, up_port, logdir)
        upstream.start()
        servers.append(upstream)
        penv = dict(env, DEEPSEEK_API_KEY="sk-bench", DEEPSEEK_BASE_URL=base_url, **tls_env,
                    XDG_CONFIG_HOME=os.path.join(logdir, "xdg"),  # belt and braces: never read the user's config
                    XDG_STATE_HOME=os.path.join(logdir, "state"),  # nor touch their state (the reasoning key)
                    XDG_DATA_HOME=os.path.join(logdir, "data"),  # the response store (SQLite) of this run only
                    PYTHONUNBUFFERED="1")

        wanted = args.targets.split(",") if args.targets else ["direct", "proxy", "messages", "passthrough"]
        targets: list[scenarios.Target] = []
        notes = []
        if "direct" in wanted:
            targets.append(scenarios.Target("direct", f"http://127.0.0.1:{up_port}", load.CHAT))
        if "proxy" in wanted:
            port = free_port()
            argv_, why = proxy_argv(port, proxy_cfg)
            if argv_ is None:
                notes.append(f"real proxy NOT measured: {why}")
                if args.targets:
                    print(f"error: {why}", file=sys.stderr)
                    return 2
            else:
                srv = Server("proxy", argv_, penv, port, logdir)
                srv.start()
                servers.append(srv)
                targets.append(scenarios.Target("proxy", f"http://127.0.0.1:{port}", load.RESPONSES, srv.pid,
                                                srv.restart))
                notes.append(f"proxy = real `deepseek-proxy {why}`")
                if "messages" in wanted:  # the same server, through its Messages door (Claude Code's protocol)
                    targets.append(scenarios.Target("messages", f"http://127.0.0.1:{port}", load.MESSAGES, srv.pid,
                                                    srv.restart))
                    notes.append("messages = the same proxy's Messages door (POST /v1/messages), scenarios "
                                 f"{','.join(MESSAGES_SCENARIOS)} only; not judged")
                if "proxy-chat" in wanted:  # the same server through its Chat Completions door (opt-in)
                    targets.append(scenarios.Target("proxy-chat", f"http://127.0.0.1:{port}/v1", load.CHAT,
                                                    srv.pid, srv.restart))
                    notes.append("proxy-chat = the same proxy, POST /v1/chat/completions")
                if "proxy-gemini" in wanted:  # the same server, through its Gemini door
                    targets.append(scenarios.Target("proxy-gemini", f"http://127.0.0.1:{port}", load.GEMINI,
                                                    srv.pid, srv.restart))
                    notes.append("proxy-gemini = the same proxy, POST /v1beta/models/…:streamGenerateContent")
        for team_name, team_config in TEAM_CONFIGS.items():
            if team_name not in wanted:
                continue
            team_cfg = os.path.join(logdir, f"{team_name}-config.toml")
            with open(team_cfg, "w") as f:
                f.write(team_config)
            port = free_port()
            argv_, why = proxy_argv(port, team_cfg)
            if argv_ is None:
                print(f"error: {why}", file=sys.stderr)
                return 2
            # Its own state: the store (usage rows, limit counters) is not shared with the other targets.
            tenv = dict(penv, XDG_STATE_HOME=os.path.join(logdir, team_name, "state"),
                        XDG_DATA_HOME=os.path.join(logdir, team_name, "data"))
            srv = Server(team_name, argv_, tenv, port, logdir)
            srv.start()
            servers.append(srv)
            targets.append(scenarios.Target(team_name, f"http://127.0.0.1:{port}", load.RESPONSES, srv.pid,
                                            srv.restart))
            notes.append(f"{team_name} = real proxy with {' '.join(team_config.split())}")
        if args.baseline:
            port = free_port()
            base_dir = os.path.abspath(args.baseline)
            benv = dict(penv, PYTHONPATH=base_dir, **dict(kv.split("=", 1) for kv in args.baseline_env))
            base_cfg = empty_cfg
            if args.baseline_config:
                base_cfg = os.path.join(logdir, "baseline-config.toml")
                sections: dict[str, list[str]] = {}
                for line in args.baseline_config:
                    section, _, setting = line.partition("]")
                    sections.setdefault(section.strip() + "]", []).append(setting.strip())
                with open(base_cfg, "w") as f:
                    f.write("".join(f"{name}\n" + "".join(f"{kv}\n" for kv in kvs) for name, kvs in sections.items()))
            argv_ = [py, "-m", "deepseek_proxy.cli", "--config", base_cfg, "serve", "--host", "127.0.0.1",
                     "--port", str(port)]
            srv = Server(args.baseline_name, argv_, benv, port, logdir, cwd=base_dir)
            srv.start()
            servers.append(srv)
            targets.append(scenarios.Target(args.baseline_name, f"http://127.0.0.1:{port}", load.RESPONSES, srv.pid,
                                            srv.restart))
            head = subprocess.run(["git", "-C", base_dir, "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True, check=False).stdout.strip()
            notes.append(f"{args.baseline_name} = the proxy of {base_dir} (commit {head or '?'})"
                         + (f" with {' '.join(args.baseline_env + args.baseline_config)}"
                            if args.baseline_env or args.baseline_config else ""))
        if "passthrough" in wanted:
            port = free_port()
            argv_ = [venv_bin("gunicorn") or "gunicorn", "-k", "gevent", "-w", str(args.passthrough_workers),
                     "--worker-connections", "10000", "--backlog", "4096", "-b", f"127.0.0.1:{port}",
                     "--log-level", "warning", "bench.passthrough_app:app"]
            srv = Server("passthrough", argv_, penv, port, logdir)
            srv.start()
            servers.append(srv)
            targets.append(scenarios.Target("passthrough", f"http://127.0.0.1:{port}", load.RESPONSES, srv.pid,
                                            srv.restart))
            notes.append(f"passthrough = bench/passthrough_app.py (bare Flask+gevent stand-in), gunicorn -k gevent "
                         f"-w {args.passthrough_workers}")
        if args.tls_upstream:
            notes.append(f"upstream for proxy/passthrough: {base_url} (TLS, self-signed); direct: plain HTTP")
        names = [t.name for t in targets]
        judged = "proxy" if "proxy" in names else next((n for n in names if n != "direct"), "direct")
        if judged != "proxy":
            notes.append(f"targets below are judged on `{judged}`, NOT on the real proxy")

        # Everything before each target's first measured request: imports, pools.
        for t in targets:
            scenarios.warm(t)
        def start_proxy(upstream_url: str, api_key: str, extra_config: str = ""):
            """(i): a proxy of our own against another upstream (the cache-modelling fake), its config extended by
            a door's `extra_config` (TOML)."""
            port = free_port()
            cfg = proxy_cfg
            if extra_config:
                cfg = os.path.join(logdir, f"proxy-cache-{port}.toml")
                with open(proxy_cfg) as base, open(cfg, "w") as f:
                    f.write(base.read() + extra_config)
            argv_, why = proxy_argv(port, cfg)
            if argv_ is None:
                raise RuntimeError(why)
            srv = Server("proxy-cache", argv_, dict(penv, DEEPSEEK_BASE_URL=upstream_url, DEEPSEEK_API_KEY=api_key),
                         port, logdir)
            srv.start()
            servers.append(srv)
            return (lambda: f"http://127.0.0.1:{port}"), srv.restart, srv.stop

        env_ = scenarios.Env(set_upstream=lambda sc: post_json(up_port, "/_bench/scenario", sc),
                             upstream_stats=lambda: get_json(up_port, "/_bench/stats"),
                             upstream_pid=upstream.pid(), smoke=args.smoke, restart_for_rss=not args.no_restart,
                             all_pids=lambda: [s.pid() for s in servers],
                             start_proxy=start_proxy if "proxy" in names else None)

        table = Table(names, judged, args.smoke)
        all_results = {}
        t_start = time.time()
        for sc in chosen:
            label = sc.key + (str(sc.info["conc"]) if "conc" in sc.info else "")
            print(f"[{time.time() - t_start:6.1f}s] scenario {label}: {sc.name}", file=sys.stderr, flush=True)
            if not sc.needs_targets:
                res = [sc.run(env_, None) for _ in range(reps)]
                all_results[label] = res
                (summarize_cache if sc.key == "i" else summarize_translate)(table, res)
                continue
            up = dict(sc.upstream)
            if args.smoke:
                up.update(sc.smoke_upstream)
            env_.set_upstream(up)
            sc_targets = [t for t in targets if t.kind is not load.MESSAGES or sc.key in MESSAGES_SCENARIOS]
            for t in sc_targets:   # warm each target on this scenario's upstream settings
                scenarios.warm(t, stream=(sc.key != "d"), n=2)
            res = {t.name: [] for t in sc_targets}
            for rep in range(reps):
                order = sc_targets if rep % 2 == 0 else sc_targets[::-1]
                for t in order:
                    r = sc.run(env_, t)
                    res[t.name].append(r)
                    print(f"    rep {rep + 1}/{reps} {t.name:12s} " + brief(r), file=sys.stderr, flush=True)
            all_results[label] = res
            summarize(table, sc, res, args.smoke)

        print()
        print(f"deepseek-proxy benchmark — {'SMOKE, ' if args.smoke else ''}{reps} interleaved rep(s), "
              f"{time.strftime('%Y-%m-%d %H:%M')}")
        print(f"machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}, "
              f"{platform.system()} {platform.release()}")
        for n in notes:
            print(f"- {n}")
        print("- processes metered: " + ", ".join(
            f"{t.name}: {len(tree(t.pid()))}" for t in targets if t.pid() is not None))
        print()
        print(table.render())
        print()
        print(capacity_report(all_results))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(all_results, f, indent=1, default=str)
        if table.failed:
            print(f"\nFAIL: {len(table.failed)} target(s) missed: " + "; ".join(table.failed))
            return 1
        print("\nall targets met" if not args.smoke else "\nsmoke: no errors")
        return 0
    except RuntimeError as e:
        print(f"set-up failed: {e}", file=sys.stderr)
        return 2
    finally:
        for s in reversed(servers):
            s.stop()
        print(f"(server logs: {logdir})", file=sys.stderr)


def self_signed_cert(d: str) -> tuple[str, str]:
    """A throw-away certificate for 127.0.0.1 (openssl CLI)."""
    cert, key = os.path.join(d, "upstream-cert.pem"), os.path.join(d, "upstream-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def brief(r: dict) -> str:
    keys = ("ttft_p50", "events_per_s", "cpu_us_per_event", "wall_ideal", "ttft_p99", "gap_p99", "rss_per_stream",
            "rps", "errors")
    return " ".join(f"{k}={r[k]:.4g}" if isinstance(r.get(k), float) else f"{k}={r[k]}" for k in keys if k in r)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def capacity_report(all_results: dict) -> str:
    """The fake upstream's own capacity: work done per CPU-second of the upstream process, from the direct runs,
    and how busy it was while the proxy was measured (well under one core = it was not the bottleneck)."""
    lines = ["fake upstream capacity (its own CPU, from the direct runs):"]
    b = all_results.get("b", {}).get("direct")
    if b:
        ev = med([r["events_per_s"] for r in b])
        ucpu = med([r["upstream_cpu"] for r in b])
        lines.append(f"- no-delay stream: {fmt(ev, ',.0f')} delta events/s delivered to the client; upstream CPU "
                     + (f"{ucpu * 1e3:.0f} ms" if ucpu and ucpu >= 0.02 else "under 20 ms (clock-tick resolution)")
                     + " per stream")
    cs = [(label, res["direct"]) for label, res in all_results.items() if label.startswith("c") and "direct" in res]
    if cs:
        label, rs = cs[-1]
        per_cpu = med([r["events"] / r["upstream_cpu"] for r in rs if r.get("upstream_cpu")])
        lines.append(f"- paced streams (10 ms/token): {fmt(per_cpu, ',.0f')} delta events per upstream CPU-second "
                     f"at {label[1:]} streams, i.e. one core serves ~{fmt(per_cpu / 100 if per_cpu else None, ',.0f')} "
                     f"concurrent 100-token/s streams")
    d = all_results.get("d", {}).get("direct")
    if d:
        rps = med([r["rps"] for r in d])
        per_cpu = med([r["n"] / r["upstream_cpu"] for r in d if r["upstream_cpu"]])
        lines.append(f"- non-stream: {fmt(rps, ',.0f')} requests/s (16 clients); "
                     f"{fmt(per_cpu, ',.0f')} requests per upstream CPU-second")
    for label, res in all_results.items():
        if label.startswith("c") and "direct" in res:
            us = {t: med([r["upstream_util"] for r in rs]) for t, rs in res.items()}
            lines.append(f"- {label}: upstream busy " + ", ".join(f"{fmt(v, '.2f')} cores during {t}"
                                                                   for t, v in us.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
