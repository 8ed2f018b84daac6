"""What a request cost: upstream model → USD per 1M tokens, cache-hit input, cache-miss input and output.

The default list is DeepSeek's, as its pricing page (https://api-docs.deepseek.com/quick_start/pricing) showed it
when checked on 2026-11-15 (PRICES_CHECKED). Since 2026-08-16 16:00 UTC DeepSeek bills two tiers: peak hours
(01:00-04:00 and 06:00-10:00 UTC) at twice the off-peak price. The page states those hours without exceptions;
some third-party summaries say weekdays only, so the default prices every day's peak hours at the peak rate (a
budget then stops early rather than late). `deepseek-flash` is the current name; `deepseek-v4-flash` (and the
legacy `deepseek-chat` / `deepseek-reasoner`) are still accepted by DeepSeek and billed as Flash.

Prices change: set your own in the config, and `deepseek-proxy usage` prints the date of the defaults it used.

    [pricing]
    peak_hours_utc = [[1, 4], [6, 10]]        # [] for a provider without peak hours
    [pricing.models."deepseek-v4-pro"]        # the upstream's model name
    cache_hit = 0.022                          # USD per 1M input tokens served from the cache (off-peak)
    cache_miss = 0.66
    output = 1.98                              # reasoning tokens are output tokens
    peak_cache_hit = 0.044                     # optional: the peak-hour prices (default: the same as off-peak)
    peak_cache_miss = 1.32
    peak_output = 3.96

A row's cost is computed when the request ends, at the prices of that moment: a later price change does not
rewrite what was spent. So is what the prefix cache saved on it (`saving`: the cache hits at the miss price instead
of the hit price), which `deepseek-proxy usage` adds up. A model with no price costs 0.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass

PRICES_CHECKED = "2026-11-15"
PRICES_SOURCE = "https://api-docs.deepseek.com/quick_start/pricing"
DEFAULT_PEAK_HOURS_UTC: tuple[tuple[int, int], ...] = ((1, 4), (6, 10))

_FLASH = {"cache_hit": 0.003, "cache_miss": 0.15, "output": 0.60,
          "peak_cache_hit": 0.006, "peak_cache_miss": 0.30, "peak_output": 1.20}
_PRO = {"cache_hit": 0.022, "cache_miss": 0.66, "output": 1.98,
        "peak_cache_hit": 0.044, "peak_cache_miss": 1.32, "peak_output": 3.96}
PRICES_DEFAULT: dict[str, dict[str, float]] = {
    "deepseek-flash": _FLASH,
    "deepseek-v4-flash": _FLASH,
    "deepseek-chat": _FLASH,
    "deepseek-reasoner": _FLASH,
    "deepseek-v4-pro": _PRO,
}
PER = 1_000_000


@dataclass(frozen=True)
class ModelPrice:
    cache_hit: float
    cache_miss: float
    output: float
    peak_cache_hit: float
    peak_cache_miss: float
    peak_output: float

    @classmethod
    def of(cls, entry: Mapping[str, float]) -> ModelPrice:
        return cls(entry["cache_hit"], entry["cache_miss"], entry["output"],
                   entry.get("peak_cache_hit", entry["cache_hit"]), entry.get("peak_cache_miss", entry["cache_miss"]),
                   entry.get("peak_output", entry["output"]))


class Prices:
    def __init__(self, models: Mapping[str, Mapping[str, float]] | None = None,
                 peak_hours_utc: tuple[tuple[int, int], ...] | None = None):
        merged = {**PRICES_DEFAULT, **(models or {})}
        self.models = {name: ModelPrice.of(entry) for name, entry in merged.items()}
        self.peak_hours = DEFAULT_PEAK_HOURS_UTC if peak_hours_utc is None else peak_hours_utc
        self.custom = set(models or {})

    def is_peak(self, at: float) -> bool:
        hour = datetime.datetime.fromtimestamp(at, datetime.timezone.utc).hour
        return any(start <= hour < end for start, end in self.peak_hours)

    def knows(self, model: str) -> bool:
        return model in self.models

    def priced_name(self, model: str, upstream_model: str | None) -> str:
        """The name a request is priced under: the upstream's model when it has a price (a model served under a
        name of its own), else the served name."""
        return upstream_model if upstream_model and self.knows(upstream_model) else model

    def rates(self, model: str, at: float) -> tuple[float, float, float] | None:
        """(cache hit, cache miss, output) USD per 1M tokens for `model` at the instant `at` (peak hours or not);
        None for a model with no price."""
        price = self.models.get(model)
        if price is None:
            return None
        if self.is_peak(at):
            return price.peak_cache_hit, price.peak_cache_miss, price.peak_output
        return price.cache_hit, price.cache_miss, price.output

    def cost(self, model: str, *, input_tokens: int, cached_tokens: int, output_tokens: int, at: float) -> float:
        """USD for one request. `input_tokens` counts all of the prompt (cache hits included, as DeepSeek's
        prompt_tokens); `output_tokens` all of the completion (reasoning included)."""
        rates = self.rates(model, at)
        if rates is None:
            return 0.0
        hit = min(cached_tokens, input_tokens)
        return (hit * rates[0] + (input_tokens - hit) * rates[1] + output_tokens * rates[2]) / PER

    def saving(self, model: str, *, input_tokens: int, cached_tokens: int, at: float) -> float:
        """What the prefix cache saved on one request: its cost with every input token at the cache-miss price,
        less its cost (the cache hits priced at the miss price instead of the hit price)."""
        rates = self.rates(model, at)
        if rates is None:
            return 0.0
        return min(cached_tokens, input_tokens) * (rates[1] - rates[0]) / PER
