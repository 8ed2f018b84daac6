"""What the response store costs per call, per backend: ``python -m bench.store`` (``--smoke`` for CI).

The record is a realistic Codex turn of ~100 KB encoded: the captured turn-3 request of tests/fixtures/codex/normal
(its redacted prose put back at full length, its tool outputs repeated up to the size), with a reasoning item, a
function call and a message as output. Per backend (memory, SQLite in a temporary file, Redis on a redis-server
this bench starts on a free loopback port), each operation is timed one call at a time, in this process:

- put 100 KB      `put_response` of the turn: what storing a finished response costs (the door does it after
                  the last event is sent, so off the time to first token; under gevent a SQLite call blocks the
                  worker for this long, a Redis call yields while it waits)
- get             `get_response` without input: `GET /v1/responses/{id}`
- conversation    `get_conversation` of one 100 KB turn: what `previous_response_id` adds before the upstream call,
                  i.e. to the time to first token
- conv 10 turns   the same for a 10-turn chain (~1 MB of history)
- item            `get_item` of an output item: one `item_reference`, also on the time-to-first-token path
- reasoning put / get   the reasoning fallback cache

Printed: median and p99 per call in milliseconds, the median of the reps' medians. The puts come back to back,
unlike a proxy's (one per finished response): SQLite's p99 then includes the WAL checkpoints its own backstop runs
inside a commit, which the store's checkpoint thread takes off the worker when writes are spread out. Issue 11's
target: `store: true` adds at most 0.3 ms to TTFT p50 with SQLite: compare the "conversation" and "item" rows (and
"put" if a door stores before the first token).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "codex" / "normal" / "turn3_request.json"
TURN_BYTES = 100 * 1024
_REDACTED = re.compile(r"^<redacted: (\d+) chars")
_FILLER = "def handler(request):\n    return render(request, 'index.html', {'items': Item.objects.all()})\n"


def _expand(obj):
    if isinstance(obj, str):
        m = _REDACTED.match(obj)
        return (_FILLER * (int(m.group(1)) // len(_FILLER) + 1))[:int(m.group(1))] if m else obj
    if isinstance(obj, list):
        return [_expand(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _expand(v) for k, v in obj.items()}
    return obj


def codex_turn(response_id: str, previous: str | None = None):
    from deepseek_proxy.jsonfast import dumps
    from deepseek_proxy.store import StoredResponse

    inputs = _expand(json.loads(FIXTURE.read_text()))["input"]
    n = 0
    while len(dumps(inputs)) < TURN_BYTES - 4000:  # tool outputs, as a long session accumulates them
        n += 1
        inputs.append({"type": "function_call", "id": f"fc_pad{n}", "call_id": f"call_pad{n}", "name": "exec_command",
                       "arguments": json.dumps({"cmd": f"sed -n {n},+80p src/app.py"})})
        inputs.append({"type": "function_call_output", "call_id": f"call_pad{n}", "output": _FILLER * 30})
    output = [
        {"id": f"rs_{response_id}", "type": "reasoning", "summary": [],
         "content": [{"type": "reasoning_text", "text": "The user wants the failing test fixed. " * 40}],
         "encrypted_content": "dsp1." + "A" * 1500 + ".tag"},
        {"id": f"fc_{response_id}", "type": "function_call", "call_id": f"call_{response_id}", "status": "completed",
         "name": "exec_command", "arguments": json.dumps({"cmd": "pytest -q tests/test_app.py"})},
        {"id": f"msg_{response_id}", "type": "message", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "I ran the tests; one fails in the handler. " * 10,
                      "annotations": []}]},
    ]
    response = {"id": response_id, "object": "response", "created_at": 1_764_600_000, "status": "completed",
                "model": "deepseek-v4-pro", "output": output, "previous_response_id": previous, "store": True,
                "usage": {"input_tokens": 25_000, "output_tokens": 700, "total_tokens": 25_700}}
    return StoredResponse(id=response_id, response=response, input_items=inputs, model="deepseek-v4-pro",
                          created_at=1_764_600_000, previous_response_id=previous)


def timed(fn, n: int) -> list[float]:
    samples = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return samples


def run_backend(store, n: int) -> dict[str, list[float]]:
    import copy

    base = codex_turn("resp_base")
    size = len(json.dumps(base.response)) + len(json.dumps(base.input_items))
    records = [copy.deepcopy(base) for _ in range(4)]
    for i, r in enumerate(records):
        r.id = r.response["id"] = f"resp_put{i}"

    def put(i: int) -> None:
        rec = records[i % 4]
        rec.expires_at = 0.0
        store.put_response(rec)

    store.put_response(codex_turn("resp_get"))
    chain_prev = None
    for t in range(10):
        store.put_response(codex_turn(f"resp_chain{t}", previous=chain_prev))
        chain_prev = f"resp_chain{t}"
    for k in range(100):
        store.put_reasoning(f"call_{k}", "reasoning " * 100)

    ops = {
        "put 100 KB": (put, n),
        "get": (lambda i: store.get_response("resp_get"), n * 4),
        "conversation": (lambda i: store.get_conversation("resp_get"), n),
        "conv 10 turns": (lambda i: store.get_conversation("resp_chain9"), max(n // 5, 3)),
        "item": (lambda i: store.get_item("fc_resp_get"), n * 4),
        "reasoning put": (lambda i: store.put_reasoning(f"call_{i % 100}", "reasoning " * 100), n * 4),
        "reasoning get": (lambda i: store.get_reasoning(f"call_{i % 100}"), n * 4),
    }
    assert store.get_conversation("resp_chain9") is not None and len(store.get_conversation("resp_chain9")) == 10
    assert store.get_item("fc_resp_get")["name"] == "exec_command"
    results: dict[str, list[float]] = {"size": [float(size)]}
    for name, (fn, count) in ops.items():
        timed(fn, max(count // 10, 2))  # warm
        results[name] = timed(fn, count)
    return results


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=500, help="calls per operation and rep (x4 for the cheap ones)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="a few calls: only checks that it works (for CI)")
    args = ap.parse_args(argv)
    n, reps = (10, 1) if args.smoke else (args.calls, args.reps)

    from deepseek_proxy.store import Store
    from deepseek_proxy.store.memory import MemoryStore
    from deepseek_proxy.store.sqlite import SQLiteStore
    from tests.redis_server import RedisServer

    limits = {"ttl_seconds": 86400.0, "reasoning_ttl_seconds": 3600.0, "max_response_bytes": 16 << 20}
    table: dict[str, dict[str, list[tuple[float, float]]]] = {}
    size = 0
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        try:
            redis = RedisServer(Path(tmp))
        except FileNotFoundError as exc:
            print(f"redis: {exc}", file=sys.stderr)
            redis = None
        try:
            for rep in range(reps):
                backends: dict[str, Store] = {"memory": MemoryStore(**limits),
                                              "sqlite": SQLiteStore(Path(tmp) / f"store{rep}.db", **limits)}
                if redis is not None:
                    from deepseek_proxy.store.redis import RedisStore
                    backends["redis"] = RedisStore(redis.url, prefix=f"bench{rep}:", **limits)
                for name, store in backends.items():
                    results = run_backend(store, n)
                    store.close()
                    size = int(results.pop("size")[0])
                    for op, samples in results.items():
                        table.setdefault(op, {}).setdefault(name, []).append((statistics.median(samples),
                                                                             p99(samples)))
        finally:
            if redis is not None:
                redis.stop()

    backends_seen = list(next(iter(table.values())))
    print(f"response store, one call at a time; record {size / 1024:.0f} KB encoded; {reps} rep(s); "
          f"ms: median (p99), median over reps")
    print(f"{'operation':<16}" + "".join(f"{b:>22}" for b in backends_seen))
    for op, per_backend in table.items():
        cells = []
        for b in backends_seen:
            med = statistics.median(m for m, _ in per_backend[b])
            tail = statistics.median(p for _, p in per_backend[b])
            cells.append(f"{med:.3f} ({tail:.3f})")
        print(f"{op:<16}" + "".join(f"{c:>22}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
