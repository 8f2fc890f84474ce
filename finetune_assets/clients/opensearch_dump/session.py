"""One dump's shared state (client, settings, counters, warnings) and the request wrapper that retries with
backoff."""
from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from finetune_assets.clients.opensearch_dump.errors import Cancelled, IndexDumpError
from finetune_assets.clients.opensearch_dump.failures import auth_error, describe, is_context_missing, is_retryable
from finetune_assets.clients.opensearch_dump.fields import FieldSpec
from finetune_assets.clients.retry import RetryPolicy as BaseRetryPolicy
from finetune_assets.clients.retry import http_status
from finetune_assets.core.redact import redact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy(BaseRetryPolicy):
    """Backoff for dumps: more patience than single calls, and a bound on PIT reopens."""

    max_retries: int = 6
    max_backoff: float = 30.0
    max_pit_reopens: int = 10


class DumpSession:
    """What every reader of one dump shares: the client and request settings, the counters and warnings the
    result reports, and the event that stops all slices once one fails."""

    def __init__(self, client: OpenSearch, index: str, spec: FieldSpec, query: dict | None, page_size: int,
                 keep_alive: str, progress: Callable[[int, int | None], None] | None, retry: RetryPolicy):
        self.client, self.index, self.spec, self.query = client, index, spec, query
        self.page_size, self.keep_alive, self.progress, self.retry = page_size, keep_alive, progress, retry
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.jitter = random.Random()
        self.retries = self.pit_reopens = self.scroll_restarts = 0
        self.done = 0
        self.expected: int | None = None
        self.warnings: list[str] = []
        self.url = self._url()

    def _url(self) -> str:
        try:
            conn = self.client.transport.get_connection()
            return redact(getattr(conn, "host", "") or "the cluster")
        except Exception:  # noqa: BLE001 - only for messages
            return "the cluster"

    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        """fn() with retries for 429/5xx/connection errors; context-missing and other errors propagate."""
        attempt = 0
        while True:
            if self.stop.is_set():
                raise Cancelled()
            try:
                return fn()
            except os_errors.TransportError as exc:
                if http_status(exc) in (401, 403):
                    raise auth_error(exc, self.url) from exc
                if is_context_missing(exc) or not is_retryable(exc):
                    raise
                if attempt >= self.retry.max_retries:
                    raise IndexDumpError(f"{what} on {self.url} failed {attempt + 1} times, giving up: "
                                         f"{describe(exc)}") from exc
                delay = self.retry.delay(attempt, self.jitter)
                log.warning("%s: %s; retry %d/%d in %.2f s", what, describe(exc), attempt + 1,
                            self.retry.max_retries, delay)
                with self.lock:
                    self.retries += 1
                attempt += 1
                if self.stop.wait(delay):
                    raise Cancelled() from exc

    def report(self, n: int) -> None:
        """Count ``n`` more documents read and tell the progress callback, if any."""
        if self.progress is None:
            return
        with self.lock:
            self.done += n
            done = self.done
            self.progress(done, self.expected)
