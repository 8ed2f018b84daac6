"""Usage rows and what `deepseek-proxy usage` prints.

    recorder = UsageRecorder(store, Prices(config.ops.prices, config.ops.peak_hours_utc))
    recorder.record_usage(key_name=identity.name, model=model.id, upstream_model=model.upstream_model,
                          upstream=model.upstream, status=200, usage=final_usage, duration_ms=..., ttft_ms=...,
                          door="responses", request_id=rid, conversation="responses:019a…")

`usage` is the usage object as the upstream (Chat Completions) or the Responses door reported it; `tokens_of`
reads both shapes. A store failure is logged, never raised: a request that has been answered is not failed for
its bookkeeping.

The report (`deepseek-proxy usage`): `summarize` groups rows by key, model, day, conversation or door; each group
has its prefix-cache hit ratio (cached / input tokens, so a long turn weighs more than a short one) and what the
cache saved (the rows' `saved_usd`: the cost at all-miss prices less the cost); `format_table` and
`format_savings` print it, `report_json` gives it whole (`--json`).
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
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
                 door: str = "", request_id: str = "", at: float | None = None,
                 conversation: str | None = None) -> UsageRow:
        tokens = tokens_of(usage)
        at = time.time() if at is None else at
        priced = self.prices.priced_name(model, upstream_model)
        cached = min(tokens.cached, tokens.input)  # a hit ratio above 1 would be the upstream's slip, not a saving
        cost = self.prices.cost(priced, input_tokens=tokens.input, cached_tokens=cached,
                                output_tokens=tokens.output, at=at)
        saved = self.prices.saving(priced, input_tokens=tokens.input, cached_tokens=cached, at=at)
        return UsageRow(at=at, key_name=key_name, model=model, upstream=upstream, status=status,
                        input_tokens=tokens.input, cached_tokens=cached, output_tokens=tokens.output,
                        reasoning_tokens=tokens.reasoning, duration_ms=round(duration_ms, 3),
                        ttft_ms=None if ttft_ms is None else round(ttft_ms, 3), cost_usd=cost, door=door,
                        request_id=request_id, conversation=conversation or "", saved_usd=saved)

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
GROUPINGS = ("key", "model", "day", "conversation", "door")
NONE = "(none)"  # the group of rows that name no conversation (or door)
GROUP_WIDTH = 26  # a longer group name (a conversation key) is shortened to a prefix that tells it apart


@dataclass
class Summary:
    """A group's requests. `saved_usd`: what the prefix cache saved (the cost at all-miss prices less the cost);
    `estimated` of its rows predate recorded savings and were priced by the report's `estimate`."""

    group: str
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    saved_usd: float = 0.0
    estimated: int = 0
    first_at: float = math.inf
    last_at: float = -math.inf

    @property
    def miss_tokens(self) -> int:
        return self.input_tokens - self.cached_tokens

    @property
    def cache_hit_ratio(self) -> float | None:
        return self.cached_tokens / self.input_tokens if self.input_tokens else None

    @property
    def cost_without_cache_usd(self) -> float:
        return self.cost_usd + self.saved_usd

    def add(self, row: UsageRow, saved_usd: float) -> None:
        self.merge(Summary(self.group, requests=1, errors=int(row.status >= 400), input_tokens=row.input_tokens,
                           cached_tokens=row.cached_tokens, output_tokens=row.output_tokens,
                           reasoning_tokens=row.reasoning_tokens, cost_usd=row.cost_usd, saved_usd=saved_usd,
                           estimated=int(row.saved_usd is None and row.cached_tokens > 0), first_at=row.at,
                           last_at=row.at))

    def merge(self, other: Summary) -> None:
        for name in ("requests", "errors", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens",
                     "cost_usd", "saved_usd", "estimated"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.first_at, self.last_at = min(self.first_at, other.first_at), max(self.last_at, other.last_at)

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "requests": self.requests, "errors": self.errors,
                "input_tokens": self.input_tokens, "cached_tokens": self.cached_tokens,
                "miss_tokens": self.miss_tokens, "cache_hit_ratio": self.cache_hit_ratio,
                "output_tokens": self.output_tokens, "reasoning_tokens": self.reasoning_tokens,
                "cost_usd": self.cost_usd, "saved_usd": self.saved_usd,
                "cost_without_cache_usd": self.cost_without_cache_usd,
                "first": _iso(self.first_at), "last": _iso(self.last_at)}


def _iso(moment: float) -> str | None:
    if not math.isfinite(moment):
        return None
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).isoformat(timespec="seconds")


def _group_of(row: UsageRow, by: str) -> str:
    if by == "key":
        return row.key_name
    if by == "model":
        return row.model
    if by == "conversation":
        return row.conversation or NONE
    if by == "door":
        return row.door or NONE
    return datetime.datetime.fromtimestamp(row.at, datetime.timezone.utc).date().isoformat()


def summarize(rows: Iterable[UsageRow], by: str = "key",
              estimate: Callable[[UsageRow], float] | None = None) -> list[Summary]:
    """The rows' summaries by `by`, in name order (conversations by when they started). `estimate` prices the
    saving of a row written before savings were recorded (none: 0)."""
    if by not in GROUPINGS:
        raise ValueError(f"--by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    groups: dict[str, Summary] = {}
    for row in rows:
        group = _group_of(row, by)
        saved = row.saved_usd if row.saved_usd is not None else estimate(row) if estimate is not None else 0.0
        (groups.get(group) or groups.setdefault(group, Summary(group))).add(row, saved)
    if by == "conversation":
        return sorted(groups.values(), key=lambda s: (s.first_at, s.group))
    return [groups[g] for g in sorted(groups)]


def total_of(summaries: Iterable[Summary]) -> Summary:
    total = Summary("total")
    for summary in summaries:
        total.merge(summary)
    return total


def shorten(names: Iterable[str], width: int = GROUP_WIDTH) -> dict[str, str]:
    """How the table shows each name: whole when it fits in `width`, else cut after the shortest prefix (at least
    width - 1 characters) that no other name shares, then "…"."""
    ordered = sorted(set(names))
    # In sorted order, the name sharing the longest prefix with a name is one of its two neighbours.
    shared = [0] * len(ordered)
    for index in range(1, len(ordered)):
        common = len(os.path.commonprefix(ordered[index - 1:index + 1]))
        shared[index - 1], shared[index] = max(shared[index - 1], common), max(shared[index], common)
    shown = {}
    for name, common in zip(ordered, shared, strict=True):
        cut = max(width - 1, common + 1)
        shown[name] = name if len(name) <= width or cut >= len(name) else name[:cut] + "…"
    return shown


def _ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.1%}"


def format_table(summaries: list[Summary], by: str) -> str:
    header = [by, "requests", "errors", "input", "cached", "miss", "cache hit", "output", "reasoning", "cost USD"]
    shown = shorten(s.group for s in summaries)

    def row_of(s: Summary, name: str) -> list[str]:
        return [name, f"{s.requests}", f"{s.errors}", f"{s.input_tokens:,}", f"{s.cached_tokens:,}",
                f"{s.miss_tokens:,}", _ratio(s.cache_hit_ratio), f"{s.output_tokens:,}", f"{s.reasoning_tokens:,}",
                f"{s.cost_usd:.4f}"]

    rows = [header, *(row_of(s, shown[s.group]) for s in summaries)]
    if summaries:
        rows.append(row_of(total_of(summaries), "total"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    out = []
    for n, row in enumerate(rows):
        if summaries and n == len(rows) - 1:  # a rule above the total
            out.append("  ".join("-" * w for w in widths))
        cells = enumerate(zip(row, widths, strict=True))
        out.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in cells))
    return "\n".join(out)


def format_savings(total: Summary) -> str:
    """What the prefix cache did for these requests, in tokens and dollars (empty when no input was counted)."""
    if not total.input_tokens:
        return ""
    line = (f"prefix cache: {total.cached_tokens:,} of {total.input_tokens:,} input tokens hit "
            f"({_ratio(total.cache_hit_ratio)}), saving {total.saved_usd:.4f} USD: these requests cost "
            f"{total.cost_usd:.4f} USD, {total.cost_without_cache_usd:.4f} USD at cache-miss prices")
    if total.estimated:
        line += (f"\n(the saving of {total.estimated} request(s) recorded before savings were is estimated at "
                 f"today's prices)")
    return line


def report_json(summaries: list[Summary], by: str, *, since: float, until: float | None) -> dict[str, Any]:
    """The report for `--json`: every group whole (full conversation keys), the total, the window."""
    return {"by": by, "since": _iso(since), "until": _iso(until) if until is not None else None,
            "groups": [s.to_json() for s in summaries], "total": total_of(summaries).to_json()}


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
