"""Codex CLI integration: the model catalog, `deepseek-proxy codex setup`, `deepseek-proxy doctor`, and the
catalog front door (`GET /v1/codex/models.json`).

Facts about Codex 0.169.0 this package relies on (measured with the real binary; see tests/e2e):

* Profiles are files: `codex -p NAME` reads `$CODEX_HOME/NAME.config.toml` layered over `config.toml`. A legacy
  `[profiles.NAME]` table in config.toml makes `-p NAME` fail, and a top-level `profile = "..."` makes every run
  fail. A profile must name its `model_provider`, or Codex uses the OpenAI provider.
* `model_catalog_json` (top level or in a profile file) and `model_catalog_url` (only inside
  `[model_providers.ID]`; elsewhere it is silently ignored) *replace* the bundled catalog. Codex fetches the URL
  only for a provider with a credential (`env_key` or `experimental_bearer_token`); without one it skips it.
* `wire_api = "chat"` in any provider stops Codex at start-up. A provider without `env_key` gets no
  Authorization header at all (not even OPENAI_API_KEY or auth.json).
* Codex sends `model_reasoning_effort` as given; the catalog's levels feed the picker and the default. 0.169
  knows the efforts none/minimal/low/medium/high/xhigh/max/ultra.
"""
