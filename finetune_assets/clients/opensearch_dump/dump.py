"""Run a dump: check the index, choose point in time or scroll, check that the cluster slices, read every slice
and check the counts."""
from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from finetune_assets.clients.opensearch_dump.errors import (
    IndexDumpError,
    IndexNotFoundError,
    TextFieldError,
    UnsupportedClusterError,
)
from finetune_assets.clients.opensearch_dump.failures import describe, is_index_missing
from finetune_assets.clients.opensearch_dump.fields import FieldSpec
from finetune_assets.clients.opensearch_dump.pit import PitReader
from finetune_assets.clients.opensearch_dump.preflight import fields_seen_text, preflight
from finetune_assets.clients.opensearch_dump.result import DumpResult
from finetune_assets.clients.opensearch_dump.sampling import SliceSink, merge_samples, slice_sink
from finetune_assets.clients.opensearch_dump.scroll import ScrollReader
from finetune_assets.clients.opensearch_dump.session import DumpSession, RetryPolicy
from finetune_assets.clients.opensearch_dump.slicing import run_slices, slices_agree
from finetune_assets.clients.retry import http_status

log = logging.getLogger(__name__)


def _read_all(session: DumpSession, max_documents: int | None, seed: int,
              slices: int) -> tuple[list[SliceSink], str, int]:
    """Every slice's sink, the method used ("pit" or "scroll") and the slice count actually used."""
    fields = preflight(session)
    pit, scroll = PitReader(session), ScrollReader(session)
    method = "pit"
    pit.start()
    try:
        if pit.pit_id is not None:
            try:
                pit.probe()
            except os_errors.TransportError as exc:
                if http_status(exc) == 400:   # e.g. _shard_doc not supported by this version
                    session.warnings.append(f"point-in-time search unusable ({describe(exc)}); "
                                            f"reading with scroll")
                    pit.close()
                    pit.pit_id = None
                else:
                    raise IndexDumpError(f"point-in-time search on '{session.index}' failed: "
                                         f"{describe(exc)}") from exc
        if pit.pit_id is None:
            method = "scroll"
            try:
                totals = scroll.probe(1)
            except os_errors.TransportError as exc:
                if is_index_missing(exc):
                    raise IndexNotFoundError(f"index '{session.index}' does not exist on {session.url}") from exc
                raise UnsupportedClusterError(
                    f"{session.url} supports neither point-in-time search nor scroll for '{session.index}' "
                    f"({'; '.join(session.warnings[-1:])}; scroll: {describe(exc)})") from exc
            session.expected = totals[0]
        if slices > 1:
            try:
                totals = pit.slice_totals(slices) if method == "pit" else scroll.probe(slices)
                supported = slices_agree(totals, session.expected)
                detail = f"slice hit totals {totals} vs {session.expected} in all"
            except os_errors.TransportError as exc:
                supported, detail = False, describe(exc)
            if not supported:
                session.warnings.append(f"the cluster does not slice {method} searches correctly ({detail}); "
                                        f"read as one stream instead of {slices} slices")
                slices = 1
        reader = pit.read_slice if method == "pit" else scroll.read_slice
        sinks = [slice_sink(session.spec, max_documents, seed, i, slices) for i in range(slices)]
        run_slices(session, reader, sinks)
    finally:
        pit.close()
    eligible = sum(s.eligible for s in sinks)
    seen = sum(s.seen for s in sinks)
    if seen and not eligible:
        text_fields = session.spec.text_fields
        reasons = Counter(entry["reason"] for s in sinks for entry in s.skipped)
        fields_text = fields_seen_text(fields) if fields is not None else "(mapping not readable)"
        names = ", ".join(f"'{f}'" for f in text_fields)
        if all(r.startswith("missing field") for r in reasons):
            first = f"no document has field '{text_fields[0]}'" if len(text_fields) == 1 \
                else f"no document has any of the fields {names}"
        else:
            first = f"no document has text in {names}"
        summary = "; ".join(f"{n} x {r}" for r, n in reasons.most_common(3))
        raise TextFieldError(f"{first} in index '{session.index}' ({seen} documents read: {summary}); "
                             f"fields seen: {fields_text}")
    if session.expected is not None and seen != session.expected:
        message = f"read {seen} documents but the {method} reported {session.expected}"
        if session.pit_reopens or session.scroll_restarts:
            session.warnings.append(message + " (the index changed while the dump was resumed)")
        else:
            raise IndexDumpError(message + f" for '{session.index}': the dump is incomplete")
    return sinks, method, slices


def dump_index(client: OpenSearch, index: str, *, text_fields: Sequence[str], title_field: str | None = None,
               query: dict | None = None, max_documents: int | None = None, seed: int = 0, slices: int = 1,
               page_size: int = 1000, pit_keep_alive: str = "5m",
               progress: Callable[[int, int | None], None] | None = None,
               retry: RetryPolicy | None = None) -> DumpResult:
    """Read every document of ``index`` (matching ``query``) as ``{"id", "text", "title"}``.

    ``text_fields``: one or several fields (dotted paths into objects/nested documents allowed), their
    values joined with "\\n". Documents without text are listed in ``DumpResult.skipped`` with the reason.
    ``max_documents``: keep a uniform reservoir sample of that many (seeded, reproducible, flat memory).
    ``slices``: parallel sliced reads (threads). ``progress(done, total)`` is called after each page.
    Raises :class:`.errors.IndexDumpError` subclasses with a message naming the problem.
    """
    if isinstance(text_fields, str):
        text_fields = [text_fields]
    if not text_fields or not all(isinstance(f, str) and f.strip() for f in text_fields):
        raise ValueError("text_fields must name at least one field")
    if max_documents is not None and max_documents < 1:
        raise ValueError(f"max_documents must be at least 1, got {max_documents}")
    if slices < 1:
        raise ValueError(f"slices must be at least 1, got {slices}")
    if not 1 <= page_size <= 10_000:
        raise ValueError(f"page_size must be between 1 and 10000, got {page_size}")
    started = time.perf_counter()
    spec = FieldSpec(tuple(f.strip() for f in text_fields), title_field.strip() if title_field else None)
    session = DumpSession(client, index, spec, query, page_size, pit_keep_alive, progress, retry or RetryPolicy())
    sinks, method, used_slices = _read_all(session, max_documents, seed, slices)
    eligible = sum(s.eligible for s in sinks)
    if max_documents is not None and eligible > max_documents:
        documents = sinks[0].documents if len(sinks) == 1 else merge_samples(sinks, max_documents,
                                                                              random.Random(seed))
    else:
        documents = [doc for s in sinks for doc in s.documents]
    result = DumpResult(
        index=index, documents=documents, skipped=[entry for s in sinks for entry in s.skipped],
        seen=sum(s.seen for s in sinks), eligible=eligible, kept=len(documents), pages=sum(s.pages for s in sinks),
        seconds=time.perf_counter() - started, method=method, slices=used_slices,
        sampled=max_documents is not None and eligible > max_documents, seed=seed, expected=session.expected,
        retries=session.retries, pit_reopens=session.pit_reopens, scroll_restarts=session.scroll_restarts,
        warnings=session.warnings)
    for warning in result.warnings:
        log.warning("%s: %s", index, warning)
    log.info("dumped '%s': %d read, %d kept, %d skipped, %d pages in %.1f s (%s, %d slice(s))", index,
             result.seen, result.kept, result.skipped_count, result.pages, result.seconds, method, used_slices)
    return result
