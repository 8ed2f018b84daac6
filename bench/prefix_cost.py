"""What prefix-break detection costs per request (issue 14; deepseek_proxy/ops/prefix.py): the fingerprint of the
upstream prompt, and a whole comparison with the conversation's previous prompt with the fingerprints in the process
and in a SQLite store (the default), for the captured Codex turn (tests/fixtures/codex/normal/turn3) and a 1 MB
Codex-shaped agent prompt (a 22 KB system prompt, 30 tools, 480 tool-call turns with reasoning).

    python -m bench.prefix_cost [--runs 200]

It runs after the reply (off the time to first token), so this is CPU a worker spends per completed request."""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from deepseek_proxy.config import default_models
from deepseek_proxy.core.prefix import LruFingerprints, PrefixTracker, StoreFingerprints, fingerprint
from deepseek_proxy.store.sqlite import SQLiteStore
from deepseek_proxy.translate.reasoning import ReasoningCodec
from deepseek_proxy.translate.responses_request import translate_request
from deepseek_proxy.upstream.prepare import prepare_request
from deepseek_proxy.upstream.profiles import profile_named

REPO = Path(__file__).resolve().parent.parent


def codex_turn() -> dict:
    """The captured Codex turn as the proxy sends it upstream."""
    request = json.loads((REPO / "tests/fixtures/codex/normal/turn3_request.json").read_text())
    model, profile = default_models()["deepseek-v4-pro"], profile_named("deepseek")
    chat = translate_request(request, model, profile, ReasoningCodec(b"bench")).body
    return dict(prepare_request(chat, model=model, profile=profile, thinking=True))


def agent_prompt(turns: int = 480) -> dict:
    """A long agent session's prompt (~1 MB at 480 turns)."""
    rnd = random.Random(1)
    tools = [{"type": "function", "function": {"name": f"tool_{i}", "description": "d" * 800,
              "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}} for i in range(30)]
    messages: list[dict] = [{"role": "system", "content": "You are Codex. " * 1500},
                            {"role": "user", "content": "<environment_context>" + "x" * 2000}]
    for i in range(turns):
        messages.append({"role": "assistant", "content": None, "reasoning_content": "think " * 150,
                         "tool_calls": [{"id": f"call_{i}", "type": "function",
                                         "function": {"name": "exec", "arguments": json.dumps({"cmd": "ls " * 20})}}]})
        messages.append({"role": "tool", "tool_call_id": f"call_{i}",
                         "content": "".join(rnd.choice("abcdef \n") for _ in range(800))})
    return {"model": "deepseek-v4-pro", "messages": messages, "tools": tools, "stream": True}


def timed(task: Callable[[], object], runs: int) -> str:
    took = []
    for _ in range(runs):
        start = time.perf_counter()
        task()
        took.append((time.perf_counter() - start) * 1000)
    took.sort()
    return f"p50 {took[len(took) // 2]:6.2f} ms  p90 {took[int(len(took) * 0.9)]:6.2f} ms"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args(argv)
    for name, prompt in (("codex normal/turn3", codex_turn()), ("agent prompt", agent_prompt())):
        report(name, prompt, args.runs)


def report(name: str, prompt: dict, runs: int) -> None:
    print(f"{name}: {len(orjson.dumps(prompt)) / 1024:.0f} KB")
    print(f"  fingerprint              {timed(lambda: fingerprint(prompt), runs)}")
    in_process = PrefixTracker(LruFingerprints())
    in_process.observe("k", prompt)
    print(f"  compare, process memory  {timed(lambda: in_process.observe('k', prompt), runs)}")
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore(directory + "/store.db", ttl_seconds=86400, reasoning_ttl_seconds=86400,
                            max_response_bytes=16 << 20)
        in_store = PrefixTracker(StoreFingerprints(store))
        in_store.observe("k", prompt)
        print(f"  compare, SQLite store    {timed(lambda: in_store.observe('k', prompt), runs)}")
        print(f"  stored per conversation  {len(store.get_reasoning('prefix:k') or '')} bytes")

if __name__ == "__main__":
    main()
