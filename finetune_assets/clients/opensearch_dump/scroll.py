"""Read an index with scroll (clusters without point in time), restarting an interrupted scroll and skipping
what was already read."""
from __future__ import annotations

import logging
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from finetune_assets.clients.opensearch_dump.errors import Cancelled, IndexDumpError
from finetune_assets.clients.opensearch_dump.failures import (
    auth_error,
    check_shards,
    describe,
    is_context_missing,
    is_retryable,
)
from finetune_assets.clients.opensearch_dump.sampling import SliceSink
from finetune_assets.clients.opensearch_dump.session import DumpSession
from finetune_assets.clients.retry import http_status

log = logging.getLogger(__name__)


class ScrollRestart(Exception):
    """A scroll request failed in a retryable way; the slice re-opens its scroll and skips what it read.

    ``args``: (documents consumed so far, id of the last one), where the new scroll must resume.
    """


class ScrollReader:
    """Scroll searches of one dump, sorted on ``_doc``, sliced like the PIT search; contexts are always cleared."""

    def __init__(self, session: DumpSession):
        self.session = session

    def _body(self, slice_id: int, slices: int, size: int) -> dict:
        s = self.session
        body: dict = {"size": size, "sort": ["_doc"], "track_total_hits": True}
        body["_source"] = {"includes": s.spec.source_includes} if size else False
        if s.query:
            body["query"] = s.query
        if slices > 1:
            body["slice"] = {"id": slice_id, "max": slices}
        return body

    def _clear(self, scroll_id: str | None) -> None:
        if not scroll_id:
            return
        try:
            self.session.client.clear_scroll(body={"scroll_id": [scroll_id]})
        except Exception as exc:  # noqa: BLE001 - best effort; scroll contexts expire by themselves
            log.debug("clear_scroll failed: %s", describe(exc))

    def _open(self, slice_id: int, slices: int, size: int) -> dict:
        s = self.session
        body = self._body(slice_id, slices, size)
        client: OpenSearch = s.client
        return client.search(index=s.index, body=body, params={"scroll": s.keep_alive})

    def probe(self, slices: int) -> list[int]:
        """Hit totals per slice (one total when slices == 1); raises when scroll is not available."""
        totals = []
        for slice_id in range(slices):
            response = self.session.call("scroll probe", lambda: self._open(slice_id, slices, 1))
            self._clear(response.get("_scroll_id"))
            totals.append(int(response["hits"]["total"]["value"]))
        return totals

    def read_slice(self, slice_id: int, slices: int, sink: SliceSink) -> None:
        """Every page of one slice into ``sink``; an interrupted scroll restarts, with backoff, where it stopped."""
        s = self.session
        consumed, last_id, attempt = 0, None, 0
        while True:
            try:
                self._pass(slice_id, slices, sink, consumed, last_id)
                return
            except ScrollRestart as restart:
                cause = restart.__cause__ or restart
                consumed, last_id = restart.args[0], restart.args[1]
                if attempt >= s.retry.max_retries:
                    raise IndexDumpError(f"scroll on '{s.index}' failed {attempt + 1} times, giving up: "
                                         f"{describe(cause)}") from cause
                with s.lock:
                    s.scroll_restarts += 1
                    s.retries += 1
                delay = s.retry.delay(attempt, s.jitter)
                log.warning("scroll interrupted (%s); restarting slice %d and skipping %d documents read",
                            describe(cause), slice_id, consumed)
                attempt += 1
                if s.stop.wait(delay):
                    raise Cancelled() from cause

    def _pass(self, slice_id: int, slices: int, sink: SliceSink, consumed: int, last_id: Any) -> None:
        s = self.session
        skip = consumed
        scroll_id = None
        try:
            try:
                response = self._open(slice_id, slices, s.page_size)
            except os_errors.TransportError as exc:
                raise _scroll_failure(exc, s, consumed, last_id, "scroll search") from exc
            while True:
                if s.stop.is_set():
                    raise Cancelled()
                scroll_id = response.get("_scroll_id") or scroll_id
                try:
                    check_shards(response, "scroll")
                except os_errors.TransportError as exc:
                    raise ScrollRestart(consumed, last_id) from exc
                hits = response["hits"]["hits"]
                if not hits:
                    if skip:
                        raise IndexDumpError(
                            f"scroll on '{s.index}' could not be resumed after an error: the new scroll ended "
                            f"before the {consumed} documents already read (the index changed); run the dump again")
                    return
                if skip:
                    kept = []
                    for hit in hits:
                        if skip:
                            skip -= 1
                            if skip == 0 and hit.get("_id") != last_id:
                                raise IndexDumpError(
                                    f"scroll on '{s.index}' could not be resumed exactly after an error (the "
                                    f"index changed or its order is not stable); run the dump again")
                        else:
                            kept.append(hit)
                    hits = kept
                if hits:
                    sink.add_page(hits)
                    s.report(len(hits))
                    consumed += len(hits)
                    last_id = hits[-1].get("_id")
                response = hits = None  # type: ignore[assignment]  # let the page go before the next one arrives
                try:
                    response = s.client.scroll(body={"scroll_id": scroll_id, "scroll": s.keep_alive})
                except os_errors.TransportError as exc:
                    raise _scroll_failure(exc, s, consumed, last_id, "scroll") from exc
        finally:
            self._clear(scroll_id)


def _scroll_failure(exc, s, consumed: int, last_id, call: str) -> Exception:
    """What a failed scroll call becomes: an auth error, a restart from the last document read (retryable or
    expired context), or a dump error naming the call."""
    if http_status(exc) in (401, 403):
        return auth_error(exc, s.url)
    if is_retryable(exc) or is_context_missing(exc):
        return ScrollRestart(consumed, last_id)
    return IndexDumpError(f"{call} on '{s.index}' failed: {describe(exc)}")
