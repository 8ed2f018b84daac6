"""The prefix-cache hit ratio, visible (issue 14), on the real server (gunicorn + gevent, 2 workers) against the fake
DeepSeek, whose cache model reports prompt_cache_hit_tokens: a 3-turn Codex-style conversation through /v1/responses
(its prompt_cache_key) and a 3-turn Claude Code-style one through /v1/messages (its session in metadata.user_id),
sent with the official SDKs. Then, as a user would: `deepseek-proxy usage --by conversation` shows each
conversation with the ratio the fake reported and costs it at DeepSeek's hit / miss / output prices; /metrics has
one cache-hit-ratio observation per request, in the buckets the fake's ratios fall in, and the hit / miss token
counters add up to the fake's counts (both workers' samples summed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import anthropic
import openai
import pytest

from deepseek_proxy.config import StoreConfig
from deepseek_proxy.ops.metrics import CACHE_HIT_RATIO_BUCKETS
from deepseek_proxy.ops.prices import PRICES_DEFAULT, Prices
from deepseek_proxy.store import open_store
from tests.fakes.fake_deepseek import Reply
from tests.integration.test_team import scrape

MODEL = "deepseek-v4-pro"
CLAUDE_MODEL = "claude-sonnet-4-5"
TURNS = 3
# Long enough system prompts that the shared prefix spans many of the cache's 64-token blocks.
CODEX_INSTRUCTIONS = "You are a coding agent working in a repository. " + " ".join(
    f"Rule {n}: keep every change small, tested and explained." for n in range(120))
CLAUDE_SYSTEM = "You are Claude Code, an interactive command-line tool for software engineering. " + " ".join(
    f"Guideline {n}: read the code before you change it, then run the tests." for n in range(120))


def listing(turn: int) -> str:
    """A file's text pasted into a turn: each turn adds more than one cache block to the conversation."""
    return "\n".join(f"def check_{turn}_{n}(value): return value > {n}" for n in range(40))


def usage_command(cli_config, *words: str) -> str:
    """`deepseek-proxy usage ...` in a process of its own, as a user runs it."""
    done = subprocess.run([sys.executable, "-m", "deepseek_proxy.cli", "--config", str(cli_config), "usage", *words],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HOME": str(cli_config.parent)})
    assert done.returncode == 0, done.stderr
    return done.stdout


def codex_conversation(base_url: str, cache_key: str) -> list[int]:
    """Three turns, each replaying the whole history (as Codex does with store: false); the output tokens of each."""
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=30)
    history: list[dict] = []
    outputs = []
    for turn in range(1, TURNS + 1):
        history.append({"role": "user", "content": f"Step {turn}: say what module_{turn}.py does.\n" + listing(turn)})
        if turn == 2:  # one streamed turn: the relay's path
            with client.responses.stream(model=MODEL, instructions=CODEX_INSTRUCTIONS, input=history, store=False,
                                         prompt_cache_key=cache_key) as stream:
                response = stream.get_final_response()
        else:
            response = client.responses.create(model=MODEL, instructions=CODEX_INSTRUCTIONS, input=history,
                                               store=False, prompt_cache_key=cache_key)
        history.append({"role": "assistant", "content": response.output_text})
        outputs.append(response.usage.output_tokens)
    return outputs


def claude_conversation(base_url: str, session_id: str) -> list[int]:
    client = anthropic.Anthropic(base_url=base_url, api_key="sk-anything", max_retries=0, timeout=30)
    user_id = json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": session_id})
    messages: list[dict] = []
    outputs = []
    for turn in range(1, TURNS + 1):
        messages.append({"role": "user", "content": f"Turn {turn}: fix the failing test.\n" + listing(turn)})
        if turn == 3:
            with client.messages.stream(model=CLAUDE_MODEL, max_tokens=1024, system=CLAUDE_SYSTEM, messages=messages,
                                        metadata={"user_id": user_id}) as stream:
                message = stream.get_final_message()
        else:
            message = client.messages.create(model=CLAUDE_MODEL, max_tokens=1024, system=CLAUDE_SYSTEM,
                                             messages=messages, metadata={"user_id": user_id})
        messages.append({"role": "assistant", "content": message.content[0].text})
        outputs.append(message.usage.output_tokens)
    return outputs


def test_usage_by_conversation_and_metrics_show_the_hit_ratio_the_upstream_reported(start_proxy, upstream, tmp_path):
    url = f"sqlite:///{tmp_path}/store.db"
    cli_config = tmp_path / "cli.toml"
    cli_config.write_text(f'[store]\nurl = "{url}"\n')
    proxy = start_proxy(upstream.base_url, f'[store]\nurl = "{url}"\n', workers=2)
    upstream.script(*[Reply.text(f"Done with step {n}: the module parses the config and checks it.")
                      for n in range(2 * TURNS)])
    codex_key, claude_session = str(uuid.uuid4()), str(uuid.uuid4())
    before = scrape(proxy.base_url)
    outputs = {codex_key: codex_conversation(proxy.base_url, codex_key),
               claude_session: claude_conversation(proxy.base_url, claude_session)}

    # What the fake's cache model reported for each upstream request, in the order sent: Codex's three, then Claude's.
    records = upstream.chat_requests
    assert [r.rejection for r in records] == [None] * 2 * TURNS
    reported = {codex_key: records[:TURNS], claude_session: records[TURNS:]}
    for turns in reported.values():
        assert turns[0].cache_hit_tokens == 0 < turns[1].cache_hit_tokens < turns[2].cache_hit_tokens

    store = open_store(StoreConfig(url=url))
    deadline = time.monotonic() + 10
    while len(rows := store.usage_rows()) < 2 * TURNS and time.monotonic() < deadline:
        time.sleep(0.05)  # a stream's row is written right after its last event
    assert len(rows) == 2 * TURNS

    report = json.loads(usage_command(cli_config, "--by", "conversation", "--json"))
    # Each conversation is its own group, named by the door's conversation key (RequestScope.conversation)
    named = {name: [g for g in report["groups"] if name in g["group"]] for name in reported}
    assert [len(found) for found in named.values()] == [1, 1] and len(report["groups"]) == 2, [
        g["group"] for g in report["groups"]]
    groups = {name: found[0] for name, found in named.items()}
    table = usage_command(cli_config, "--by", "conversation")
    prices = Prices()
    for name, turns in reported.items():
        group = groups[name]
        prompt, hits = sum(t.prompt_tokens for t in turns), sum(t.cache_hit_tokens for t in turns)
        assert (group["requests"], group["input_tokens"], group["cached_tokens"], group["miss_tokens"]) == (
            TURNS, prompt, hits, prompt - hits)
        assert group["cache_hit_ratio"] == pytest.approx(hits / prompt) and hits / prompt > 0.4
        assert group["output_tokens"] == sum(outputs[name])
        # cost = hit x hit price + miss x miss price + output x output price, each request at its own hour's prices
        mine = [row for row in rows if name in row.conversation]
        assert [(row.input_tokens, row.cached_tokens) for row in mine] == [
            (t.prompt_tokens, t.cache_hit_tokens) for t in turns]
        cost = saved = 0.0
        for row, turn, output in zip(mine, turns, outputs[name], strict=True):
            tier = "peak_" if prices.is_peak(row.at) else ""
            price = {kind: PRICES_DEFAULT[MODEL][tier + kind] for kind in ("cache_hit", "cache_miss", "output")}
            hit, miss = turn.cache_hit_tokens, turn.prompt_tokens - turn.cache_hit_tokens
            cost += (hit * price["cache_hit"] + miss * price["cache_miss"] + output * price["output"]) / 1e6
            saved += hit * (price["cache_miss"] - price["cache_hit"]) / 1e6
        assert group["cost_usd"] == pytest.approx(cost) and group["saved_usd"] == pytest.approx(saved)
        line = next(line for line in table.splitlines() if line.startswith(group["group"][:20]))
        assert f"{prompt:,}" in line and f"{hits:,}" in line and f"{hits / prompt:.1%}" in line
        assert line.split()[-1] == f"{cost:.4f}"
    everything = sum(t.prompt_tokens for t in records)
    all_hits = sum(t.cache_hit_tokens for t in records)
    assert f"prefix cache: {all_hits:,} of {everything:,} input tokens hit ({all_hits / everything:.1%})" in table

    deadline = time.monotonic() + 10
    while True:  # both workers' samples, once the last stream has been counted
        after = scrape(proxy.base_url)
        if sum(v for (n, _), v in after.items() if n == "deepseek_proxy_cache_hit_ratio_count") - sum(
                v for (n, _), v in before.items() if n == "deepseek_proxy_cache_hit_ratio_count") >= 2 * TURNS \
                or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for kind, count in (("input_cache_hit", all_hits), ("input_cache_miss", everything - all_hits)):
        key = ("deepseek_proxy_tokens_total", (("kind", kind), ("model", MODEL)))
        assert after.get(key, 0.0) - before.get(key, 0.0) == count, kind
    for door, name in (("responses", codex_key), ("messages", claude_session)):
        ratios = [t.cache_hit_tokens / t.prompt_tokens for t in reported[name]]

        def grew(sample: str, door: str = door, **labels: str) -> float:
            key = (sample, tuple(sorted({"door": door, "model": MODEL, **labels}.items())))
            return after.get(key, 0.0) - before.get(key, 0.0)

        assert grew("deepseek_proxy_cache_hit_ratio_count") == TURNS
        assert grew("deepseek_proxy_cache_hit_ratio_sum") == pytest.approx(sum(ratios))
        for bound in CACHE_HIT_RATIO_BUCKETS:
            assert grew("deepseek_proxy_cache_hit_ratio_bucket", le=str(float(bound))) == sum(
                ratio <= bound for ratio in ratios), bound
