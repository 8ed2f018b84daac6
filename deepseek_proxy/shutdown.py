"""The one signal a stream gets when the server stops: the worker raises ServerShuttingDown inside each stream
still open once the grace period is over, and the relay ends that stream with a retryable failure event in the
client's own format (so the client retries against the next server instead of keeping a cut answer)."""

from __future__ import annotations


class ServerShuttingDown(Exception):
    """Raised into a stream's greenlet by the worker when the shutdown grace period has run out."""
