"""One structured line per request, and an opt-in capture of bodies for debugging.

    request_log(request_id=faults.request_id(environ), method="POST", path="/v1/responses", door="responses",
                status=200, key="alice", model="deepseek-v4-pro", upstream="deepseek", stream=True,
                duration_ms=812.4, ttft_ms=95.1, usage=final_usage, outcome="completed")

writes one JSON object on one line to the `deepseek_proxy.access` logger (the proxy's log handler puts it on
stderr, which journald or docker collect; a JSON log pipeline parses it as it is). Only the fields above and a few
more (`error_kind`, `upstream_key` (masked), `conversation` (the key usage rows and prefix-break lines carry),
`client_ip`, `user_agent`) are accepted: never a body, a header
or a key; a value that looks like a secret (an `sk-…`/`dsp-…` key, a bearer token) is replaced by `[redacted]`
anyway, since a message can quote what a client sent.

Body capture (`[logs] capture_bodies = true`, off by default): the request and response bodies of each request
go to `<capture_dir>/<request id>.<kind>.json` (0600, in a 0700 directory), each cut at `capture_max_kb`, with
the values of secret-looking fields (authorization, api_key, password, secret, …) and secret-looking strings
anywhere replaced by `[redacted]`. At most MAX_CAPTURES files are kept (the oldest go first). For debugging a
client's exchange: prompts and answers are in there, so the directory is as private as a conversation.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from .usage import tokens_of

access_log = logging.getLogger("deepseek_proxy.access")
log = logging.getLogger("deepseek_proxy.capture")

FIELDS = ("request_id", "method", "path", "door", "status", "key", "model", "upstream", "upstream_key", "stream",
          "duration_ms", "ttft_ms", "outcome", "error_kind", "conversation", "client_ip", "user_agent")
SECRET_VALUE = re.compile(r"(?:\b(?:sk|dsp)-[A-Za-z0-9_\-]{8,}|\bBearer\s+[^\s\"']+)", re.IGNORECASE)
SECRET_FIELD = re.compile(r"authorization|api[-_]?key|password|secret|cookie|^token$|access_token|refresh_token",
                          re.IGNORECASE)
REDACTED = "[redacted]"
MAX_CAPTURES = 500


def redact_text(text: str) -> str:
    return SECRET_VALUE.sub(REDACTED, text)


def request_fields(*, usage: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """The line's object: the known fields given (others refused: a caller cannot log a body by mistake), the
    token counts when there is a usage."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise TypeError(f"request_log takes no field {min(unknown)!r} (only {', '.join(FIELDS)})")
    line: dict[str, Any] = {"ts": round(time.time(), 3)}
    for name in FIELDS:
        value = fields.get(name)
        if value is None:
            continue
        if isinstance(value, float):
            value = round(value, 1)
        elif isinstance(value, str):
            value = redact_text(value)[:500]
        line[name] = value
    if usage:
        tokens = tokens_of(usage)
        line.update(input_tokens=tokens.input, cached_tokens=tokens.cached, output_tokens=tokens.output,
                    reasoning_tokens=tokens.reasoning)
    return line


def request_log(*, usage: Mapping[str, Any] | None = None, **fields: Any) -> None:
    """Log one request (see the module docstring for the fields)."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info("%s", orjson.dumps(request_fields(usage=usage, **fields)).decode())


# ---- body capture --------------------------------------------------------------------------------------------

def redact_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and SECRET_FIELD.search(k) and v not in (None, "") else
                redact_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


class BodyCapture:
    """Writes redacted, size-capped bodies; `enabled` False makes `capture` a no-op."""

    def __init__(self, directory: Path, *, max_bytes: int, enabled: bool = True, max_files: int = MAX_CAPTURES):
        self.directory, self.max_bytes, self.enabled, self.max_files = Path(directory), max_bytes, enabled, max_files
        self._written = 0

    def capture(self, request_id: str, kind: str, body: bytes | str | Mapping[str, Any] | None) -> Path | None:
        """Keep one body (`kind`: "request", "response", "upstream_request", …). Never raises: a failed capture is
        a log line."""
        if not self.enabled or body is None:
            return None
        try:
            data = self._redacted(body)
            if len(data) > self.max_bytes:
                data = data[:self.max_bytes] + f"\n… [cut at {self.max_bytes} bytes of {len(data)}]".encode()
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            safe_id = re.sub(r"[^A-Za-z0-9_\-]", "_", request_id)[:80]
            path = self.directory / f"{safe_id}.{re.sub(r'[^a-z_]', '_', kind)}.json"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            self._written += 1
            if self._written % 50 == 1:
                self._prune()
            return path
        except (OSError, ValueError, TypeError) as exc:
            log.warning("capture of %s %s failed: %s", request_id, kind, exc)
            return None

    def _redacted(self, body: bytes | str | Mapping[str, Any]) -> bytes:
        if isinstance(body, Mapping):
            return orjson.dumps(redact_json(dict(body)), option=orjson.OPT_INDENT_2)
        raw = body.encode("utf-8", "replace") if isinstance(body, str) else body
        try:
            return orjson.dumps(redact_json(orjson.loads(raw)), option=orjson.OPT_INDENT_2)
        except orjson.JSONDecodeError:  # an event stream, or a cut body: redact it as text
            return redact_text(raw.decode("utf-8", "replace")).encode("utf-8")

    def _prune(self) -> None:
        files = sorted(self.directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in files[:max(0, len(files) - self.max_files)]:
            old.unlink(missing_ok=True)
