"""Usage rows and what `deepseek-proxy usage` prints.

    recorder = UsageRecorder(store, Prices(config.ops.prices, config.ops.peak_hours_utc))
    recorder.record_usage(key_name=identity.name, model=model.id, upstream_model=model.upstream_model,
                          upstream=model.upstream, status=200, usage=final_usage, duration_ms=..., ttft_ms=...,
                          door="responses", request_id=rid)

`usage` is the usage object as the upstream (Chat Completions) or the Responses door reported it; `tokens_of`
reads both shapes. A store failure is logged, never raised: a request that has been answered is not failed for
its bookkeeping.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..store import Store, StoreError, UsageRow
from .prices import Prices

log = logging.getLogger("deepseek_proxy.usage")


@dataclass(frozen=True)
class Tokens:
    input: int = 0  # all of the prompt, cache hits included
    cached: int = 0
    output: int = 0  # all of the completion, reasoning included
    reasoning: int = 0


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def tokens_of(usage: Mapping[str, Any] | None) -> Tokens:
    """Token counts from a Chat Completions usage (DeepSeek's `prompt_cache_hit_tokens` or OpenAI's
    `prompt_tokens_details.cached_tokens`) or a Responses usage (`input_tokens`, `input_tokens_details`)."""
    if not usage:
        return Tokens()
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        details = usage.get("prompt_tokens_details") or {}
        cached = _int(usage.get("prompt_cache_hit_tokens")) or _int(details.get("cached_tokens"))
        reasoning = _int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens"))
        return Tokens(_int(usage.get("prompt_tokens")), cached, _int(usage.get("completion_tokens")), reasoning)
    cached = _int((usage.get("input_tokens_details") or {}).get("cached_tokens"))
    reasoning = _int((usage.get("output_tokens_details") or {}).get("reasoning_tokens"))
    return Tokens(_int(usage.get("input_tokens")), cached, _int(usage.get("output_tokens")), reasoning)


class UsageRecorder:
    def __init__(self, store: Store, prices: Prices, *, enabled: bool = True):
        self.store, self.prices, self.enabled = store, prices, enabled

    def make_row(self, *, key_name: str, model: str, upstream: str, status: int, usage: Mapping[str, Any] | None,
                 duration_ms: float, ttft_ms: float | None = None, upstream_model: str | None = None,
                 door: str = "", request_id: str = "", at: float | None = None) -> UsageRow:
        tokens = tokens_of(usage)
        at = time.time() if at is None else at
        priced = upstream_model if upstream_model and self.prices.knows(upstream_model) else model
        cost = self.prices.cost(priced, input_tokens=tokens.input, cached_tokens=tokens.cached,
                                output_tokens=tokens.output, at=at)
        return UsageRow(at=at, key_name=key_name, model=model, upstream=upstream, status=status,
                        input_tokens=tokens.input, cached_tokens=tokens.cached, output_tokens=tokens.output,
                        reasoning_tokens=tokens.reasoning, duration_ms=round(duration_ms, 3),
                        ttft_ms=None if ttft_ms is None else round(ttft_ms, 3), cost_usd=cost, door=door,
                        request_id=request_id)

    def record_usage(self, row: UsageRow | None = None, **fields: Any) -> UsageRow | None:
        """Keep a row (given, or made from `fields` as make_row takes them). Returns it, or None when off."""
        if not self.enabled:
            return None
        row = row if row is not None else self.make_row(**fields)
        try:
            self.store.add_usage(row)
        except StoreError as exc:
            log.warning("usage of request %s not recorded: %s", row.request_id or "?", exc)
        return row


# ---- the report ----------------------------------------------------------------------------------------------
GROUPINGS = ("key", "model", "day")


@dataclass
class Summary:
    group: str
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def cache_hit_ratio(self) -> float | None:
        return self.cached_tokens / self.input_tokens if self.input_tokens else None


def _group_of(row: UsageRow, by: str) -> str:
    if by == "key":
        return row.key_name
    if by == "model":
        return row.model
    return datetime.datetime.fromtimestamp(row.at, datetime.timezone.utc).date().isoformat()


def summarize(rows: Iterable[UsageRow], by: str = "key") -> list[Summary]:
    if by not in GROUPINGS:
        raise ValueError(f"--by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    groups: dict[str, Summary] = {}
    for row in rows:
        group = _group_of(row, by)
        summary = groups.get(group) or groups.setdefault(group, Summary(group))
        summary.requests += 1
        summary.errors += row.status >= 400
        summary.input_tokens += row.input_tokens
        summary.cached_tokens += row.cached_tokens
        summary.output_tokens += row.output_tokens
        summary.reasoning_tokens += row.reasoning_tokens
        summary.cost_usd += row.cost_usd
    return [groups[g] for g in sorted(groups)]


def format_table(summaries: list[Summary], by: str) -> str:
    header = [by, "requests", "errors", "input", "cached", "output", "reasoning", "cache hit", "cost USD"]
    lines = [[s.group, f"{s.requests}", f"{s.errors}", f"{s.input_tokens:,}", f"{s.cached_tokens:,}",
              f"{s.output_tokens:,}", f"{s.reasoning_tokens:,}",
              "-" if s.cache_hit_ratio is None else f"{s.cache_hit_ratio:.1%}", f"{s.cost_usd:.4f}"]
             for s in summaries]
    if summaries:
        total = Summary("total")
        for s in summaries:
            for name in ("requests", "errors", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens",
                         "cost_usd"):
                setattr(total, name, getattr(total, name) + getattr(s, name))
        lines.append([total.group, f"{total.requests}", f"{total.errors}", f"{total.input_tokens:,}",
                      f"{total.cached_tokens:,}", f"{total.output_tokens:,}", f"{total.reasoning_tokens:,}",
                      "-" if total.cache_hit_ratio is None else f"{total.cache_hit_ratio:.1%}",
                      f"{total.cost_usd:.4f}"])
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    out = []
    for n, row in enumerate([header, *lines]):
        if n == len(lines) and summaries:  # a rule above the total
            out.append("  ".join("-" * w for w in widths))
        cells = enumerate(zip(row, widths, strict=True))
        out.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in cells))
    return "\n".join(out)


def parse_since(text: str, now: float | None = None) -> float:
    """`--since`: a duration back from now (`30m`, `24h`, `7d`) or a date / date-time (`2026-11-01`,
    `2026-11-01T12:00`, UTC unless it says otherwise)."""
    now = time.time() if now is None else now
    text = text.strip()
    units = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return now - int(text[:-1]) * units[text[-1]]
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since must be a duration (30m, 24h, 7d, 2w) or a date (2026-11-01), "
                         f"got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()
