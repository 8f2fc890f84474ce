"""Find or register the model group of an index (one group per index) and list the models already in it."""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from finetune_assets.clients.ml_commons.api import ML, Api, error_text, is_ambiguous, search_hits
from finetune_assets.clients.ml_commons.errors import MLCommonsError
from finetune_assets.clients.retry import RetryPolicy

log = logging.getLogger(__name__)

USABLE_STATES = ("DEPLOYED", "PARTIALLY_DEPLOYED")
DEPLOYABLE_STATES = ("REGISTERED", "UNDEPLOYED", "DEPLOY_FAILED")


def model_group_name(index: str | None = None, package_name: str | None = None) -> str:
    """One model group per index: ``finetune-assets/<index>`` (the name export gives the package)."""
    if index:
        return f"finetune-assets/{index}"
    if package_name:
        return package_name
    raise ValueError("give an index or a package name to derive the model group name")


def _find_group(api: Api, name: str) -> str | None:
    hits = search_hits(api, f"{ML}/model_groups/_search",
                       {"bool": {"filter": [{"term": {"name.keyword": name}}]}}, 10)
    exact = [hit["_id"] for hit in hits if hit.get("name") == name]
    return exact[0] if exact else None


_GROUP_TAKEN = re.compile(r"already being used by a model group with ID: ([A-Za-z0-9_\-]+)")


def ensure_model_group(client: OpenSearch, name: str, *, description: str | None = None,
                       access_mode: str | None = None, backend_roles: Sequence[str] | None = None,
                       retry: RetryPolicy | None = None, _api: Api | None = None) -> tuple[str, bool]:
    """The id of the model group ``name`` (found by name, else registered) and whether it was created now.

    Access parameters are sent only when given (a cluster without model access control rejects them).
    """
    api = _api or Api(client, retry)
    body: dict[str, Any] = {"name": name, "description": description or f"finetune-assets models for {name}"}
    if access_mode:
        body["access_mode"] = access_mode
    if backend_roles:
        body["backend_roles"] = list(backend_roles)
    for attempt in range(api.retry.max_retries + 1):
        found = _find_group(api, name)
        if found:
            log.info("model group %r exists: %s", name, found)
            return found, False
        try:
            answer = api.call("POST", f"{ML}/model_groups/_register", body=body, creates=True)
        except os_errors.TransportError as exc:
            taken = _GROUP_TAKEN.search(error_text(exc))
            if taken:        # registered meanwhile (another run), or not found by the name.keyword search
                log.info("model group %r already exists: %s", name, taken.group(1))
                return taken.group(1), False
            if is_ambiguous(exc) and attempt < api.retry.max_retries:
                api.backoff(attempt)
                continue     # the lost request may have created it: search again before re-sending
            raise api.fail(exc, f"registering model group {name!r}") from exc
        group_id = answer.get("model_group_id")
        if not group_id:
            raise MLCommonsError(f"model_groups/_register answered without model_group_id: {answer}")
        log.info("registered model group %r: %s", name, group_id)
        return group_id, True
    raise MLCommonsError(f"could not register model group {name!r}")


def group_models(api: Api, group_id: str, **terms: str) -> list[dict]:
    filters = [{"term": {"model_group_id": group_id}}] + [{"term": {k: v}} for k, v in terms.items()]
    query = {"bool": {"filter": filters, "must_not": [{"exists": {"field": "chunk_number"}}]}}
    return search_hits(api, f"{ML}/models/_search", query, 100, sort=[{"created_time": {"order": "desc"}}])


def pick_existing(models: list[dict]) -> dict | None:
    """A DEPLOYED (or partially deployed) model first, else one that only needs a deploy."""
    for states in (USABLE_STATES, DEPLOYABLE_STATES):
        for model in models:
            if model.get("model_state") in states:
                return model
    return None
