"""Retry settings and error inspection shared by the OpenSearch clients."""
from __future__ import annotations

import random
from dataclasses import dataclass

from opensearchpy import exceptions as os_errors


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: ``initial * 2**attempt`` capped at ``max_backoff``, with 50-100 % jitter."""

    max_retries: int = 5
    initial_backoff: float = 0.5
    max_backoff: float = 15.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return min(self.max_backoff, self.initial_backoff * (2 ** attempt)) * (0.5 + 0.5 * rng.random())


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of an opensearch-py error, or None (connection errors have none)."""
    code = getattr(exc, "status_code", None) if isinstance(exc, os_errors.TransportError) else None
    return code if isinstance(code, int) else None
