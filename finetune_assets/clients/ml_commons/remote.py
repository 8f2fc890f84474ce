"""Register a SageMaker endpoint as a remote ml-commons model (connector + model) and deploy it."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from opensearchpy import OpenSearch

from finetune_assets.clients.ml_commons.api import ML, Api
from finetune_assets.clients.ml_commons.connectors import SageMakerEndpoint, ensure_connector, sagemaker_connector_body
from finetune_assets.clients.ml_commons.deploy import (
    RegistrationResult,
    cleanup_on_failure,
    create_adopting,
    deploy_model,
    wait_task,
)
from finetune_assets.clients.ml_commons.errors import MLCommonsError
from finetune_assets.clients.ml_commons.model_groups import (
    USABLE_STATES,
    ensure_model_group,
    group_models,
    model_group_name,
    pick_existing,
)
from finetune_assets.clients.ml_commons.settings import check_cluster_settings
from finetune_assets.clients.retry import RetryPolicy

log = logging.getLogger(__name__)


def register_sagemaker_model(client: OpenSearch, endpoint: SageMakerEndpoint, *, index: str | None = None,
                             model_name: str | None = None, group_name: str | None = None,
                             connector_name: str | None = None, description: str | None = None,
                             access_mode: str | None = None, backend_roles: Sequence[str] | None = None,
                             check_settings: bool = True, timeout: float = 300.0, poll_interval: float = 2.0,
                             retry: RetryPolicy | None = None,
                             sleep: Callable[[float], None] = time.sleep) -> RegistrationResult:
    """Register a SageMaker endpoint as a remote model (connector + ``function_name: remote``) and deploy it.

    The connector (named after the endpoint unless ``connector_name``) and the model group are reused when they
    exist; a model of that connector already in the group is reused (deployed when needed). A model created
    here is undeployed and deleted if deploying it fails; connector and group are kept.
    """
    api = Api(client, retry, sleep)
    connector_name = connector_name or f"sagemaker/{endpoint.endpoint_name}/{endpoint.function_name.lower()}"
    notes: list[str] = []
    if check_settings:
        notes += check_cluster_settings(client, "remote", connector_url=endpoint.url,
                                        model_access_params=bool(access_mode or backend_roles), _api=api).warnings
    body = sagemaker_connector_body(endpoint, name=connector_name, description=description)
    connector_id, _ = ensure_connector(client, body, _api=api)
    name = group_name or model_group_name(index, model_name or f"sagemaker/{endpoint.endpoint_name}")
    group_id, _ = ensure_model_group(client, name, access_mode=access_mode, backend_roles=backend_roles, _api=api)

    # connector_id has no explicit mapping in .plugins-ml-model: filter on keyword fields, compare it here
    same = [m for m in group_models(api, group_id, algorithm="REMOTE") if m.get("connector_id") == connector_id]
    existing = pick_existing(same)
    if existing and existing["model_state"] in USABLE_STATES:
        log.info("remote model %s (connector %s) is %s: reused", existing["_id"], connector_id, existing["model_state"])
        return RegistrationResult(existing["_id"], group_id, endpoint.function_name, True, existing["model_state"],
                                  connector_id=connector_id, warnings=tuple(notes))
    if existing:
        task_id, state, warnings = deploy_model(api, existing["_id"], timeout=timeout, poll_interval=poll_interval)
        return RegistrationResult(existing["_id"], group_id, endpoint.function_name, True, state,
                                  connector_id=connector_id, deploy_task_id=task_id, warnings=tuple(notes + warnings))

    known = {model["_id"] for model in same}
    register = {
        "name": model_name or f"sagemaker/{endpoint.endpoint_name}",
        "function_name": "remote",
        "model_group_id": group_id,
        "description": description or f"{endpoint.function_name} model served by SageMaker endpoint "
                                      f"{endpoint.endpoint_name} ({endpoint.region})",
        "connector_id": connector_id,
    }
    created: dict[str, Any] = {}
    with cleanup_on_failure(api, created):
        answer = create_adopting(
            api, lambda: api.call("POST", f"{ML}/models/_register", body=register, creates=True),
            lambda: next((m["_id"] for m in group_models(api, group_id, algorithm="REMOTE")
                          if m.get("connector_id") == connector_id and m["_id"] not in known), None),
            f"registering the remote model for connector {connector_id}")
        model_id = answer.get("model_id")
        if not model_id and answer.get("task_id"):
            task = wait_task(api, answer["task_id"], what="registering the remote model", timeout=timeout,
                              poll_interval=poll_interval)
            model_id = task.get("model_id")
        if not model_id:
            raise MLCommonsError(f"models/_register answered without a model id: {answer}")
        created["model_id"] = model_id
        created["deployed"] = True
        task_id, state, warnings = deploy_model(api, model_id, timeout=timeout, poll_interval=poll_interval)
    log.info("remote model %s deployed (%s) through connector %s", model_id, state, connector_id)
    return RegistrationResult(model_id, group_id, endpoint.function_name, False, state, connector_id=connector_id,
                              deploy_task_id=task_id, warnings=tuple(notes + warnings))
