"""The benchmark scenarios (a)-(e) of issue #4 and (i) of issue #14: each runs one rep and returns plain numbers.

A *target* is where the load goes: ``direct`` (Chat Completions straight to the fake upstream: the limit),
``proxy`` (the real ``deepseek-proxy serve``) or ``passthrough`` (bench/passthrough_app.py, the bare-stack
reference). ``run.py`` interleaves targets rep by rep and turns these numbers into medians and paired ratios.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import load
from .procstats import Meter, rss_bytes, self_cpu, tree, wait_idle

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "codex", "normal",
                       "turn3_request.json")


@dataclass
class Target:
    name: str
    url: str
    kind: load.Kind
    pid: Callable[[], int | None] = lambda: None      # root of the process tree to meter (None: nothing to meter)
    restart: Callable[[], None] | None = None          # fresh process (for clean RSS figures)


@dataclass
class Env:
    set_upstream: Callable[[dict], None]   # POST /_bench/scenario on the fake upstream
    upstream_pid: int
    all_pids: Callable[[], list] = list     # roots of every server we started (to wait until they are idle)
    smoke: bool = False
    restart_for_rss: bool = True
    upstream_stats: Callable[[], dict] = dict   # GET /_bench/stats on the fake upstream
    # (i): start a proxy against another upstream: (base_url, api_key) -> (url getter, restart, stop); None: no proxy
    start_proxy: Callable[[str, str], tuple] | None = None


@dataclass
class Scenario:
    key: str                 # letter used by --only
    name: str
    upstream: dict           # fake-upstream settings for this scenario
    run: Callable[[Env, Target], dict]
    needs_targets: bool = True
    info: dict = field(default_factory=dict)
    smoke_upstream: dict = field(default_factory=dict)   # overrides of ``upstream`` in --smoke


def _client(target: Target, stream: bool, concurrency: int, total: int | None = None, duration: float | None = None,
            timeout: float = 30.0, model: str = "deepseek-v4-pro"):
    if target.kind is load.GEMINI:  # the model is in the path
        return load.Client(target.url, target.kind, load.gemini_body(), stream, concurrency, total=total,
                           duration=duration, timeout=timeout, path=load.gemini_path(stream, model))
    body = load.body_for(target.kind, stream, model=model)
    return load.Client(target.url, target.kind, body, stream, concurrency, total=total, duration=duration,
                       timeout=timeout)


def _measure(env: Env, target: Target, client: load.Client) -> tuple[list, Meter, Meter, float]:
    """Run a client while metering the target's process tree and the fake upstream; GC off meanwhile (the
    client's own pauses would show up as latency)."""
    wait_idle(env.all_pids())   # no leftover work from the previous target billed to this one
    gc.collect()
    gc.disable()
    c0 = self_cpu()
    try:
        with Meter(target.pid()) as m, Meter(env.upstream_pid) as um:
            results = client.run()
    finally:
        gc.enable()
    return results, m, um, self_cpu() - c0


def warm(target: Target, stream: bool = True, n: int = 4) -> None:
    """A few unmeasured requests: imports, pools and lazy set-up happen here, not in the first measured one.
    They ask for deepseek-v4-flash, which the fake upstream always answers at once (see fake_upstream.WARM_MODEL)."""
    _client(target, stream, min(n, 2), total=n, timeout=30, model="deepseek-v4-flash").run()


def _errors(results) -> tuple[int, str | None]:
    errs = [r.error for r in results if not r.ok]
    return len(errs), (sorted(set(errs))[0] if errs else None)


# -- (a) TTFT at concurrency 1 ------------------------------------------------------------------------------------
def run_ttft(env: Env, t: Target) -> dict:
    """Codex's request (`store: false`); for a Responses target also the same request with `store: true`, in
    alternating batches of the same rep, so the difference is what storing costs the time to first token
    (issue 11: at most +0.3 ms at p50 with the default SQLite store)."""
    n = 3 if env.smoke else 40
    if t.kind is not load.RESPONSES:
        results, *_ = _measure(env, t, _client(t, True, 1, total=n))
        return _ttft_row(results)
    batches: dict[bool, list] = {False: [], True: []}
    rounds = 1 if env.smoke else 4
    for round_ in range(rounds):
        for store in ((False, True) if round_ % 2 == 0 else (True, False)):  # neither always goes first
            body = load.responses_body(True, store=store)
            client = load.Client(t.url, t.kind, body, True, 1, total=max(1, n // rounds), timeout=30.0)
            results, *_ = _measure(env, t, client)
            batches[store] += results
    row = _ttft_row(batches[False])
    stored = _ttft_row(batches[True])
    row.update(ttft_store_p50=stored["ttft_p50"], ttft_store_p99=stored["ttft_p99"],
               errors=row["errors"] + stored["errors"], error=row["error"] or stored["error"],
               n=row["n"] + stored["n"])
    return row


def _ttft_row(results: list) -> dict:
    ok = [r for r in results if r.ok]
    ttft = [r.ttft for r in ok if r.ttft is not None]
    nerr, err = _errors(results)
    return {"ttft_p50": load.pct(ttft, 50), "ttft_p99": load.pct(ttft, 99), "errors": nerr, "error": err,
            "n": len(results)}


# -- (b) one long stream, no delay ---------------------------------------------------------------------------------
def run_long_stream(env: Env, t: Target) -> dict:
    tokens = TOKENS_B_SMOKE if env.smoke else TOKENS_B
    results, m, um, ccpu = _measure(env, t, _client(t, True, 1, total=1, timeout=120))
    r = results[0]
    nerr, err = _errors(results)
    dur = (r.done - r.start) if r.ok else None
    return {"events_per_s": tokens / dur if dur else None,
            "cpu_us_per_event": m.cpu / tokens * 1e6 if t.pid() else None,
            "kernel_share": m.cpu_sys / m.cpu if m.cpu else None, "deltas_seen": r.deltas, "errors": nerr,
            "error": err, "upstream_cpu": um.cpu, "wall": dur, "client_cpu": ccpu}


TOKENS_B, TOKENS_B_SMOKE = 20000, 2000


# -- (c) many concurrent streams at 10 ms per token -------------------------------------------------------------------
def make_concurrent(conc: int) -> Callable[[Env, Target], dict]:
    def run_conc(env: Env, t: Target) -> dict:
        c = SMOKE_CONC if env.smoke else conc
        sc = C_SMOKE if env.smoke else C_UPSTREAM
        ideal = sc["ttft"] + sc["delay"] * (sc["tokens"] - 1)
        if t.restart and env.restart_for_rss and not env.smoke:
            t.restart()   # fresh process: RSS never shrinks, so growth is only visible from a clean start
            warm(t)
        timeout = max(10.0, 7.5 * ideal)
        cl = _client(t, True, c, total=c, timeout=timeout)
        results, m, um, ccpu = _measure(env, t, cl)
        ok = [r for r in results if r.ok]
        nerr, err = _errors(results)
        ttft = [r.ttft for r in ok if r.ttft is not None]
        gaps = [g for r in ok for g in r.gaps]
        t0 = min(r.start for r in results)
        wall = (max(r.done for r in ok) - t0) if len(ok) == c else timeout
        return {"completed": len(ok), "n": c, "errors": nerr, "error": err, "wall_ideal": wall / ideal,
                "ttft_p50": load.pct(ttft, 50), "ttft_p99": load.pct(ttft, 99), "gap_p99": load.pct(gaps, 99),
                "peak_rss": m.peak_rss if t.pid() else None,
                "rss_per_stream": (m.peak_rss - m.rss0) / c if t.pid() else None,
                "cpu_us_per_event": m.cpu / (c * sc["tokens"]) * 1e6 if t.pid() else None,
                "kernel_share": m.cpu_sys / m.cpu if m.cpu else None,
                "upstream_util": um.cpu / um.wall if um.wall else None, "client_util": ccpu / cl.wall,
                "upstream_cpu": um.cpu, "events": sum(r.deltas for r in ok), "timeout": timeout}
    return run_conc


C_UPSTREAM = {"ttft": 0.0, "tokens": 200, "delay": 0.01}
C_SMOKE = {"ttft": 0.0, "tokens": 20, "delay": 0.01}
SMOKE_CONC = 20


# -- (d) non-streaming requests --------------------------------------------------------------------------------------
def run_nonstream(env: Env, t: Target) -> dict:
    dur = 0.5 if env.smoke else 3.0
    conc = 16
    cl = _client(t, False, conc, duration=dur, timeout=dur + 30)
    results, m, um, ccpu = _measure(env, t, cl)
    ok = [r for r in results if r.ok]
    nerr, err = _errors(results)
    lat = [r.latency for r in ok]
    return {"rps": len(ok) / cl.wall, "lat_p50": load.pct(lat, 50), "lat_p99": load.pct(lat, 99), "errors": nerr,
            "error": err, "cpu_us_per_req": m.cpu / len(ok) * 1e6 if ok and t.pid() else None,
            "kernel_share": m.cpu_sys / m.cpu if m.cpu else None,
            "upstream_cpu": um.cpu, "n": len(results)}


# -- (e) translating a ~1 MB Codex request, in-process -------------------------------------------------------------
_REDACTED = re.compile(r"^<redacted: (\d+) chars")
_FILLER = ("You are Codex, a coding agent. Follow the repository conventions, keep changes minimal, run the tests "
           "and explain what you changed. ")


# -- (h) streams waiting for their first token -----------------------------------------------------------------------
HELD_STREAMS, HELD_SMOKE = 1000, 20
H_UPSTREAM = {"ttft": 60.0, "tokens": 1, "delay": 0.0}   # the upstream answers the headers, then thinks


def run_held(env: Env, t: Target) -> dict:
    """Open streams whose upstream has not sent a token yet (DeepSeek in thinking mode takes seconds to its first
    token): RSS growth per held stream once every request has reached the upstream. Nothing in between to
    measure when going direct."""
    if t.pid() is None:
        return {"n": 0, "errors": 0}
    n = HELD_SMOKE if env.smoke else HELD_STREAMS
    if t.restart and env.restart_for_rss and not env.smoke:
        t.restart()
        warm(t)
    wait_idle(env.all_pids())
    reached0 = env.upstream_stats()["streams"]
    rss0 = rss_bytes(tree(t.pid()))
    socks = load.open_held_streams(t.url, t.kind, n)
    try:
        deadline = time.time() + 30
        while env.upstream_stats()["streams"] - reached0 < n and time.time() < deadline:
            time.sleep(0.1)
        held = env.upstream_stats()["streams"] - reached0
        time.sleep(0.5)   # let the last ones settle into their wait
        rss1 = rss_bytes(tree(t.pid()))
    finally:
        for s in socks:
            s.close()
    return {"n": n, "held": held, "errors": n - held, "rss_per_stream": (rss1 - rss0) / n,
            "error": None if held == n else f"{n - held} of {n} requests never reached the upstream"}


def _expand(obj):
    """Put the redacted prose back at its original length, so the body weighs what Codex really sends."""
    if isinstance(obj, str):
        m = _REDACTED.match(obj)
        if m:
            n = int(m.group(1))
            return (_FILLER * (n // len(_FILLER) + 1))[:n]
        return obj
    if isinstance(obj, list):
        return [_expand(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _expand(v) for k, v in obj.items()}
    return obj


def big_codex_request(target_bytes: int = 1_000_000, path: str = FIXTURE) -> bytes:
    """turn3 of the captured 3-turn Codex session, its history (user turn, reasoning, exec_command call/output,
    apply_patch call/output) repeated with fresh call ids and ~3 KB tool outputs until the body is ~target_bytes."""
    with open(path, "rb") as f:
        base = _expand(json.load(f))
    head, hist = base["input"][:3], base["input"][3:]
    body = dict(base, input=list(head))
    size = len(json.dumps(body))
    out_pad = ("drwxr-xr-x 2 root root 4096 Nov 21 12:00 src\n-rw-r--r-- 1 root root 1234 Nov 21 12:00 main.py\n"
               * 30)
    rep = 0
    while size < target_bytes:
        block = copy.deepcopy(hist)
        for it in block:
            if "call_id" in it:
                it["call_id"] = f"{it['call_id']}_{rep}"
            if "id" in it and isinstance(it["id"], str):
                it["id"] = f"{it['id']}_{rep}"
            if it.get("type") == "function_call_output":
                it["output"] = it["output"] + out_pad
            if it.get("type") == "message" and it.get("role") == "user":
                it["content"] = [{"type": "input_text", "text": f"step {rep}: create hello{rep}.txt"}]
        body["input"].extend(block)
        size += len(json.dumps(block))
        rep += 1
    return json.dumps(body).encode()


def _find_translator():
    """-> (callable(dict) -> object, description) or (None, reason).

    translate_request needs the model's config, the upstream profile and the reasoning codec; we build them the
    way the app does (create_app on an empty config, env pointing nowhere) and call it as the front door does."""
    try:
        from deepseek_proxy.translate.responses_request import translate_request  # type: ignore
    except Exception as e:  # ImportError, or the package failing half-written
        return None, f"deepseek_proxy.translate.responses_request.translate_request not importable ({e!r})"
    import inspect
    try:
        sig = inspect.signature(translate_request)
    except (TypeError, ValueError):
        sig = None
    required = [p for p in (sig.parameters.values() if sig else ())
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(required) <= 1:
        return translate_request, f"translate_request{sig}"
    try:
        import tempfile

        from deepseek_proxy.app import create_app  # type: ignore
        from deepseek_proxy.config import load_config  # type: ignore
        from deepseek_proxy.frontdoors.common import EXTENSION  # type: ignore
        tmp = tempfile.mkdtemp(prefix="bench-translate-")
        env = {"DEEPSEEK_API_KEY": "sk-bench", "DEEPSEEK_BASE_URL": "http://127.0.0.1:9",
               "XDG_STATE_HOME": tmp, "XDG_CONFIG_HOME": tmp, "HOME": tmp}
        gw = create_app(load_config(os.devnull, env=env), env=env).extensions[EXTENSION]
    except Exception as e:
        return None, f"translate_request{sig}: could not build its arguments the way the app does ({e!r})"

    try:  # since the one-relay seam: the door translates, the upstream layer prepares (both on every request)
        from deepseek_proxy.upstream.prepare import prepare_request  # type: ignore
    except ImportError:
        prepare_request = None

    def call(body):
        model = gw.config.model(body["model"])
        client = gw.client_for(model)
        if prepare_request is None:
            return translate_request(body, model, client.profile, gw.codec, gw.reasoning_cache, upstream_stream=True)
        chat = translate_request(body, model, client.profile, gw.codec, upstream_stream=True)
        return prepare_request(chat.body, model=model, profile=client.profile, thinking=chat.thinking,
                               cache=gw.reasoning_cache)
    if prepare_request is None:
        return call, "translate_request(body, model, profile, codec, cache) as the front door calls it"
    return call, "translate_request + upstream.prepare.prepare_request, as the door and the upstream layer call them"


def _find_validator():
    """The front door's validation step (run before translation), or None where there is none."""
    try:
        from deepseek_proxy.frontdoors.responses_validation import validate_responses_request  # type: ignore
    except Exception:
        return None
    return validate_responses_request


def run_translate(env: Env, t: Target | None = None) -> dict:
    fn, desc = _find_translator()
    raw = big_codex_request(100_000 if env.smoke else 1_000_000)
    import sys
    use_orjson = "orjson" in sys.modules
    if use_orjson:
        import orjson
        loads, dumps = orjson.loads, orjson.dumps
    else:
        loads = json.loads

        def dumps(o):
            return json.dumps(o, ensure_ascii=False, separators=(",", ":")).encode()
    iters = 3 if env.smoke else 20
    floor = []
    for _ in range(iters):   # the floor: parse + serialize the same body, no translation
        t0 = time.perf_counter()
        dumps(loads(raw))
        floor.append(time.perf_counter() - t0)
    out = {"bytes": len(raw), "floor_ms": statistics.median(floor) * 1e3, "json": "orjson" if use_orjson else "json",
           "translator": desc}
    if fn is None:
        out["skip"] = desc
        return out
    validate = _find_validator()
    times, ttimes, vtimes = [], [], []
    try:
        for _ in range(iters):
            t0 = time.perf_counter()
            body = loads(raw)
            tv = time.perf_counter()
            if validate is not None:
                validate(body)
            t1 = time.perf_counter()
            res = fn(body)
            t2 = time.perf_counter()
            dumps(_as_jsonable(res))
            t3 = time.perf_counter()
            times.append(t3 - t0)
            ttimes.append(t2 - t1)
            vtimes.append(t1 - tv)
    except Exception as e:
        out["skip"] = f"{desc} raised {e!r}"
        return out
    out.update(ms=statistics.median(times) * 1e3, translate_ms=statistics.median(ttimes) * 1e3,
               validate_ms=statistics.median(vtimes) * 1e3 if validate is not None else None)
    return out


def _as_jsonable(res):
    """translate_request may return the chat body, or a (body, extras) tuple, or an object with .body/.to_dict()."""
    if isinstance(res, dict):
        return res
    if isinstance(res, tuple) and res and isinstance(res[0], dict):
        return res[0]
    for attr in ("body", "payload", "chat"):
        v = getattr(res, attr, None)
        if isinstance(v, dict):
            return v
    for meth in ("to_dict", "model_dump", "as_dict"):
        f = getattr(res, meth, None)
        if callable(f):
            return f()
    return res


# -- (i) prefix-cache hits over a long agent session ------------------------------------------------------------------
def run_cache(env: Env, t: Target | None = None) -> dict:
    from .cache_session import run_cache_session
    return run_cache_session(env.start_proxy, env.smoke)


SCENARIOS = [
    Scenario("a", "TTFT at concurrency 1", {"ttft": 0.05, "tokens": 10, "delay": 0.0}, run_ttft),
    Scenario("b", "one 20k-token stream, no delay", {"ttft": 0.0, "tokens": TOKENS_B, "delay": 0.0}, run_long_stream,
             smoke_upstream={"tokens": TOKENS_B_SMOKE}),
    *[Scenario("c", f"{c} streams x 200 tokens @ 10 ms", C_UPSTREAM, make_concurrent(c), info={"conc": c},
               smoke_upstream=C_SMOKE)
      for c in (50, 200, 500, 1000)],
    Scenario("d", "non-stream requests (16 clients)", {"ttft": 0.0, "tokens": 50, "delay": 0.0}, run_nonstream),
    Scenario("h", f"{HELD_STREAMS} streams waiting for their first token", H_UPSTREAM, run_held),
    Scenario("e", "translate a ~1 MB Codex request", {}, run_translate, needs_targets=False),
    Scenario("i", "a 50-call agent session per door against the cache-modelling upstream", {}, run_cache,
             needs_targets=False),
]
