"""Claude Code integration: `deepseek-proxy claude setup` and the Claude Code checks of `deepseek-proxy doctor`.

Facts about Claude Code 2.1.197 this package relies on (measured with the real binary; see tests/e2e and
CLIENTS.md):

* User settings live in `$CLAUDE_CONFIG_DIR/settings.json` (default `~/.claude/settings.json`), strict JSON. Its
  `env` object is applied over the process environment at start-up, so a base URL written there wins over the
  shell's.
* `ANTHROPIC_BASE_URL` is the root: Claude Code appends `/v1/messages` (with `?beta=true`). `ANTHROPIC_AUTH_TOKEN`
  is sent as `Authorization: Bearer`, `ANTHROPIC_API_KEY` as `x-api-key` (and makes the interactive UI ask whether
  to trust that key), so setup writes the token variable. With both set, both headers go out -- also when
  ANTHROPIC_API_KEY comes from the shell; an empty `ANTHROPIC_API_KEY` in `env` blanks the shell's, so setup
  writes that too.
* `ANTHROPIC_MODEL` picks the main model; `ANTHROPIC_DEFAULT_{OPUS,SONNET,HAIKU}_MODEL` replace what the aliases
  and the built-in sub-agents (Explore uses haiku) resolve to; `CLAUDE_CODE_SUBAGENT_MODEL` sets every sub-agent's.
* `CLAUDE_CODE_ATTRIBUTION_HEADER=0` drops the `x-anthropic-billing-header` system block whose per-session suffix
  would otherwise keep two sessions from sharing DeepSeek's prompt-prefix cache.
"""
