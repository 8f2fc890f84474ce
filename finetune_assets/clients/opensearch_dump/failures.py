"""Read OpenSearch errors for a dump: which to retry, which mean a lost search context or a missing index, and
a one-line description (credentials redacted) for messages."""
from __future__ import annotations

import json
from typing import Any

from opensearchpy import exceptions as os_errors

from finetune_assets.clients.opensearch_dump.connection import PASSWORD_ENV
from finetune_assets.clients.opensearch_dump.errors import AuthenticationError
from finetune_assets.clients.retry import http_status
from finetune_assets.core.redact import redact

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, os_errors.TransportError):
        return f"{exc.error} {exc.info}"
    return str(exc)


def is_context_missing(exc: BaseException) -> bool:
    """The PIT or scroll context expired or disappeared ("No search context found")."""
    if not isinstance(exc, os_errors.TransportError) or isinstance(exc, os_errors.ConnectionError):
        return False
    text = _error_text(exc)
    return "search_context_missing_exception" in text or "No search context found" in text


def is_retryable(exc: BaseException) -> bool:
    """A 429 or 5xx answer, or a broken connection (TLS errors are not: they do not go away)."""
    if isinstance(exc, os_errors.SSLError):
        return False
    if isinstance(exc, os_errors.ConnectionError):
        return True
    return http_status(exc) in RETRY_STATUSES


def is_index_missing(exc: BaseException) -> bool:
    return http_status(exc) == 404 and "index_not_found_exception" in _error_text(exc)


def describe(exc: BaseException) -> str:
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


def auth_error(exc: BaseException, url: str) -> AuthenticationError:
    """The error for a 401/403 answer, saying which credentials and settings to check."""
    status = http_status(exc)
    what = "authentication failed (HTTP 401)" if status == 401 else "access denied (HTTP 403)"
    return AuthenticationError(
        f"OpenSearch at {url}: {what}: check the username/password (password from {PASSWORD_ENV}) or, with "
        f"AWS SigV4, the IAM credentials, --aws-region/--aws-service and the domain's access policy and "
        f"role mapping ({describe(exc)})")


def check_shards(response: dict[str, Any], what: str) -> None:
    """Raise for a search answer with failed shards, so a partial page is never taken as a whole one."""
    shards = response.get("_shards") or {}
    if not shards.get("failed"):
        return
    failures = shards.get("failures") or []
    text = json.dumps(failures)[:1000]
    if "search_context_missing_exception" in text or "No search context found" in text:
        raise os_errors.NotFoundError(404, "search_context_missing_exception", {"error": failures})
    raise os_errors.TransportError(503, "shard_failures", {"error": f"{what}: {shards.get('failed')} shard(s) "
                                                                    f"failed: {text}"})
