"""`deepseek-proxy keys add|list|revoke` and `deepseek-proxy usage`: they work on the store the config names
(`[store] url`), the same one the running proxy uses, so a revocation reaches it within a second."""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from typing import Any

from ..config import Config
from ..store import KeyNameTaken, StoreError, UsageRow, open_store
from .keys import add_key
from .prices import PRICES_CHECKED, PRICES_SOURCE, Prices
from .usage import GROUPINGS, format_savings, format_table, parse_since, report_json, summarize, total_of

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")


def add_commands(commands: Any) -> None:
    keys = commands.add_parser("keys", help="client keys: add, list, revoke")
    sub = keys.add_subparsers(dest="keys_command", metavar="SUBCOMMAND", required=True)
    add = sub.add_parser("add", help="make a key for NAME and print it (once: only its hash is kept)")
    add.add_argument("name", metavar="NAME", help="who the key is for (letters, digits, . _ @ + -)")
    add.add_argument("--models", help="comma-separated models the key may use (default: all)")
    add.add_argument("--budget-usd", dest="budget_usd", type=float, help="stop the key once it has cost this much")
    add.add_argument("--rpm", type=int, help="requests per minute (default: [limits] key_rpm)")
    add.add_argument("--concurrency", type=int, help="requests in flight at once (default: [limits] key_concurrency)")
    add.set_defaults(handler=_keys_add)
    listing = sub.add_parser("list", help="every key: name, created, last used, limits, spent, revoked (never the key)")
    listing.set_defaults(handler=_keys_list)
    revoke = sub.add_parser("revoke", help="refuse NAME's key from now on (within a second, in every worker)")
    revoke.add_argument("name", metavar="NAME")
    revoke.set_defaults(handler=_keys_revoke)

    usage = commands.add_parser("usage", help="requests, tokens, prefix-cache hit ratio and cost, by key, model, "
                                "day, conversation or door")
    usage.add_argument("--by", choices=GROUPINGS, default="key",
                       help="conversation: Codex's session (prompt_cache_key), Claude Code's session, ...")
    usage.add_argument("--since", help="30m, 24h, 7d, 2w or a date such as 2026-11-01 (default: 30d)", default="30d")
    usage.add_argument("--until", help="same forms as --since (default: now)")
    usage.add_argument("--json", action="store_true", help="the report as JSON (full conversation keys)")
    usage.set_defaults(handler=_usage)


def describe_settings(config: Config) -> str:
    """The team settings as `deepseek-proxy config` shows them (no secrets: key sources, never keys)."""
    lim, ops = config.limits, config.ops

    def limit(value: int) -> str:
        return str(value) if value else "none"

    pools = [f"upstream {up.name}: {len(up.api_keys)} keys ({up.key_strategy}): {', '.join(up.api_keys)}"
             for up in config.upstreams.values() if up.api_keys]
    lines = [f"limits: rpm {limit(lim.rpm)}, concurrency {limit(lim.concurrency)}, per key rpm {limit(lim.key_rpm)}, "
             f"concurrency {limit(lim.key_concurrency)}; queue {lim.queue_ms} ms",
             f"usage: {'recorded' if ops.usage else 'off'} (kept {ops.usage_retention_seconds / 86400:g} days); "
             f"prices: DeepSeek's of {PRICES_CHECKED}"
             + (f", the config's for {', '.join(sorted(ops.prices))}" if ops.prices else ""),
             f"metrics: {'GET /metrics' if ops.metrics else 'off'}; body capture: "
             + (f"on, {ops.capture_dir or '<state dir>/captures'}, {ops.capture_max_bytes // 1024} KB each"
                if ops.capture_bodies else "off"),
             "prefix breaks: " + (f"detected (memory: {ops.prefix_memory}); logged on deepseek_proxy.prefix, "
                                  "counted as deepseek_proxy_prefix_breaks_total"
                                  if ops.detect_prefix_breaks else "not detected"),
             *pools]
    return "\n".join(lines)


def _store(config: Config):
    return open_store(config.store, usage_retention_seconds=config.ops.usage_retention_seconds)


def _fail(message: str) -> int:
    print(f"deepseek-proxy: {message}", file=sys.stderr)
    return 1


def _keys_add(config: Config, args: argparse.Namespace) -> int:
    if not NAME.match(args.name):
        return _fail(f"a key name is 1-64 letters, digits and . _ @ + - (starting with a letter or digit), "
                     f"got {args.name!r}")
    models = tuple(m.strip() for m in (args.models or "").split(",") if m.strip())
    unknown = [m for m in models if m not in config.models]
    if unknown:
        return _fail(f"--models names a model this proxy does not serve: {unknown[0]} "
                     f"(it serves: {', '.join(config.models)})")
    for flag, value in (("--budget-usd", args.budget_usd), ("--rpm", args.rpm), ("--concurrency", args.concurrency)):
        if value is not None and value <= 0:
            return _fail(f"{flag} must be positive, got {value}")
    store = _store(config)
    try:
        key = add_key(store, args.name, models=models, budget_usd=args.budget_usd, rpm=args.rpm,
                      concurrency=args.concurrency)
    except KeyNameTaken as exc:
        return _fail(str(exc))
    except StoreError as exc:
        return _fail(f"the key store cannot be written: {exc}")
    print(f"key for {args.name} (shown once; only its hash is kept, so a lost key is replaced, not recovered):")
    print(key)
    return 0


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")


def _keys_list(config: Config, args: argparse.Namespace) -> int:
    try:
        records = _store(config).list_client_keys()
    except StoreError as exc:
        return _fail(f"the key store cannot be read: {exc}")
    rows = [["name", "key", "created (UTC)", "last used", "models", "rpm", "concurrency", "budget USD", "spent USD",
             "status"]]
    for r in records:
        rows.append([r.name, r.hint, _when(r.created_at), _when(r.last_used_at), ",".join(r.models) or "all",
                     str(r.rpm) if r.rpm else "-", str(r.concurrency) if r.concurrency else "-",
                     f"{r.budget_usd:.2f}" if r.budget_usd is not None else "-", f"{r.spent_usd:.4f}",
                     f"revoked {_when(r.revoked_at)}" if r.revoked_at is not None else "active"])
    if config.server.client_keys:
        print(f"(and {len(config.server.client_keys)} key(s) in the config file, server.client_keys: named "
              f"config#1… in usage)")
    if not records:
        print("no keys made with `deepseek-proxy keys add` yet")
        return 0
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _keys_revoke(config: Config, args: argparse.Namespace) -> int:
    try:
        store = _store(config)
        revoked = store.revoke_client_key(args.name)
        known = revoked or store.get_client_key(args.name) is not None
    except StoreError as exc:
        return _fail(f"the key store cannot be written: {exc}")
    if revoked:
        print(f"revoked the key of {args.name}: refused from now on (every worker and instance sharing the store "
              f"within a second)")
        return 0
    return _fail(f"the key of {args.name} was already revoked" if known else f"no key is named {args.name!r} "
                 f"(deepseek-proxy keys list shows them)")


def _usage(config: Config, args: argparse.Namespace) -> int:
    try:
        since = parse_since(args.since)
        until = parse_since(args.until) if args.until else None
    except ValueError as exc:
        return _fail(str(exc))
    try:
        rows = _store(config).usage_rows(since=since, until=until)
    except StoreError as exc:
        return _fail(f"the usage store cannot be read: {exc}")
    prices = Prices(config.ops.prices, config.ops.peak_hours_utc)

    def priced_model(row: UsageRow) -> str:  # as the recorder priced it
        model = config.models.get(row.model)
        return prices.priced_name(row.model, model.upstream_model if model is not None else None)

    def estimate(row: UsageRow) -> float:  # the saving of a row recorded before savings were
        return prices.saving(priced_model(row), input_tokens=row.input_tokens, cached_tokens=row.cached_tokens,
                             at=row.at)

    summaries = summarize(rows, args.by, estimate)
    if args.json:
        print(json.dumps(report_json(summaries, args.by, since=since, until=until), indent=2))
        return 0
    print(f"usage since {_when(since)} UTC{'' if until is None else f' until {_when(until)} UTC'}: "
          f"{len(rows)} request(s)")
    if rows:
        print(format_table(summaries, args.by))
        savings = format_savings(total_of(summaries))
        if savings:
            print(savings)
    unpriced = sorted({row.model for row in rows if row.input_tokens + row.output_tokens
                       and not prices.knows(priced_model(row))})
    if unpriced:
        print(f"(no price for {', '.join(unpriced)}: its requests cost 0 here; set [pricing.models] for it)")
    note = "prices from the config file for " + ", ".join(sorted(config.ops.prices)) + "; " if config.ops.prices else ""
    print(f"({note}DeepSeek's prices as of {PRICES_CHECKED}, {PRICES_SOURCE}; costs are computed when each request "
          f"ends)")
    return 0
