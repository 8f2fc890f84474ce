"""Read an index through one point in time (PIT) with ``search_after`` on ``_shard_doc``, reopening a PIT that
expired and closing it at the end."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from finetune_assets.clients.opensearch_dump.errors import (
    AuthenticationError,
    Cancelled,
    IndexDumpError,
    IndexNotFoundError,
)
from finetune_assets.clients.opensearch_dump.failures import (
    check_shards,
    describe,
    is_context_missing,
    is_index_missing,
)
from finetune_assets.clients.opensearch_dump.sampling import SliceSink
from finetune_assets.clients.opensearch_dump.session import DumpSession

log = logging.getLogger(__name__)


class PitReader:
    """The dump's point in time: opened once, shared by all slices, replaced once for all when it expires.

    ``pit_id`` is None until :meth:`start` opened one (and after a PIT turned out unusable).
    """

    def __init__(self, session: DumpSession):
        self.session = session
        self.reopen_lock = threading.Lock()
        self.pit_id: str | None = None
        self.generation = 0
        self.open_pits: list[str] = []

    def start(self) -> bool:
        """Open the PIT every slice reads; False when the cluster (or this user) cannot create one."""
        self.pit_id = self.open()
        return self.pit_id is not None

    def open(self) -> str | None:
        """A new PIT id, or None when the cluster (or this user) cannot create one."""
        s = self.session

        def create() -> Any:
            return s.client.create_pit(index=s.index, params={"keep_alive": s.keep_alive})
        try:
            response = s.call("create point in time", create)
        except AuthenticationError as exc:
            if "HTTP 403" in str(exc):
                s.warnings.append("not allowed to create a point in time (HTTP 403); reading with scroll")
                return None
            raise
        except os_errors.TransportError as exc:
            if is_index_missing(exc):
                raise IndexNotFoundError(f"index '{s.index}' does not exist on {s.url}") from exc
            s.warnings.append(f"point in time unavailable ({describe(exc)}); reading with scroll")
            return None
        pit_id = response.get("pit_id") if isinstance(response, dict) else None
        if not pit_id:
            s.warnings.append("create point in time returned no pit_id; reading with scroll")
            return None
        with s.lock:
            self.open_pits.append(pit_id)
        return pit_id

    def current(self) -> tuple[str, int]:
        with self.session.lock:
            assert self.pit_id is not None
            return self.pit_id, self.generation

    def reopen(self, generation: int, cause: BaseException) -> tuple[str, int]:
        """Replace an expired PIT, once for all slices; returns the id and generation to use.

        Slices that find the PIT gone while another slice is replacing it wait for the new one.
        """
        s = self.session
        with self.reopen_lock:
            with s.lock:
                if generation != self.generation:
                    assert self.pit_id is not None
                    return self.pit_id, self.generation
                if s.pit_reopens >= s.retry.max_pit_reopens:
                    raise IndexDumpError(
                        f"the point in time on '{s.index}' expired {s.pit_reopens + 1} times "
                        f"({describe(cause)}); use a longer pit_keep_alive than {s.keep_alive!r}")
                old = self.pit_id
                s.pit_reopens += 1
            log.warning("point in time expired or missing (%s); reopening and resuming from the last sort "
                        "values", describe(cause))
            if old:
                self._delete([old])
            new = self.open()
            if new is None:
                raise IndexDumpError(f"the point in time on '{s.index}' expired and a new one could not "
                                     f"be opened")
            with s.lock:
                self.pit_id = new
                self.generation += 1
                return new, self.generation

    def update(self, pit_id: str, generation: int) -> None:
        """Take the PIT id a search answered with (the cluster may hand out a new one for the same PIT)."""
        with self.session.lock:
            if generation == self.generation and pit_id != self.pit_id:
                if self.pit_id in self.open_pits:
                    self.open_pits.remove(self.pit_id)
                self.open_pits.append(pit_id)
                self.pit_id = pit_id

    def _delete(self, ids: list[str]) -> bool:
        s = self.session
        for attempt in range(3):
            try:
                s.client.delete_pit(body={"pit_id": ids})
                break
            except os_errors.NotFoundError:
                break                       # already gone (expired)
            except Exception as exc:  # noqa: BLE001 - closing is best effort, but said
                if attempt == 2:
                    log.warning("could not close point in time: %s", describe(exc))
                    return False
                time.sleep(0.2 * (attempt + 1))
        with s.lock:
            for pit_id in ids:
                if pit_id in self.open_pits:
                    self.open_pits.remove(pit_id)
        return True

    def close(self) -> None:
        """Close every PIT still open; one that cannot be closed becomes a warning (it expires by itself)."""
        with self.session.lock:
            ids = list(self.open_pits)
        if ids and not self._delete(ids):
            self.session.warnings.append("the point in time could not be closed; it expires after "
                                         f"{self.session.keep_alive}")

    def search(self, body: dict, what: str) -> dict:
        """One PIT search: retried; shard failures are errors (never partial pages)."""
        s = self.session
        client: OpenSearch = s.client

        def search() -> dict:
            response = client.search(body=body, params={"allow_partial_search_results": "false"})
            check_shards(response, what)
            return response
        return s.call(what, search)

    def probe(self) -> None:
        """Check _shard_doc sorting works; record the PIT's total hits."""
        s = self.session
        pit_id, _ = self.current()
        body: dict = {"size": 1, "pit": {"id": pit_id, "keep_alive": s.keep_alive}, "_source": False,
                      "sort": [{"_shard_doc": "asc"}], "track_total_hits": True}
        if s.query:
            body["query"] = s.query
        response = self.search(body, "point-in-time probe")
        s.expected = int(response["hits"]["total"]["value"])

    def slice_totals(self, slices: int) -> list[int]:
        """Hit totals of each slice of the PIT search, to check that the cluster really slices."""
        s = self.session
        pit_id, _ = self.current()
        totals = []
        for slice_id in range(slices):
            body: dict = {"size": 0, "pit": {"id": pit_id, "keep_alive": s.keep_alive},
                          "slice": {"id": slice_id, "max": slices}, "track_total_hits": True}
            if s.query:
                body["query"] = s.query
            totals.append(int(self.search(body, f"slice {slice_id} probe")["hits"]["total"]["value"]))
        return totals

    def read_slice(self, slice_id: int, slices: int, sink: SliceSink) -> None:
        """Every page of one slice into ``sink``, resuming from the last sort values after a PIT reopen."""
        s = self.session
        pit_id, generation = self.current()
        after: list | None = None
        what = f"search page (slice {slice_id}/{slices})" if slices > 1 else "search page"
        while True:
            if s.stop.is_set():
                raise Cancelled()
            body: dict = {"size": s.page_size, "pit": {"id": pit_id, "keep_alive": s.keep_alive},
                          "sort": [{"_shard_doc": "asc"}], "_source": {"includes": s.spec.source_includes},
                          "track_total_hits": False}
            if s.query:
                body["query"] = s.query
            if slices > 1:
                body["slice"] = {"id": slice_id, "max": slices}
            if after is not None:
                body["search_after"] = after
            try:
                response = self.search(body, what)
            except os_errors.TransportError as exc:
                if is_context_missing(exc):
                    pit_id, generation = self.reopen(generation, exc)
                    continue
                raise IndexDumpError(f"{what} on '{s.index}' failed: {describe(exc)}") from exc
            if response.get("pit_id") and response["pit_id"] != pit_id:
                self.update(response["pit_id"], generation)
                pit_id = response["pit_id"]
            hits = response["hits"]["hits"]
            if not hits:
                return
            sink.add_page(hits)
            s.report(len(hits))
            after = hits[-1]["sort"]
            if len(hits) < s.page_size:
                return
            response = hits = None      # type: ignore[assignment]  # let the page go before the next one arrives
