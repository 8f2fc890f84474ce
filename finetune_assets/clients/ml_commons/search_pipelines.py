"""Create the hybrid search pipeline in the cluster: PUT only when the stored body differs (idempotent re-runs)."""
from __future__ import annotations

import time
from collections.abc import Callable

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from finetune_assets.clients.ml_commons.api import Api, describe_error
from finetune_assets.clients.ml_commons.errors import MLCommonsError, UnknownProcessorError
from finetune_assets.clients.retry import RetryPolicy

# Reasons OpenSearch gives when a pipeline names a processor type it does not have.
UNKNOWN_PROCESSOR_REASONS = ("Invalid processor type", "No processor type exists")


def put_search_pipeline(client: OpenSearch, name: str, body: dict, *, retry: RetryPolicy | None = None,
                        sleep: Callable[[float], None] = time.sleep) -> str:
    """Make `PUT /_search/pipeline/<name>` hold `body`: 'created', 'updated', or 'unchanged' (nothing sent)."""
    api = Api(client, retry, sleep)
    try:
        current = api.call("GET", f"/_search/pipeline/{name}")
    except os_errors.NotFoundError:
        current = None
    except os_errors.TransportError as exc:
        raise MLCommonsError(f"GET /_search/pipeline/{name} failed: {describe_error(exc)}") from exc
    stored = (current or {}).get(name)
    if stored is not None and _same(stored, body):
        return "unchanged"
    try:
        api.call("PUT", f"/_search/pipeline/{name}", body=body)  # PUT replaces: safe to repeat
    except os_errors.TransportError as exc:
        detail = describe_error(exc)
        if exc.status_code == 400 and any(reason in detail for reason in UNKNOWN_PROCESSOR_REASONS):
            raise UnknownProcessorError(f"PUT /_search/pipeline/{name} refused: {detail}") from exc
        raise MLCommonsError(f"PUT /_search/pipeline/{name} failed: {detail} (body: the "
                             "normalization-processor or score-ranker-processor of the chosen fusion)") from exc
    return "created" if stored is None else "updated"


def cluster_version(client: OpenSearch, *, retry: RetryPolicy | None = None,
                    sleep: Callable[[float], None] = time.sleep) -> tuple[int, ...] | None:
    """The cluster's OpenSearch version from `GET /` (`version.number`, e.g. (3, 1, 0)); None when it names none
    that reads as numbers."""
    api = Api(client, retry, sleep)
    try:
        info = api.call("GET", "/")
    except os_errors.TransportError as exc:
        raise MLCommonsError(f"GET / (the cluster's version) failed: {describe_error(exc)}") from exc
    number = str(((info or {}).get("version") or {}).get("number", ""))
    parts = number.split("-")[0].split(".")
    return tuple(int(p) for p in parts) if parts and all(p.isdigit() for p in parts) else None


def _same(stored: dict, body: dict) -> bool:
    """The cluster may echo numbers as floats and add defaults; compare what we set, numbers by value."""
    def norm(value):
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items()}
        if isinstance(value, list):
            return [norm(v) for v in value]
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    def subset(want, have) -> bool:
        if isinstance(want, dict):
            return isinstance(have, dict) and all(k in have and subset(v, have[k]) for k, v in want.items())
        return want == have

    return subset(norm(body), norm(stored))
