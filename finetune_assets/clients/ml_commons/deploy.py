"""Deploy a registered model and wait for its task; remove what a failed attempt created.

Anything this attempt created that is not usable in the end (the model) is undeployed and deleted;
connectors and model groups are kept for the next run. Note that ml-commons itself deletes a model
group when its last model is deleted.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from opensearchpy import exceptions as os_errors

from finetune_assets.clients.ml_commons.api import ML, Api, describe_error, error_text, is_ambiguous, setting_hint
from finetune_assets.clients.ml_commons.errors import MLCommonsError, TaskFailedError
from finetune_assets.clients.retry import http_status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistrationResult:
    """What a registration gave: the model and its group, whether an existing model was reused, its state."""

    model_id: str
    model_group_id: str
    function_name: str               # TEXT_EMBEDDING / SPARSE_ENCODING / SPARSE_TOKENIZE (what the model does)
    reused: bool                     # an existing model was used (no new version registered)
    state: str                       # DEPLOYED, PARTIALLY_DEPLOYED, or REGISTERED when deploy=False
    connector_id: str | None = None
    deploy_task_id: str | None = None
    warnings: tuple[str, ...] = ()


def _task_error(task: dict) -> str:
    error = task.get("error")
    if isinstance(error, str):
        try:
            parsed = json.loads(error)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):         # deploy errors come as {"<node id>": "<message>"}
            return "; ".join(f"node {node}: {message}" for node, message in parsed.items())
        return error
    return json.dumps(error) if error else "no error text in the task"


def wait_task(api: Api, task_id: str, *, what: str, timeout: float, poll_interval: float) -> dict:
    deadline = time.monotonic() + timeout
    interval = poll_interval
    while True:
        try:
            task = api.call("GET", f"{ML}/tasks/{task_id}")
        except os_errors.TransportError as exc:
            raise api.fail(exc, f"GET {ML}/tasks/{task_id} ({what})") from exc
        state = task.get("state")
        if state in ("COMPLETED", "COMPLETED_WITH_ERROR"):
            return task
        if state in ("FAILED", "CANCELLED"):
            error = _task_error(task)
            raise TaskFailedError(f"{what}: task {task_id} ended {state}: {error.rstrip('.')}.{setting_hint(error)}",
                                  task)
        if time.monotonic() >= deadline:
            raise TaskFailedError(f"{what}: task {task_id} still {state} after {timeout:.0f}s", task)
        api.sleep(interval)
        interval = min(interval * 1.5, max(poll_interval, 10.0))


def deploy_model(api: Api, model_id: str, *, timeout: float, poll_interval: float) -> tuple[str | None, str, list[str]]:
    """Deploy and wait; returns (task id, final state, warnings)."""
    try:
        answer = api.call("POST", f"{ML}/models/{model_id}/_deploy")
    except os_errors.TransportError as exc:
        raise api.fail(exc, f"deploying model {model_id}") from exc
    task_id = answer.get("task_id")
    warnings: list[str] = []
    if not task_id:
        return None, "DEPLOYED", warnings
    task = wait_task(api, task_id, what=f"deploying model {model_id}", timeout=timeout, poll_interval=poll_interval)
    if task.get("state") == "COMPLETED_WITH_ERROR":
        warnings.append(f"model {model_id} deployed on some nodes only: {_task_error(task)}")
        return task_id, "PARTIALLY_DEPLOYED", warnings
    return task_id, "DEPLOYED", warnings


def _cleanup_model(api: Api, model_id: str, *, undeploy: bool) -> str | None:
    """Undeploy (when a deploy was started) and delete a model this attempt created; a problem text or None."""
    problems = []
    if undeploy:
        try:
            api.call("POST", f"{ML}/models/{model_id}/_undeploy")
        except os_errors.TransportError as exc:
            problems.append(f"undeploy: {describe_error(exc)}")
    for attempt in range(4):
        try:
            api.call("DELETE", f"{ML}/models/{model_id}")
            log.info("deleted model %s (created by this failed attempt)", model_id)
            return None
        except os_errors.TransportError as exc:
            if http_status(exc) == 404:
                return None
            if "deploying or deployed state" in error_text(exc) and attempt < 3:
                api.backoff(attempt)         # undeploy still spreading over the nodes
                continue
            problems.append(f"delete: {describe_error(exc)}")
            break
    text = (f"model {model_id} could not be removed ({'; '.join(problems)}); remove it with "
            f"POST {ML}/models/{model_id}/_undeploy then DELETE {ML}/models/{model_id}")
    log.error(text)
    return text


@contextlib.contextmanager
def cleanup_on_failure(api: Api, created: dict) -> Iterator[None]:
    """``created`` holds ``model_id`` (set once the model exists) and ``deployed`` (a deploy was started)."""
    try:
        yield
    except BaseException as exc:
        model_id = created.get("model_id")
        if model_id:
            problem = _cleanup_model(api, model_id, undeploy=bool(created.get("deployed")))
            if isinstance(exc, MLCommonsError):
                note = problem or f"model {model_id}, created by this attempt, was deleted"
                exc.args = (f"{exc.args[0]}\n({note})",) + tuple(exc.args[1:])
        raise


def create_adopting(api: Api, send: Callable[[], dict], find_new: Callable[[], str | None],
                     what: str) -> dict:
    """Send a creating call; after an ambiguous failure adopt what the lost request created, if anything."""
    for attempt in range(api.retry.max_retries + 1):
        try:
            return send()
        except os_errors.TransportError as exc:
            if not (is_ambiguous(exc) and attempt < api.retry.max_retries):
                raise api.fail(exc, what) from exc
            log.warning("%s: %s; checking whether it was created before retrying", what, describe_error(exc))
            api.backoff(attempt)
            adopted = find_new()
            if adopted:
                log.info("%s: adopting %s, created by the request whose answer was lost", what, adopted)
                return {"model_id": adopted, "adopted": True}
    raise MLCommonsError(f"{what}: gave up after {api.retry.max_retries} retries")
