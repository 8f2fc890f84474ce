"""Send every ml-commons HTTP call through one place: retries, readable errors, a missing plugin detected.

429, 502, 503, 504 and broken connections are retried with bounded exponential backoff (:class:`RetryPolicy`).
Calls that create something (``_register_meta``, ``models/_register``, ``connectors/_create``,
``model_groups/_register``) are only re-sent blindly when the request cannot have been processed (429,
connection refused); after an ambiguous failure (5xx, timeout, broken connection) the callers first look for
what the lost request may have created and adopt it instead of creating a duplicate.
"""
from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from finetune_assets.clients.ml_commons.errors import (
    ClusterUnreachableError,
    MLCommonsError,
    MLCommonsNotInstalledError,
)
from finetune_assets.clients.retry import RetryPolicy, http_status
from finetune_assets.core.redact import redact

log = logging.getLogger(__name__)

ML = "/_plugins/_ml"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
DENSE = "TEXT_EMBEDDING"
SPARSE = "SPARSE_ENCODING"
TOKENIZE = "SPARSE_TOKENIZE"  # query side of an inference-free sparse model (idf.json + tokenizer.json)
SAGEMAKER_URL_REGEX = r"^https://runtime\.sagemaker\..*[a-z0-9-]\.amazonaws\.com/.*$"
SETTINGS_PREFIX = "plugins.ml_commons."
_S = SETTINGS_PREFIX


def error_text(exc: BaseException) -> str:
    if isinstance(exc, os_errors.TransportError):
        return f"{exc.error} {json.dumps(exc.info) if isinstance(exc.info, dict) else exc.info}"
    return str(exc)


def describe_error(exc: BaseException) -> str:
    """One line: HTTP status, error type and reason (never the request body), credentials masked."""
    return redact(_describe_error(exc))


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, os_errors.ConnectionTimeout):
        return "timed out"
    if isinstance(exc, os_errors.ConnectionError):
        return f"connection error ({type(exc.info).__name__}: {str(exc.info)[:200]})"
    if isinstance(exc, os_errors.TransportError):
        info = exc.info if isinstance(exc.info, dict) else {}
        error = info.get("error")
        if isinstance(error, dict):
            root = (error.get("root_cause") or [error])[0]
            return f"HTTP {exc.status_code} {root.get('type', '')}: {str(root.get('reason', ''))[:500]}"
        return f"HTTP {exc.status_code}: {str(error if error else exc.error)[:500]}"
    return f"{type(exc).__name__}: {exc}"


def _not_sent(exc: BaseException) -> bool:
    """The request never reached the server (connection refused / DNS), so re-sending cannot duplicate."""
    if not isinstance(exc, os_errors.ConnectionError) or isinstance(exc, os_errors.ConnectionTimeout):
        return False
    text = f"{type(exc.info).__name__} {exc.info}"
    return "NewConnectionError" in text or "Connection refused" in text or "Name or service not known" in text


def _retryable(exc: BaseException, *, creates: bool) -> bool:
    if isinstance(exc, os_errors.SSLError):
        return False
    if creates:
        return http_status(exc) == 429 or _not_sent(exc)
    return isinstance(exc, os_errors.ConnectionError) or http_status(exc) in RETRY_STATUSES


def is_ambiguous(exc: BaseException) -> bool:
    """The request may have been processed although it failed (5xx gateway errors, timeouts, broken sockets)."""
    if isinstance(exc, os_errors.SSLError) or _not_sent(exc):
        return False
    return isinstance(exc, os_errors.ConnectionError) or http_status(exc) in (502, 503, 504)


def _no_handler(exc: BaseException) -> bool:
    status = http_status(exc)
    if status not in (400, 404, 405):
        return False
    text = error_text(exc)
    if "no handler found for uri" in text:
        return True
    # a bare 404 (no OpenSearch error object) from a proxy or a service without the plugin
    return status == 404 and not isinstance(getattr(exc, "info", None), dict)


def _index_missing(exc: BaseException) -> bool:
    return http_status(exc) == 404 and "index_not_found_exception" in error_text(exc)


# Server error texts that name a cluster setting, and the value that lifts them.
_SETTING_HINTS = (
    ("allow_registering_model_via_local_file", _S + "allow_registering_model_via_local_file", True),
    ("allow_registering_model_via_url", _S + "allow_registering_model_via_url", True),
    ("No eligible node found", _S + "only_run_on_ml_node", False),
    ("only_run_on_ml_node", _S + "only_run_on_ml_node", False),
    ("trusted connector endpoint regex", _S + "trusted_connector_endpoints_regex", [SAGEMAKER_URL_REGEX]),
    ("Remote Inference is currently disabled", _S + "remote_inference.enabled", True),
    ("Local Model is currently disabled", _S + "local_model.enabled", True),
    ("model access control is disabled", _S + "model_access_control_enabled", True),
    ("Memory Circuit Breaker is open", _S + "native_memory_threshold", 100),
    ("Disk Circuit Breaker is open", _S + "disk_free_space_threshold", "-1"),
)


def setting_hint(text: str) -> str:
    for fragment, setting, value in _SETTING_HINTS:
        if fragment in text:
            fix = json.dumps({"persistent": {setting: value}})
            return f" Cluster setting {setting} blocks this; to lift it: PUT _cluster/settings {fix}"
    return ""


class Api:
    """All HTTP calls go through here: retries, readable errors, detection of a missing ml-commons."""

    def __init__(self, client: OpenSearch, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.rng = random.Random()

    def call(self, method: str, path: str, *, body: Any = None, params: dict | None = None,
             creates: bool = False, quiet: bool = False) -> Any:
        attempt = 0
        while True:
            try:
                with _muted_transport_logs() if quiet else contextlib.nullcontext():
                    return self.client.transport.perform_request(method, path, params=params, body=body)
            except os_errors.TransportError as exc:
                if path.startswith(ML) and _no_handler(exc):
                    raise MLCommonsNotInstalledError(_not_installed_message(method, path, exc)) from exc
                if attempt < self.retry.max_retries and _retryable(exc, creates=creates):
                    delay = self.retry.delay(attempt, self.rng)
                    log.warning("%s %s failed (%s); retry %d/%d in %.1fs", method, path, describe_error(exc),
                                attempt + 1, self.retry.max_retries, delay)
                    self.sleep(delay)
                    attempt += 1
                    continue
                raise

    def fail(self, exc: BaseException, what: str) -> MLCommonsError:
        """A readable error for a failed call (with the setting to change when the server named one)."""
        text = error_text(exc)
        return MLCommonsError(f"{what} failed: {describe_error(exc).rstrip('.')}.{setting_hint(text)}")

    def backoff(self, attempt: int) -> None:
        self.sleep(self.retry.delay(attempt, self.rng))


def _not_installed_message(method: str, path: str, exc: BaseException) -> str:
    return (f"the cluster has no ml-commons plugin: {method} {path} answered {describe_error(exc)}. Registering models "
            f"needs the opensearch-ml plugin (bundled with the standard OpenSearch distribution and with Amazon "
            f"OpenSearch Service 2.9+; the opensearch-min distribution and OpenSearch Serverless lack it).")


@contextlib.contextmanager
def _muted_transport_logs() -> Iterator[None]:
    """opensearch-py logs request bodies at DEBUG ('opensearch') and as curl lines ('opensearchpy.trace'):
    keep connector credentials (and multi-megabyte chunks) out of them for the duration of one call."""
    loggers = [logging.getLogger("opensearch"), logging.getLogger("opensearchpy.trace")]
    saved = [(logger, logger.level) for logger in loggers]
    try:
        for logger in loggers:
            if logger.getEffectiveLevel() <= logging.INFO:
                logger.setLevel(logging.WARNING)
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def search_hits(api: Api, path: str, query: dict, size: int = 100, sort: list | None = None) -> list[dict]:
    body: dict[str, Any] = {"query": query, "size": size}
    if sort:
        body["sort"] = sort
    try:
        answer = api.call("POST", path, body=body)
    except os_errors.TransportError as exc:
        if _index_missing(exc):      # the system index does not exist yet: nothing registered so far
            return []
        raise api.fail(exc, f"POST {path}") from exc
    return [{"_id": hit["_id"], **(hit.get("_source") or {})} for hit in (answer.get("hits") or {}).get("hits", [])]


def check_reachable(client: OpenSearch, timeout: float = 10.0) -> None:
    """One ``GET /`` outside the retry loop: raises :class:`ClusterUnreachableError` when no connection can be
    made, so a wrong URL fails at once; any HTTP answer (even 401, 403 or 404) means the cluster is there."""
    try:
        client.transport.perform_request("GET", "/", params={"request_timeout": timeout})
    except os_errors.ConnectionError as exc:          # includes SSLError and ConnectionTimeout
        raise ClusterUnreachableError(describe_error(exc)) from exc
    except os_errors.TransportError:
        return
