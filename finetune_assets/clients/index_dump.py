"""Dump an OpenSearch index into training documents ``{"id", "text", "title"}``.

How it reads
    A point in time (PIT) plus ``search_after`` sorted on ``_shard_doc``: a frozen view of the index, read
    page by page, each request idempotent, so a failed request is simply sent again with the same sort
    values. With ``slices > 1`` the PIT search is split with ``slice: {id, max}`` and each slice is read by
    its own thread. Whether the server really slices is checked first (per-slice hit totals must add up to
    the whole); a server that ignores ``slice`` gets one unsliced stream instead of duplicated documents.
    Clusters without PIT (OpenSearch < 2.4, Elasticsearch-compatible services, users not allowed to create
    PITs) are read with scroll (sliced the same way); a scroll interrupted by an error restarts and skips
    what was already read, checking the last document id it had, so nothing is lost or read twice.

Fault tolerance
    429 and 5xx answers and broken connections are retried with bounded exponential backoff
    (:class:`RetryPolicy`); a PIT that expired or disappeared ("No search context found") is reopened and
    the dump goes on from the last sort values; the PIT (or scroll) is always closed, also on errors.
    Resuming after a reopened PIT is exact when the index did not change meanwhile (``_shard_doc`` values
    are Lucene doc ids); if it changed, the result carries a warning and the counts say what was read.

Memory
    With ``max_documents`` each slice keeps a reservoir (Algorithm R, ``random.Random(seed)``) of at most
    ``max_documents`` documents and the reservoirs are merged by a seeded multivariate-hypergeometric draw,
    so memory stays flat however large the index is and the sample is a uniform one, reproducible for a
    given seed, slice count and (unchanged) index.

This module imports opensearch-py and (for AWS SigV4 only) boto3; it never imports Dagster.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from opensearchpy import OpenSearch, RequestsHttpConnection
from opensearchpy import exceptions as os_errors

from finetune_assets.clients.retry import RetryPolicy as BaseRetryPolicy
from finetune_assets.clients.retry import http_status
from finetune_assets.core.redact import redact, remember_secret

log = logging.getLogger(__name__)

__all__ = [
    "AuthenticationError", "DumpResult", "EmptyIndexError", "IndexDumpError", "IndexNotFoundError",
    "OpenSearchConnection", "RetryPolicy", "TextFieldError", "UnsupportedClusterError", "dump_index",
    "extract_main", "make_client", "write_dump_jsonl",
]

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
AWS_SERVICES = ("es", "aoss")
PASSWORD_ENV = "OPENSEARCH_PASSWORD"


# ------------------------------------------------------------------------------------------------ errors


class IndexDumpError(RuntimeError):
    """The dump could not be completed; the message says why and what to check."""


class IndexNotFoundError(IndexDumpError):
    """The index (or alias/pattern) does not exist."""


class EmptyIndexError(IndexDumpError):
    """The index has no documents (or none match the query)."""


class TextFieldError(IndexDumpError):
    """The text field(s) are not in any document."""


class AuthenticationError(IndexDumpError):
    """The cluster refused the credentials (HTTP 401/403) or no AWS credentials were found."""


class UnsupportedClusterError(IndexDumpError):
    """The cluster supports neither point-in-time search nor scroll."""


class _Cancelled(Exception):
    """Another slice failed; this one stops quietly."""


class _ScrollRestart(Exception):
    """A scroll request failed in a retryable way; the slice re-opens its scroll and skips what it read."""


# -------------------------------------------------------------------------------------------- connection


def _without_userinfo(url: str) -> str:
    """The URL without user:password@ (the credentials go to the client as basic auth instead)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class OpenSearchConnection:
    """Where the cluster is and how to authenticate; ``repr`` never shows the password, nor one in the URL."""

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    aws_region: str | None = None
    aws_service: str = "es"
    verify_certs: bool = True
    ca_certs: str | None = None
    timeout: float = 60.0
    max_retries: int = 2
    pool_maxsize: int = 16

    @classmethod
    def from_env(cls, url: str, username: str | None = None, **kwargs: Any) -> "OpenSearchConnection":
        """Settings with the password taken from ``OPENSEARCH_PASSWORD`` when a username is given."""
        password = os.environ.get(PASSWORD_ENV) if username else None
        return cls(url=url, username=username, password=password, **kwargs)

    @property
    def auth_kind(self) -> str:
        if self.aws_region:
            return f"aws-sigv4 ({self.aws_service}, {self.aws_region})"
        return "basic" if self.username else "none"

    def __repr__(self) -> str:  # the URL may hold user:password
        return f"OpenSearchConnection({self.describe()})"

    def describe(self) -> str:
        """For logs: URL (credentials redacted), auth kind, TLS verification."""
        tls = "on" if self.verify_certs else "OFF"
        return f"{redact(self.url)} (auth: {self.auth_kind}, certificate verification {tls})"

    def client(self) -> OpenSearch:
        return make_client(self.url, username=self.username, password=self.password, aws_region=self.aws_region,
                           aws_service=self.aws_service, verify_certs=self.verify_certs, ca_certs=self.ca_certs,
                           timeout=self.timeout, max_retries=self.max_retries, pool_maxsize=self.pool_maxsize)


def make_client(url: str, *, username: str | None = None, password: str | None = None,
                aws_region: str | None = None, aws_service: str = "es", verify_certs: bool = True,
                ca_certs: str | None = None, timeout: float = 60.0, max_retries: int = 2,
                pool_maxsize: int = 16, aws_credentials: Any = None) -> OpenSearch:
    """An opensearch-py client for ``url`` (``https://host:9200``).

    Authentication: HTTP basic (``username``/``password``; credentials written into the URL are taken
    from it and removed), or AWS SigV4 when ``aws_region`` is set: ``aws_service="es"`` for Amazon
    OpenSearch Service domains, ``"aoss"`` for OpenSearch Serverless collections, with boto3's default
    credential chain (environment, profile, instance/task role) unless ``aws_credentials`` is given.
    TLS certificates are verified unless ``verify_certs=False``. ``max_retries`` is the transport's own
    immediate retry count; :func:`dump_index` retries with backoff on top. The password is never logged.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"OpenSearch URL must look like https://host:9200, got {redact(url)!r}")
    if parts.username is not None or parts.password is not None:
        remember_secret(unquote(parts.password or ""), username=unquote(parts.username or ""))
        username = username or unquote(parts.username or "")
        password = password if password is not None else unquote(parts.password or "")
        url = _without_userinfo(url)
    kwargs: dict[str, Any] = {
        "hosts": [url], "timeout": timeout, "max_retries": max_retries, "retry_on_timeout": max_retries > 0,
        "verify_certs": verify_certs, "pool_maxsize": pool_maxsize,
    }
    if parts.scheme == "https":
        kwargs["use_ssl"] = True
        if ca_certs:
            kwargs["ca_certs"] = ca_certs
        if not verify_certs:
            kwargs["ssl_assert_hostname"] = False
            kwargs["ssl_show_warn"] = False
            log.warning("TLS certificate verification is OFF for %s", redact(url))
    if aws_region:
        if username:
            raise ValueError("choose either basic auth (username/password) or AWS SigV4 (aws_region), not both")
        if aws_service not in AWS_SERVICES:
            raise ValueError(f"aws_service must be 'es' (OpenSearch Service) or 'aoss' (Serverless), "
                             f"got {aws_service!r}")
        from opensearchpy import RequestsAWSV4SignerAuth

        credentials = aws_credentials
        if credentials is None:
            import boto3

            credentials = boto3.Session(region_name=aws_region).get_credentials()
        if credentials is None:
            raise AuthenticationError("no AWS credentials found for SigV4 signing: set AWS_ACCESS_KEY_ID/"
                                      "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with an IAM role")
        kwargs["http_auth"] = RequestsAWSV4SignerAuth(credentials, aws_region, aws_service)
        kwargs["connection_class"] = RequestsHttpConnection
    elif username:
        if password is None:
            raise ValueError(f"no password for OpenSearch user {username!r} (set {PASSWORD_ENV})")
        remember_secret(password, username=username)
        kwargs["http_auth"] = (username, password)
    return OpenSearch(**kwargs)


# ---------------------------------------------------------------------------------------------- results


@dataclass
class DumpResult:
    """Documents read from the index and what happened on the way.

    ``documents``: ``{"id": _id, "text": ..., "title": ... or None}``. ``skipped``: ``{"id", "reason"}``
    for every document without usable text. ``seen`` hits read; ``eligible`` of them had text;
    ``kept`` = len(documents) (smaller than ``eligible`` only when sampled).
    """

    index: str
    documents: list[dict]
    skipped: list[dict]
    seen: int
    eligible: int
    kept: int
    pages: int
    seconds: float
    method: str                      # "pit" or "scroll"
    slices: int                      # slices actually used
    sampled: bool
    seed: int
    expected: int | None = None      # hits the PIT/scroll reported for the query
    retries: int = 0
    pit_reopens: int = 0
    scroll_restarts: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def skipped_count(self) -> int:
        return len(self.skipped)

    @property
    def docs_per_second(self) -> float:
        return self.seen / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict:
        """Counts for logs and asset metadata (no documents)."""
        reasons = Counter(entry["reason"] for entry in self.skipped)
        return {
            "index": self.index, "seen": self.seen, "eligible": self.eligible, "kept": self.kept,
            "skipped": self.skipped_count, "skipped_reasons": dict(reasons.most_common(10)),
            "pages": self.pages, "seconds": round(self.seconds, 3), "docs_per_second": round(self.docs_per_second, 1),
            "method": self.method, "slices": self.slices, "sampled": self.sampled, "seed": self.seed,
            "expected": self.expected, "retries": self.retries, "pit_reopens": self.pit_reopens,
            "scroll_restarts": self.scroll_restarts, "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class RetryPolicy(BaseRetryPolicy):
    """Backoff for dumps: more patience than single calls, and a bound on PIT reopens."""

    max_retries: int = 6
    max_backoff: float = 30.0
    max_pit_reopens: int = 10


# ------------------------------------------------------------------------------------- error inspection




def _error_text(exc: BaseException) -> str:
    if isinstance(exc, os_errors.TransportError):
        return f"{exc.error} {exc.info}"
    return str(exc)


def _is_context_missing(exc: BaseException) -> bool:
    if not isinstance(exc, os_errors.TransportError) or isinstance(exc, os_errors.ConnectionError):
        return False
    text = _error_text(exc)
    return "search_context_missing_exception" in text or "No search context found" in text


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, os_errors.SSLError):
        return False
    if isinstance(exc, os_errors.ConnectionError):
        return True
    return http_status(exc) in RETRY_STATUSES


def _is_index_missing(exc: BaseException) -> bool:
    return http_status(exc) == 404 and "index_not_found_exception" in _error_text(exc)


def _describe(exc: BaseException) -> str:
    """One line for messages: HTTP status, error type and reason (credentials redacted, no request body)."""
    return redact(_describe_raw(exc))


def _describe_raw(exc: BaseException) -> str:
    if isinstance(exc, os_errors.ConnectionTimeout):
        return f"timed out ({exc.info.__class__.__name__})"
    if isinstance(exc, os_errors.ConnectionError):
        return f"connection error ({exc.info.__class__.__name__}: {str(exc.info)[:200]})"
    if isinstance(exc, os_errors.TransportError):
        info = exc.info if isinstance(exc.info, dict) else {}
        error = info.get("error")
        if isinstance(error, dict):
            root = (error.get("root_cause") or [error])[0]
            return f"HTTP {exc.status_code} {root.get('type', '')}: {str(root.get('reason', ''))[:300]}"
        return f"HTTP {exc.status_code}: {str(error if error else exc.error)[:300]}"
    return f"{exc.__class__.__name__}: {exc}"


def _auth_error(exc: BaseException, url: str) -> AuthenticationError:
    status = http_status(exc)
    what = "authentication failed (HTTP 401)" if status == 401 else "access denied (HTTP 403)"
    return AuthenticationError(
        f"OpenSearch at {url}: {what}: check the username/password (password from {PASSWORD_ENV}) or, with "
        f"AWS SigV4, the IAM credentials, --aws-region/--aws-service and the domain's access policy and "
        f"role mapping ({_describe(exc)})")


# -------------------------------------------------------------------------------------- text extraction


def _resolve(value: Any, parts: list[str]) -> list[Any]:
    """All values at a dotted path; lists (arrays, nested documents) are walked, literal dotted keys tried."""
    if not parts:
        return [value]
    if isinstance(value, list):
        return [found for item in value for found in _resolve(item, parts)]
    if not isinstance(value, dict):
        return []
    found: list[Any] = []
    for end in range(len(parts), 0, -1):
        key = ".".join(parts[:end])
        if key in value:
            found.extend(_resolve(value[key], parts[end:]))
    return found


def _flatten(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if isinstance(value, list):
            out.extend(_flatten(value))
        elif value is not None:
            out.append(value)
    return out


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", bool: "boolean"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class _FieldSpec:
    text_fields: tuple[str, ...]
    title_field: str | None

    @property
    def source_includes(self) -> list[str]:
        return list(self.text_fields) + ([self.title_field] if self.title_field else [])

    def extract(self, hit: dict) -> tuple[dict | None, str | None]:
        """(document, None) or (None, reason the hit was skipped)."""
        source = hit.get("_source")
        if not isinstance(source, dict):
            return None, "no _source (the index does not store documents' source)"
        texts: list[str] = []
        missing: list[str] = []
        problems: list[str] = []
        for name in self.text_fields:
            value = source.get(name)
            if isinstance(value, str) and value.strip():          # fast path: a plain text field
                texts.append(value)
                continue
            values = _values(source, name)
            if not values:
                missing.append(name)
                continue
            strings = [v for v in values if isinstance(v, str)]
            if len(strings) < len(values):
                bad = next(v for v in values if not isinstance(v, str))
                problems.append(f"field '{name}' is not text ({_type_name(bad)})")
            text = "\n".join(v for v in strings if v.strip())
            if text:
                texts.append(text)
            elif len(strings) == len(values):
                problems.append(f"field '{name}' is empty")
        if not texts:
            if missing and len(missing) == len(self.text_fields):
                names = ", ".join(f"'{m}'" for m in missing)
                return None, f"missing field{'s' if len(missing) > 1 else ''} {names}"
            return None, "; ".join(problems + [f"missing field '{m}'" for m in missing])
        title = None
        if self.title_field:
            value = source.get(self.title_field)
            if isinstance(value, str):
                title = value if value.strip() else None
            else:
                titles = [v for v in _values(source, self.title_field) if isinstance(v, str) and v.strip()]
                title = " ".join(titles) or None
        return {"id": hit.get("_id"), "text": texts[0] if len(texts) == 1 else "\n".join(texts),
                "title": title}, None


def _values(source: dict, name: str) -> list[Any]:
    """Non-null values at a field name or dotted path, arrays flattened."""
    if "." not in name:
        value = source.get(name)
        if value is None:
            return []
        return _flatten(value) if isinstance(value, list) else [value]
    return _flatten(_resolve(source, name.split(".")))


# ------------------------------------------------------------------------------------------------ mapping


def _mapped_fields(mapping_node: dict, prefix: str = "") -> dict[str, str]:
    """Leaf paths -> type, from a mapping's properties (multi-fields left out: they are not in _source)."""
    out: dict[str, str] = {}
    for name, node in (mapping_node.get("properties") or {}).items():
        path = f"{prefix}{name}"
        if isinstance(node, dict) and "properties" in node:
            out.update(_mapped_fields(node, path + "."))
            if node.get("type") == "nested":
                out.setdefault(path, "nested")
        elif isinstance(node, dict):
            out[path] = str(node.get("type", "object"))
    return out


def _field_status(mappings: dict, path: str) -> str:
    """'present', 'absent' (no document can hold it) or 'unknown' (dynamic false, disabled object, flat_object)."""
    node: Any = mappings
    dynamic = str(mappings.get("dynamic", "true")).lower()
    for part in path.split("."):
        if not isinstance(node, dict) or node.get("enabled") is False or node.get("type") == "flat_object":
            return "unknown"
        dynamic = str(node.get("dynamic", dynamic)).lower()
        props = node.get("properties") or {}
        if part not in props:
            return "unknown" if dynamic == "false" else "absent"
        node = props[part]
    return "present"


def _fields_seen_text(fields: dict[str, str], limit: int = 40) -> str:
    if not fields:
        return "none (the mapping is empty)"
    names = [f"{name} ({kind})" for name, kind in sorted(fields.items())]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# --------------------------------------------------------------------------------------------- sampling


class _SliceSink:
    """Documents of one slice: all of them, or a reservoir (Algorithm R) of ``capacity``."""

    def __init__(self, spec: _FieldSpec, capacity: int | None, rng: random.Random):
        self.spec, self.capacity, self.rng = spec, capacity, rng
        self.documents: list[dict] = []
        self.skipped: list[dict] = []
        self.seen = self.eligible = self.pages = 0

    def add_page(self, hits: Sequence[dict]) -> None:
        self.pages += 1
        for hit in hits:
            self.seen += 1
            doc, reason = self.spec.extract(hit)
            if doc is None:
                self.skipped.append({"id": hit.get("_id"), "reason": reason})
                continue
            index = self.eligible
            self.eligible += 1
            if self.capacity is None or index < self.capacity:
                self.documents.append(doc)
            else:
                j = self.rng.randint(0, index)
                if j < self.capacity:
                    self.documents[j] = doc


def _merge_samples(sinks: list[_SliceSink], k: int, rng: random.Random) -> list[dict]:
    """A uniform sample of k from the union of per-slice reservoirs (each uniform over its slice).

    The number taken from each slice follows the multivariate hypergeometric law (k draws without
    replacement from all eligible documents); each slice's share is then drawn from its reservoir.
    """
    remaining = [s.eligible for s in sinks]
    total = sum(remaining)
    if total <= k:
        return [doc for s in sinks for doc in s.documents]
    take = [0] * len(sinks)
    for _ in range(k):
        pick = rng.randrange(total)
        for i, count in enumerate(remaining):
            if pick < count:
                take[i] += 1
                remaining[i] -= 1
                total -= 1
                break
            pick -= count
    merged: list[dict] = []
    for sink, n in zip(sinks, take):
        chosen = sorted(rng.sample(range(len(sink.documents)), n))
        merged.extend(sink.documents[i] for i in chosen)
    return merged


# ------------------------------------------------------------------------------------------------ dumper


class _Dumper:
    def __init__(self, client: OpenSearch, index: str, spec: _FieldSpec, query: dict | None,
                 max_documents: int | None, seed: int, slices: int, page_size: int, keep_alive: str,
                 progress: Callable[[int, int | None], None] | None, retry: RetryPolicy):
        self.client, self.index, self.spec, self.query = client, index, spec, query
        self.max_documents, self.seed, self.slices, self.page_size = max_documents, seed, slices, page_size
        self.keep_alive, self.progress, self.retry = keep_alive, progress, retry
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.reopen_lock = threading.Lock()
        self.jitter = random.Random()
        self.retries = self.pit_reopens = self.scroll_restarts = 0
        self.done = 0
        self.expected: int | None = None
        self.warnings: list[str] = []
        self.pit_id: str | None = None
        self.pit_generation = 0
        self.open_pits: list[str] = []
        self.url = self._url()

    def _url(self) -> str:
        try:
            conn = self.client.transport.get_connection()
            return redact(getattr(conn, "host", "") or "the cluster")
        except Exception:  # noqa: BLE001 - only for messages
            return "the cluster"

    # --------------------------------------------------------------------------------- requests
    def call(self, what: str, fn: Callable[[], Any]) -> Any:
        """fn() with retries for 429/5xx/connection errors; context-missing and other errors propagate."""
        attempt = 0
        while True:
            if self.stop.is_set():
                raise _Cancelled()
            try:
                return fn()
            except os_errors.TransportError as exc:
                if http_status(exc) in (401, 403):
                    raise _auth_error(exc, self.url) from exc
                if _is_context_missing(exc) or not _is_retryable(exc):
                    raise
                if attempt >= self.retry.max_retries:
                    raise IndexDumpError(f"{what} on {self.url} failed {attempt + 1} times, giving up: "
                                         f"{_describe(exc)}") from exc
                delay = self.retry.delay(attempt, self.jitter)
                log.warning("%s: %s; retry %d/%d in %.2f s", what, _describe(exc), attempt + 1,
                            self.retry.max_retries, delay)
                with self.lock:
                    self.retries += 1
                attempt += 1
                if self.stop.wait(delay):
                    raise _Cancelled() from exc

    def report(self, n: int) -> None:
        if self.progress is None:
            return
        with self.lock:
            self.done += n
            done = self.done
            self.progress(done, self.expected)

    # ---------------------------------------------------------------------------------- preflight
    def preflight(self) -> dict[str, str] | None:
        """Index exists, has (matching) documents, and the text field is in the mapping."""
        body = {"query": self.query} if self.query else None
        try:
            count = self.call(f"count on '{self.index}'", lambda: self.client.count(index=self.index, body=body))
        except os_errors.TransportError as exc:
            if _is_index_missing(exc):
                raise IndexNotFoundError(f"index '{self.index}' does not exist on {self.url} "
                                         f"({_describe(exc)})") from exc
            raise IndexDumpError(f"cannot count documents of '{self.index}': {_describe(exc)}") from exc
        total = int(count.get("count", 0))
        if total == 0:
            if self.query:
                raise EmptyIndexError(f"no document of index '{self.index}' matches the query {json.dumps(self.query)}")
            raise EmptyIndexError(f"index '{self.index}' is empty (0 documents): nothing to dump")
        self.expected = total
        try:
            mapping = self.call("get mapping", lambda: self.client.indices.get_mapping(index=self.index))
        except (os_errors.TransportError, AuthenticationError) as exc:
            self.warnings.append(f"could not read the mapping ({_describe(exc)}); field names not checked before "
                                 f"the dump")
            return None
        fields: dict[str, str] = {}
        per_index = [m.get("mappings") or {} for m in mapping.values() if isinstance(m, dict)]
        for mappings in per_index:
            fields.update(_mapped_fields(mappings))
        for name in self.spec.text_fields:
            states = {_field_status(m, name) for m in per_index}
            if per_index and states == {"absent"}:
                raise TextFieldError(f"no document has field '{name}' in index '{self.index}'; fields seen: "
                                     f"{_fields_seen_text(fields)}")
        if self.spec.title_field:
            if per_index and {_field_status(m, self.spec.title_field) for m in per_index} == {"absent"}:
                self.warnings.append(f"no document has title field '{self.spec.title_field}'; titles are empty")
        return fields

    # ------------------------------------------------------------------------------------------ PIT
    def open_pit(self) -> str | None:
        """A new PIT id, or None when the cluster (or this user) cannot create one."""
        def create() -> Any:
            return self.client.create_pit(index=self.index, params={"keep_alive": self.keep_alive})
        try:
            response = self.call("create point in time", create)
        except AuthenticationError as exc:
            if "HTTP 403" in str(exc):
                self.warnings.append("not allowed to create a point in time (HTTP 403); reading with scroll")
                return None
            raise
        except os_errors.TransportError as exc:
            if _is_index_missing(exc):
                raise IndexNotFoundError(f"index '{self.index}' does not exist on {self.url}") from exc
            self.warnings.append(f"point in time unavailable ({_describe(exc)}); reading with scroll")
            return None
        pit_id = response.get("pit_id") if isinstance(response, dict) else None
        if not pit_id:
            self.warnings.append("create point in time returned no pit_id; reading with scroll")
            return None
        with self.lock:
            self.open_pits.append(pit_id)
        return pit_id

    def current_pit(self) -> tuple[str, int]:
        with self.lock:
            assert self.pit_id is not None
            return self.pit_id, self.pit_generation

    def reopen_pit(self, generation: int, cause: BaseException) -> tuple[str, int]:
        """Replace an expired PIT, once for all slices; returns the id and generation to use.

        Slices that find the PIT gone while another slice is replacing it wait for the new one.
        """
        with self.reopen_lock:
            with self.lock:
                if generation != self.pit_generation:
                    assert self.pit_id is not None
                    return self.pit_id, self.pit_generation
                if self.pit_reopens >= self.retry.max_pit_reopens:
                    raise IndexDumpError(
                        f"the point in time on '{self.index}' expired {self.pit_reopens + 1} times "
                        f"({_describe(cause)}); use a longer pit_keep_alive than {self.keep_alive!r}")
                old = self.pit_id
                self.pit_reopens += 1
            log.warning("point in time expired or missing (%s); reopening and resuming from the last sort "
                        "values", _describe(cause))
            if old:
                self._delete_pits([old])
            new = self.open_pit()
            if new is None:
                raise IndexDumpError(f"the point in time on '{self.index}' expired and a new one could not "
                                     f"be opened")
            with self.lock:
                self.pit_id = new
                self.pit_generation += 1
                return new, self.pit_generation

    def update_pit(self, pit_id: str, generation: int) -> None:
        with self.lock:
            if generation == self.pit_generation and pit_id != self.pit_id:
                if self.pit_id in self.open_pits:
                    self.open_pits.remove(self.pit_id)
                self.open_pits.append(pit_id)
                self.pit_id = pit_id

    def _delete_pits(self, ids: list[str]) -> bool:
        for attempt in range(3):
            try:
                self.client.delete_pit(body={"pit_id": ids})
                break
            except os_errors.NotFoundError:
                break                       # already gone (expired)
            except Exception as exc:  # noqa: BLE001 - closing is best effort, but said
                if attempt == 2:
                    log.warning("could not close point in time: %s", _describe(exc))
                    return False
                time.sleep(0.2 * (attempt + 1))
        with self.lock:
            for pit_id in ids:
                if pit_id in self.open_pits:
                    self.open_pits.remove(pit_id)
        return True

    def close_pits(self) -> None:
        with self.lock:
            ids = list(self.open_pits)
        if ids and not self._delete_pits(ids):
            self.warnings.append("the point in time could not be closed; it expires after "
                                 f"{self.keep_alive}")

    def _check_shards(self, response: dict, what: str) -> None:
        shards = response.get("_shards") or {}
        if not shards.get("failed"):
            return
        failures = shards.get("failures") or []
        text = json.dumps(failures)[:1000]
        if "search_context_missing_exception" in text or "No search context found" in text:
            raise os_errors.NotFoundError(404, "search_context_missing_exception", {"error": failures})
        raise os_errors.TransportError(503, "shard_failures", {"error": f"{what}: {shards.get('failed')} shard(s) "
                                                                        f"failed: {text}"})

    def pit_search(self, body: dict, what: str) -> dict:
        """One PIT search: retried; shard failures are errors (never partial pages)."""
        def search() -> dict:
            response = self.client.search(body=body, params={"allow_partial_search_results": "false"})
            self._check_shards(response, what)
            return response
        return self.call(what, search)

    def pit_probe(self) -> None:
        """Check _shard_doc sorting works; record the PIT's total hits."""
        pit_id, _ = self.current_pit()
        body: dict = {"size": 1, "pit": {"id": pit_id, "keep_alive": self.keep_alive}, "_source": False,
                      "sort": [{"_shard_doc": "asc"}], "track_total_hits": True}
        if self.query:
            body["query"] = self.query
        response = self.pit_search(body, "point-in-time probe")
        self.expected = int(response["hits"]["total"]["value"])

    def pit_slice_totals(self, slices: int) -> list[int]:
        pit_id, _ = self.current_pit()
        totals = []
        for slice_id in range(slices):
            body: dict = {"size": 0, "pit": {"id": pit_id, "keep_alive": self.keep_alive},
                          "slice": {"id": slice_id, "max": slices}, "track_total_hits": True}
            if self.query:
                body["query"] = self.query
            totals.append(int(self.pit_search(body, f"slice {slice_id} probe")["hits"]["total"]["value"]))
        return totals

    def read_pit_slice(self, slice_id: int, slices: int, sink: _SliceSink) -> None:
        pit_id, generation = self.current_pit()
        after: list | None = None
        what = f"search page (slice {slice_id}/{slices})" if slices > 1 else "search page"
        while True:
            if self.stop.is_set():
                raise _Cancelled()
            body: dict = {"size": self.page_size, "pit": {"id": pit_id, "keep_alive": self.keep_alive},
                          "sort": [{"_shard_doc": "asc"}], "_source": {"includes": self.spec.source_includes},
                          "track_total_hits": False}
            if self.query:
                body["query"] = self.query
            if slices > 1:
                body["slice"] = {"id": slice_id, "max": slices}
            if after is not None:
                body["search_after"] = after
            try:
                response = self.pit_search(body, what)
            except os_errors.TransportError as exc:
                if _is_context_missing(exc):
                    pit_id, generation = self.reopen_pit(generation, exc)
                    continue
                raise IndexDumpError(f"{what} on '{self.index}' failed: {_describe(exc)}") from exc
            if response.get("pit_id") and response["pit_id"] != pit_id:
                self.update_pit(response["pit_id"], generation)
                pit_id = response["pit_id"]
            hits = response["hits"]["hits"]
            if not hits:
                return
            sink.add_page(hits)
            self.report(len(hits))
            after = hits[-1]["sort"]
            if len(hits) < self.page_size:
                return
            response = hits = None      # type: ignore[assignment]  # let the page go before the next one arrives

    # --------------------------------------------------------------------------------------- scroll
    def _scroll_body(self, slice_id: int, slices: int, size: int) -> dict:
        body: dict = {"size": size, "sort": ["_doc"], "track_total_hits": True}
        body["_source"] = {"includes": self.spec.source_includes} if size else False
        if self.query:
            body["query"] = self.query
        if slices > 1:
            body["slice"] = {"id": slice_id, "max": slices}
        return body

    def _clear_scroll(self, scroll_id: str | None) -> None:
        if not scroll_id:
            return
        try:
            self.client.clear_scroll(body={"scroll_id": [scroll_id]})
        except Exception as exc:  # noqa: BLE001 - best effort; scroll contexts expire by themselves
            log.debug("clear_scroll failed: %s", _describe(exc))

    def scroll_open(self, slice_id: int, slices: int, size: int) -> dict:
        body = self._scroll_body(slice_id, slices, size)
        return self.client.search(index=self.index, body=body, params={"scroll": self.keep_alive})

    def scroll_probe(self, slices: int) -> list[int]:
        """Hit totals per slice (one total when slices == 1); raises when scroll is not available."""
        totals = []
        for slice_id in range(slices):
            response = self.call("scroll probe", lambda: self.scroll_open(slice_id, slices, 1))
            self._clear_scroll(response.get("_scroll_id"))
            totals.append(int(response["hits"]["total"]["value"]))
        return totals

    def read_scroll_slice(self, slice_id: int, slices: int, sink: _SliceSink) -> None:
        consumed, last_id, attempt = 0, None, 0
        while True:
            try:
                self._scroll_pass(slice_id, slices, sink, consumed, last_id)
                return
            except _ScrollRestart as restart:
                cause = restart.__cause__ or restart
                consumed, last_id = restart.args[0], restart.args[1]
                if attempt >= self.retry.max_retries:
                    raise IndexDumpError(f"scroll on '{self.index}' failed {attempt + 1} times, giving up: "
                                         f"{_describe(cause)}") from cause
                with self.lock:
                    self.scroll_restarts += 1
                    self.retries += 1
                delay = self.retry.delay(attempt, self.jitter)
                log.warning("scroll interrupted (%s); restarting slice %d and skipping %d documents read",
                            _describe(cause), slice_id, consumed)
                attempt += 1
                if self.stop.wait(delay):
                    raise _Cancelled() from cause

    def _scroll_pass(self, slice_id: int, slices: int, sink: _SliceSink, consumed: int, last_id: Any) -> None:
        skip = consumed
        scroll_id = None
        try:
            try:
                response = self.scroll_open(slice_id, slices, self.page_size)
            except os_errors.TransportError as exc:
                if http_status(exc) in (401, 403):
                    raise _auth_error(exc, self.url) from exc
                if _is_retryable(exc) or _is_context_missing(exc):
                    raise _ScrollRestart(consumed, last_id) from exc
                raise IndexDumpError(f"scroll search on '{self.index}' failed: {_describe(exc)}") from exc
            while True:
                if self.stop.is_set():
                    raise _Cancelled()
                scroll_id = response.get("_scroll_id") or scroll_id
                try:
                    self._check_shards(response, "scroll")
                except os_errors.TransportError as exc:
                    raise _ScrollRestart(consumed, last_id) from exc
                hits = response["hits"]["hits"]
                if not hits:
                    if skip:
                        raise IndexDumpError(
                            f"scroll on '{self.index}' could not be resumed after an error: the new scroll ended "
                            f"before the {consumed} documents already read (the index changed); run the dump again")
                    return
                if skip:
                    kept = []
                    for hit in hits:
                        if skip:
                            skip -= 1
                            if skip == 0 and hit.get("_id") != last_id:
                                raise IndexDumpError(
                                    f"scroll on '{self.index}' could not be resumed exactly after an error (the "
                                    f"index changed or its order is not stable); run the dump again")
                        else:
                            kept.append(hit)
                    hits = kept
                if hits:
                    sink.add_page(hits)
                    self.report(len(hits))
                    consumed += len(hits)
                    last_id = hits[-1].get("_id")
                response = hits = None  # type: ignore[assignment]  # let the page go before the next one arrives
                try:
                    response = self.client.scroll(body={"scroll_id": scroll_id, "scroll": self.keep_alive})
                except os_errors.TransportError as exc:
                    if http_status(exc) in (401, 403):
                        raise _auth_error(exc, self.url) from exc
                    if _is_retryable(exc) or _is_context_missing(exc):
                        raise _ScrollRestart(consumed, last_id) from exc
                    raise IndexDumpError(f"scroll on '{self.index}' failed: {_describe(exc)}") from exc
        finally:
            self._clear_scroll(scroll_id)

    # ------------------------------------------------------------------------------------------ run
    def _sink(self, slice_id: int, slices: int) -> _SliceSink:
        rng = random.Random(self.seed) if slices == 1 else random.Random(f"{self.seed}:{slice_id}/{slices}")
        return _SliceSink(self.spec, self.max_documents, rng)

    def _slices_ok(self, totals: list[int]) -> bool:
        whole = self.expected or 0
        return sum(totals) == whole   # a server ignoring `slice` answers the whole total for every slice

    def _run_slices(self, reader: Callable[[int, int, _SliceSink], None], slices: int) -> list[_SliceSink]:
        sinks = [self._sink(i, slices) for i in range(slices)]
        if slices == 1:
            reader(0, 1, sinks[0])
            return sinks
        errors: list[BaseException] = []

        def work(slice_id: int) -> None:
            try:
                reader(slice_id, slices, sinks[slice_id])
            except _Cancelled:
                pass
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                with self.lock:
                    errors.append(exc)
                self.stop.set()

        with ThreadPoolExecutor(max_workers=slices, thread_name_prefix="index-dump") as pool:
            try:
                list(pool.map(work, range(slices)))
            except BaseException:
                self.stop.set()
                raise
        if errors:
            raise errors[0]
        return sinks

    def run(self) -> tuple[list[_SliceSink], str, int]:
        fields = self.preflight()
        method, slices = "pit", self.slices
        self.pit_id = self.open_pit()
        try:
            if self.pit_id is not None:
                try:
                    self.pit_probe()
                except os_errors.TransportError as exc:
                    if http_status(exc) == 400:   # e.g. _shard_doc not supported by this version
                        self.warnings.append(f"point-in-time search unusable ({_describe(exc)}); "
                                             f"reading with scroll")
                        self.close_pits()
                        self.pit_id = None
                    else:
                        raise IndexDumpError(f"point-in-time search on '{self.index}' failed: "
                                             f"{_describe(exc)}") from exc
            if self.pit_id is None:
                method = "scroll"
                try:
                    totals = self.scroll_probe(1)
                except os_errors.TransportError as exc:
                    if _is_index_missing(exc):
                        raise IndexNotFoundError(f"index '{self.index}' does not exist on {self.url}") from exc
                    raise UnsupportedClusterError(
                        f"{self.url} supports neither point-in-time search nor scroll for '{self.index}' "
                        f"({'; '.join(self.warnings[-1:])}; scroll: {_describe(exc)})") from exc
                self.expected = totals[0]
            if slices > 1:
                try:
                    totals = (self.pit_slice_totals(slices) if method == "pit" else self.scroll_probe(slices))
                    supported = self._slices_ok(totals)
                    detail = f"slice hit totals {totals} vs {self.expected} in all"
                except os_errors.TransportError as exc:
                    supported, detail = False, _describe(exc)
                if not supported:
                    self.warnings.append(f"the cluster does not slice {method} searches correctly ({detail}); "
                                         f"read as one stream instead of {slices} slices")
                    slices = 1
            reader = self.read_pit_slice if method == "pit" else self.read_scroll_slice
            sinks = self._run_slices(reader, slices)
        finally:
            self.close_pits()
        eligible = sum(s.eligible for s in sinks)
        seen = sum(s.seen for s in sinks)
        if seen and not eligible:
            reasons = Counter(entry["reason"] for s in sinks for entry in s.skipped)
            fields_text = _fields_seen_text(fields) if fields is not None else "(mapping not readable)"
            names = ", ".join(f"'{f}'" for f in self.spec.text_fields)
            if all(r.startswith("missing field") for r in reasons):
                first = f"no document has field '{self.spec.text_fields[0]}'" if len(self.spec.text_fields) == 1 \
                    else f"no document has any of the fields {names}"
            else:
                first = f"no document has text in {names}"
            summary = "; ".join(f"{n} x {r}" for r, n in reasons.most_common(3))
            raise TextFieldError(f"{first} in index '{self.index}' ({seen} documents read: {summary}); "
                                 f"fields seen: {fields_text}")
        if self.expected is not None and seen != self.expected:
            message = f"read {seen} documents but the {method} reported {self.expected}"
            if self.pit_reopens or self.scroll_restarts:
                self.warnings.append(message + " (the index changed while the dump was resumed)")
            else:
                raise IndexDumpError(message + f" for '{self.index}': the dump is incomplete")
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
    Raises :class:`IndexDumpError` subclasses with a message naming the problem.
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
    spec = _FieldSpec(tuple(f.strip() for f in text_fields), title_field.strip() if title_field else None)
    dumper = _Dumper(client, index, spec, query, max_documents, seed, slices, page_size, pit_keep_alive,
                     progress, retry or RetryPolicy())
    sinks, method, used_slices = dumper.run()
    eligible = sum(s.eligible for s in sinks)
    if max_documents is not None and eligible > max_documents:
        documents = sinks[0].documents if len(sinks) == 1 else _merge_samples(sinks, max_documents,
                                                                               random.Random(seed))
    else:
        documents = [doc for s in sinks for doc in s.documents]
    result = DumpResult(
        index=index, documents=documents, skipped=[entry for s in sinks for entry in s.skipped],
        seen=sum(s.seen for s in sinks), eligible=eligible, kept=len(documents), pages=sum(s.pages for s in sinks),
        seconds=time.perf_counter() - started, method=method, slices=used_slices,
        sampled=max_documents is not None and eligible > max_documents, seed=seed, expected=dumper.expected,
        retries=dumper.retries, pit_reopens=dumper.pit_reopens, scroll_restarts=dumper.scroll_restarts,
        warnings=dumper.warnings)
    for warning in result.warnings:
        log.warning("%s: %s", index, warning)
    log.info("dumped '%s': %d read, %d kept, %d skipped, %d pages in %.1f s (%s, %d slice(s))", index,
             result.seen, result.kept, result.skipped_count, result.pages, result.seconds, method, used_slices)
    return result


# ------------------------------------------------------------------------------------------- output, CLI


def write_dump_jsonl(result: DumpResult, path: str | Path) -> int:
    """Documents as corpus JSONL (``{"_id", "title", "text"}``, BEIR layout), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for doc in result.documents:
            out.write(json.dumps({"_id": doc["id"], "title": doc.get("title") or "", "text": doc["text"]},
                                 ensure_ascii=False) + "\n")
    tmp.replace(path)
    return len(result.documents)


def _write_skipped(result: DumpResult, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for entry in result.skipped:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _extract_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetune-assets extract",
        description="Dump an OpenSearch index to corpus JSONL ({_id, title, text} per line). The password is "
                    f"read from the {PASSWORD_ENV} environment variable, never from the command line.")
    parser.add_argument("--opensearch-url", required=True, help="https://host:9200")
    parser.add_argument("--index", required=True, help="index, alias or pattern")
    parser.add_argument("--text-field", action="append", required=True, dest="text_fields",
                        help="field holding the text; repeat to join several with newlines; dotted paths allowed")
    parser.add_argument("--title-field", default=None)
    parser.add_argument("--out", required=True, help="output .jsonl file")
    parser.add_argument("--max-docs", type=int, default=None, help="uniform random sample of this many documents")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--slices", type=int, default=1, help="parallel sliced reads (default 1)")
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--query-json", default=None,
                        help="filter query as JSON, e.g. '{\"term\": {\"lang\": \"en\"}}'")
    parser.add_argument("--username", default=None, help=f"basic-auth user; password from ${PASSWORD_ENV}")
    parser.add_argument("--aws-region", default=None, help="sign requests with AWS SigV4 for this region")
    parser.add_argument("--aws-service", choices=AWS_SERVICES, default="es",
                        help="es = Amazon OpenSearch Service, aoss = OpenSearch Serverless")
    parser.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    parser.add_argument("--ca-certs", default=None, help="CA bundle for TLS verification")
    parser.add_argument("--timeout", type=float, default=60.0, help="request timeout in seconds")
    return parser


def _output_problem(out: Path) -> str | None:
    """Why ``out`` cannot be written as the dump's JSONL file, or None; checked before the dump starts."""
    if out.is_dir():
        return f"--out {out} is a folder; give the file to write, e.g. {out / 'corpus.jsonl'}"
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"--out {out} cannot be created: {folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"--out {out} cannot be created: folder {folder} is not writable"
    if out.exists() and not os.access(out, os.W_OK):
        return f"--out {out} exists and is not writable"
    return None


def extract_main(argv: Sequence[str] | None = None) -> int:
    """``finetune-assets extract ...``: 0 on success, 1 when the dump fails, 2 on bad arguments."""
    parser = _extract_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:          # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    out = Path(args.out).expanduser()
    problem = _output_problem(out)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    password = os.environ.get(PASSWORD_ENV)
    if args.username and not password:
        print(f"error: --username given but {PASSWORD_ENV} is not set", file=sys.stderr)
        return 2
    if args.username and args.aws_region:
        print("error: use either --username (basic auth) or --aws-region (SigV4), not both", file=sys.stderr)
        return 2
    query = None
    if args.query_json:
        try:
            query = json.loads(args.query_json)
        except json.JSONDecodeError as exc:
            print(f"error: --query-json is not valid JSON ({exc.msg})", file=sys.stderr)
            return 2
    connection = OpenSearchConnection(url=args.opensearch_url, username=args.username,
                                      password=password if args.username else None, aws_region=args.aws_region,
                                      aws_service=args.aws_service, verify_certs=not args.insecure,
                                      ca_certs=args.ca_certs, timeout=args.timeout,
                                      pool_maxsize=max(16, args.slices + 2))
    last = [0.0]

    def progress(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] >= 2.0:
            last[0] = now
            print(f"  {done}/{total if total is not None else '?'} documents read", file=sys.stderr, flush=True)

    print(f"extracting '{args.index}' from {connection.describe()}", file=sys.stderr)
    try:
        client = connection.client()
        result = dump_index(client, args.index, text_fields=args.text_fields, title_field=args.title_field,
                            query=query, max_documents=args.max_docs, seed=args.seed, slices=args.slices,
                            page_size=args.page_size, progress=progress)
    except (IndexDumpError, ValueError, OSError, os_errors.OpenSearchException) as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 1
    try:
        written = write_dump_jsonl(result, out)
        skipped_path = out.with_name(out.stem + ".skipped.jsonl")
        if result.skipped:
            _write_skipped(result, skipped_path)
    except OSError as exc:
        print(f"error: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if result.skipped:
        print(f"{result.skipped_count} documents without text listed in {skipped_path}", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {written} documents to {out} ({result.seen} read, {result.skipped_count} skipped"
          f"{', sampled with seed ' + str(result.seed) if result.sampled else ''}; {result.pages} pages in "
          f"{result.seconds:.1f} s, {result.method}, {result.slices} slice(s))")
    return 0


if __name__ == "__main__":
    sys.exit(extract_main())
