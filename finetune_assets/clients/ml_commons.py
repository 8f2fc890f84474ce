"""Register a model in OpenSearch ml-commons and deploy it: an exported package (local model) or a
SageMaker endpoint (remote model behind a connector), plus a neural-search round trip to check it.

Every call this module makes (``ML`` = ``/_plugins/_ml``)
    Settings check (:func:`check_cluster_settings`, first step of both registration paths)
        GET    /_cluster/settings?include_defaults=true&flat_settings=true
        GET    /_nodes?filter_path=nodes.*.name,nodes.*.roles     only when the answer depends on node roles
        POST   ML/model_groups/_search  {"size": 0}                 only when no plugins.ml_commons.* setting
                                                                    is visible (is ml-commons installed?)
    Model group (:func:`ensure_model_group`, one group per index)
        POST   ML/model_groups/_search      by name (term on name.keyword, exact name re-checked here)
        POST   ML/model_groups/_register    only when none exists; "name ... already being used by a model
                                            group with ID: X" -> group X is used (a concurrent run made it)
    Local package (:func:`register_local_package`)
        POST   ML/models/_search            same model_content_hash_value in the group? (chunk docs excluded)
        POST   ML/models/_register_meta     body = ml_commons_register.json + model_group_id -> model_id
        POST   ML/models/<model_id>/upload_chunk/<n>   raw zip bytes, n = 0 .. total_chunks-1
        POST   ML/models/<model_id>/_deploy -> task_id
        GET    ML/tasks/<task_id>           polled until COMPLETED (FAILED / CANCELLED / timeout -> error)
      on failure, for a model this attempt created:
        POST   ML/models/<model_id>/_undeploy   (only once a deploy was started)
        DELETE ML/models/<model_id>
    Remote SageMaker model (:func:`register_sagemaker_model`)
        POST   ML/connectors/_search        by name; reused when its predict URL is the same endpoint
        POST   ML/connectors/_create        only when none exists
        (model group as above)
        POST   ML/models/_search            a model of this connector already in the group?
        POST   ML/models/_register          {"function_name": "remote", "connector_id": ...} -> model_id
        GET    ML/tasks/<task_id>           only when the register answer has no model_id (older clusters)
        POST   ML/models/<model_id>/_deploy, GET ML/tasks/<task_id>, cleanup as for the local path
    Inference-free sparse package (:func:`register_inference_free_package`): the local-package calls twice,
        document/ (SPARSE_ENCODING) then query/ (SPARSE_TOKENIZE), same model group
    Verification (:func:`verify_neural_search`)
        GET    ML/models/<model_id>         dense dimension from model_config, when not given
        POST   ML/models/<model_id>/_predict  {"text_docs": [...]}: dense dimension of a remote model
        PUT    /_ingest/pipeline/<id>       text_embedding or sparse_encoding processor
        PUT    /<test index>                knn_vector (index.knn) or rank_features mapping, default_pipeline
        POST   /_bulk?refresh=true          the sample texts
        POST   /<test index>/_search        one neural / neural_sparse query -> top hit id (neural_sparse with
                                            the SPARSE_TOKENIZE model for inference-free search)
        DELETE /<test index>, DELETE /_ingest/pipeline/<id>   always, also on errors

Faults
    429, 502, 503, 504 and broken connections are retried with bounded exponential backoff
    (:class:`RetryPolicy`). Calls that create something (``_register_meta``, ``models/_register``,
    ``connectors/_create``, ``model_groups/_register``) are only re-sent blindly when the request cannot have
    been processed (429, connection refused); after an ambiguous failure (5xx, timeout, broken connection)
    the code first looks for what the lost request may have created (a new model with the same hash or
    connector in the group, the connector or group by name) and adopts it instead of creating a duplicate.
    Anything this attempt created that is not usable in the end (the model) is undeployed and deleted;
    connectors and model groups are kept for the next run. Note that ml-commons itself deletes a model
    group when its last model is deleted.

Secrets
    Connector credentials are never logged: not by this module, and not by opensearch-py either (its
    request-body debug logging is muted while the connector request is sent). The CLI reads the password
    from ``OPENSEARCH_PASSWORD`` only.

This module imports opensearch-py (and export.py's constants, which import nothing heavy); never Dagster.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from finetune_assets.clients.retry import RetryPolicy, http_status
from finetune_assets.core.export.export import (
    MANIFEST_FILE,
    MODEL_CHUNK_SIZE_BYTES,
    REGISTER_BODY_FILE,
    sha256_file,
    total_chunks,
)

log = logging.getLogger(__name__)

__all__ = [
    "ClusterCheck", "ClusterSettingsError", "MLCommonsError", "MLCommonsNotInstalledError", "ModelPackage",
    "PackageError", "RegistrationResult", "RetryPolicy", "SageMakerEndpoint", "SettingIssue", "TaskFailedError",
    "VerificationError", "check_cluster_settings", "ensure_connector", "ensure_model_group", "load_package",
    "model_group_name", "register_inference_free_package", "register_local_package", "register_main",
    "register_sagemaker_model", "sagemaker_connector_body", "verify_neural_search",
]

ML = "/_plugins/_ml"
PASSWORD_ENV = "OPENSEARCH_PASSWORD"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
DENSE = "TEXT_EMBEDDING"
SPARSE = "SPARSE_ENCODING"
TOKENIZE = "SPARSE_TOKENIZE"  # query side of an inference-free sparse model (idf.json + tokenizer.json)
USABLE_STATES = ("DEPLOYED", "PARTIALLY_DEPLOYED")
DEPLOYABLE_STATES = ("REGISTERED", "UNDEPLOYED", "DEPLOY_FAILED")
PRE_PROCESS_DEFAULT = "connector.pre_process.default.embedding"
POST_PROCESS_DEFAULT = "connector.post_process.default.embedding"
SAGEMAKER_URL_REGEX = r"^https://runtime\.sagemaker\..*[a-z0-9-]\.amazonaws\.com/.*$"
_S = "plugins.ml_commons."


# ------------------------------------------------------------------------------------------------ errors


class MLCommonsError(RuntimeError):
    """A registration step failed; the message says which call, why, and what to change."""


class MLCommonsNotInstalledError(MLCommonsError):
    """The cluster has no ml-commons plugin (``/_plugins/_ml/...`` has no handler)."""


class PackageError(MLCommonsError):
    """The package folder is incomplete or its files do not match ``ml_commons_register.json``."""


class TaskFailedError(MLCommonsError):
    """An ml-commons task ended FAILED or CANCELLED, or did not finish in time."""

    def __init__(self, message: str, task: dict | None = None):
        super().__init__(message)
        self.task = task or {}


class VerificationError(MLCommonsError):
    """The neural-search round trip with the registered model did not work."""


@dataclass(frozen=True)
class SettingIssue:
    """One cluster setting that blocks (or may hinder) the chosen registration path."""

    setting: str
    current: Any
    required: Any
    reason: str
    blocking: bool = True

    @property
    def message(self) -> str:
        fix = json.dumps({"persistent": {self.setting: self.required}})
        return f"{self.setting} is {json.dumps(self.current)}: {self.reason}. Set it: PUT _cluster/settings {fix}"


class ClusterSettingsError(MLCommonsError):
    """Cluster settings block the chosen path; ``issues`` lists each setting and the value to set."""

    def __init__(self, issues: Sequence[SettingIssue], path: str):
        self.issues = list(issues)
        lines = "\n".join(f"  - {issue.message}" for issue in self.issues)
        super().__init__(f"the cluster's ml-commons settings block {path!r} registration:\n{lines}")


# ------------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class RegistrationResult:
    model_id: str
    model_group_id: str
    function_name: str               # TEXT_EMBEDDING / SPARSE_ENCODING / SPARSE_TOKENIZE (what the model does)
    reused: bool                     # an existing model was used (no new version registered)
    state: str                       # DEPLOYED, PARTIALLY_DEPLOYED, or REGISTERED when deploy=False
    connector_id: str | None = None
    deploy_task_id: str | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelPackage:
    """A package folder written by ``finetune_assets.core.export.export`` (zip + register body + manifest)."""

    directory: Path
    zip_path: Path
    register_body: dict
    manifest: dict
    sha256: str
    size_bytes: int
    total_chunks: int
    function_name: str

    @property
    def embedding_dimension(self) -> int | None:
        config = self.register_body.get("model_config") or {}
        return config.get("embedding_dimension") or self.manifest.get("embedding_dimension")




# ------------------------------------------------------------------------------------------------ transport




def _error_text(exc: BaseException) -> str:
    if isinstance(exc, os_errors.TransportError):
        return f"{exc.error} {json.dumps(exc.info) if isinstance(exc.info, dict) else exc.info}"
    return str(exc)


def _reason(exc: BaseException) -> str:
    """One line: HTTP status, error type and reason (never the request body)."""
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


def _ambiguous(exc: BaseException) -> bool:
    """The request may have been processed although it failed (5xx gateway errors, timeouts, broken sockets)."""
    if isinstance(exc, os_errors.SSLError) or _not_sent(exc):
        return False
    return isinstance(exc, os_errors.ConnectionError) or http_status(exc) in (502, 503, 504)


def _no_handler(exc: BaseException) -> bool:
    status = http_status(exc)
    if status not in (400, 404, 405):
        return False
    text = _error_text(exc)
    if "no handler found for uri" in text:
        return True
    # a bare 404 (no OpenSearch error object) from a proxy or a service without the plugin
    return status == 404 and not isinstance(getattr(exc, "info", None), dict)


def _index_missing(exc: BaseException) -> bool:
    return http_status(exc) == 404 and "index_not_found_exception" in _error_text(exc)


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


def _setting_hint(text: str) -> str:
    for fragment, setting, value in _SETTING_HINTS:
        if fragment in text:
            fix = json.dumps({"persistent": {setting: value}})
            return f" Cluster setting {setting} blocks this; to lift it: PUT _cluster/settings {fix}"
    return ""


class _Api:
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
                    log.warning("%s %s failed (%s); retry %d/%d in %.1fs", method, path, _reason(exc),
                                attempt + 1, self.retry.max_retries, delay)
                    self.sleep(delay)
                    attempt += 1
                    continue
                raise

    def fail(self, exc: BaseException, what: str) -> MLCommonsError:
        """A readable error for a failed call (with the setting to change when the server named one)."""
        text = _error_text(exc)
        return MLCommonsError(f"{what} failed: {_reason(exc).rstrip('.')}.{_setting_hint(text)}")

    def backoff(self, attempt: int) -> None:
        self.sleep(self.retry.delay(attempt, self.rng))


def _not_installed_message(method: str, path: str, exc: BaseException) -> str:
    return (f"the cluster has no ml-commons plugin: {method} {path} answered {_reason(exc)}. Registering models "
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


# ------------------------------------------------------------------------------------------------ settings


@dataclass
class ClusterCheck:
    path: str
    settings: dict[str, Any]                  # effective flat settings: transient > persistent > defaults
    issues: list[SettingIssue] = field(default_factory=list)
    node_roles: dict[str, list[str]] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def blocking(self) -> list[SettingIssue]:
        return [issue for issue in self.issues if issue.blocking]

    def raise_for_blocking(self) -> None:
        if self.blocking:
            raise ClusterSettingsError(self.blocking, self.path)


def _truthy(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _list_setting(settings: dict, name: str) -> list[str] | None:
    value = settings.get(name)
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return [value]
        return [str(v) for v in parsed] if isinstance(parsed, list) else [value]
    indexed = sorted((int(k.rsplit(".", 1)[1]), v) for k, v in settings.items()
                     if k.startswith(name + ".") and k.rsplit(".", 1)[1].isdigit())
    return [str(v) for _, v in indexed] if indexed else None


def _flatten(prefix: str, value: Any, out: dict) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, child, out)
    else:
        out[prefix] = value


def _regex_matches(patterns: Sequence[str], url: str) -> bool:
    for pattern in patterns:
        try:
            if re.fullmatch(pattern, url):   # Java's Matcher.matches() is a full match too
                return True
        except re.error:
            continue
    return False


def check_cluster_settings(client: OpenSearch, path: str = "local", *, connector_url: str | None = None,
                           model_url: str | None = None, model_access_params: bool = False,
                           connector_access_params: bool = False, raise_on_blocking: bool = True,
                           retry: RetryPolicy | None = None, _api: _Api | None = None) -> ClusterCheck:
    """Read the cluster's ml-commons settings and say which ones block ``path``.

    ``path``: ``"local"`` (package upload through ``_register_meta`` + chunks), ``"url"`` (``_register`` with a
    model URL) or ``"remote"`` (connector + remote model; give ``connector_url`` to check it against
    ``plugins.ml_commons.trusted_connector_endpoints_regex``). ``model_access_params`` /
    ``connector_access_params``: the caller wants to pass ``access_mode``/``backend_roles``, which the cluster
    rejects unless the matching access-control setting is on. Raises :class:`ClusterSettingsError` naming every
    blocking setting and the value to set (unless ``raise_on_blocking=False``), and
    :class:`MLCommonsNotInstalledError` when the cluster has no ml-commons. Settings that cannot be read
    (HTTP 401/403 for users without cluster monitor rights) give a warning, not an error.
    """
    if path not in ("local", "url", "remote"):
        raise ValueError(f"path must be 'local', 'url' or 'remote', got {path!r}")
    api = _api or _Api(client, retry)
    check = ClusterCheck(path=path, settings={})
    try:
        answer = api.call("GET", "/_cluster/settings", params={"include_defaults": "true", "flat_settings": "true"})
    except os_errors.TransportError as exc:
        if http_status(exc) in (401, 403):
            check.warnings.append(f"cannot read cluster settings ({_reason(exc)}); settings not checked")
            return check
        raise api.fail(exc, "GET /_cluster/settings") from exc
    merged: dict[str, Any] = {}
    for section in ("defaults", "persistent", "transient"):
        flat: dict[str, Any] = {}
        _flatten("", answer.get(section) or {}, flat)
        merged.update(flat)
    check.settings = merged
    s = merged

    if not any(key.startswith(_S) for key in s):
        # Either no plugin, or settings hidden from this user: ask ml-commons itself.
        try:
            api.call("POST", f"{ML}/model_groups/_search", body={"size": 0, "query": {"match_all": {}}})
        except os_errors.TransportError as exc:
            check.warnings.append(f"ml-commons probe answered {_reason(exc)}")
        check.warnings.append("no plugins.ml_commons.* settings visible; settings not checked")
        return check

    def issue(name: str, required: Any, reason: str, blocking: bool = True) -> None:
        check.issues.append(SettingIssue(_S + name, s.get(_S + name), required, reason, blocking))

    def is_false(name: str) -> bool:
        return _truthy(s.get(_S + name)) is False

    def is_true(name: str) -> bool:
        return _truthy(s.get(_S + name)) is True

    def nodes() -> dict[str, list[str]] | None:
        if check.node_roles is None:
            try:
                answer = api.call("GET", "/_nodes", params={"filter_path": "nodes.*.name,nodes.*.roles"})
                check.node_roles = {n.get("name", node_id): list(n.get("roles") or [])
                                    for node_id, n in (answer.get("nodes") or {}).items()}
            except os_errors.TransportError as exc:
                check.warnings.append(f"cannot list node roles ({_reason(exc)}); ML-node checks skipped")
                return None
        return check.node_roles

    def no_node_with(roles: Sequence[str]) -> bool:
        known = nodes()
        return known is not None and len(known) > 0 and not any(set(r) & set(roles) for r in known.values())

    for name, why in (("native_memory_threshold", "0 stops every ML task (native memory circuit breaker)"),
                      ("jvm_heap_memory_threshold", "0 stops every ML task (JVM heap circuit breaker)"),
                      ("max_ml_task_per_node", "0 lets no ML task run on any node")):
        if str(s.get(_S + name, "")).strip() == "0":
            issue(name, 90 if "threshold" in name else 10, why)

    if path in ("local", "url"):
        if is_false("local_model.enabled"):
            issue("local_model.enabled", True, "local models are disabled: register/deploy of a package is refused")
        for name, why in (("max_model_on_node", "0 lets no model be deployed on any node"),
                          ("max_deploy_model_tasks_per_node", "0 lets no deploy task run"),
                          ("max_register_model_tasks_per_node", "0 lets no register task run")):
            if str(s.get(_S + name, "")).strip() == "0":
                issue(name, 10, why)
        if is_true("only_run_on_ml_node") and no_node_with(["ml"]):
            issue("only_run_on_ml_node", False,
                  "no node has the 'ml' role, so the deploy is refused ('No eligible node found to execute this "
                  "request'); set it to false for development, or add a node with node.roles: [ml] in production")
        elif is_false("only_run_on_ml_node"):
            roles = _list_setting(s, _S + "task_dispatcher.eligible_node_role.local_model")
            if roles and "data" not in roles and no_node_with(roles + ["ml"]):   # every cluster has data nodes
                issue("task_dispatcher.eligible_node_role.local_model", ["data", "ml"],
                      f"no node has any of the roles {roles}, so local models have nowhere to run")
    if path == "local" and not is_true("allow_registering_model_via_local_file"):
        issue("allow_registering_model_via_local_file", True,
              "uploading a model package in chunks (_register_meta + upload_chunk) is refused while it is false")
    if path == "url":
        if not is_true("allow_registering_model_via_url"):
            issue("allow_registering_model_via_url", True,
                  "registering a model from a URL is refused while it is false")
        trusted = _list_setting(s, _S + "trusted_url_regex")
        if model_url and trusted and not _regex_matches(trusted, model_url):
            issue("trusted_url_regex", re.escape(model_url), f"the model URL {model_url} does not match it")
    if path == "remote":
        if is_false("remote_inference.enabled"):
            issue("remote_inference.enabled", True,
                  "remote inference is disabled: connectors and remote models are refused")
        if connector_url:
            trusted = _list_setting(s, _S + "trusted_connector_endpoints_regex")
            if trusted is not None and not _regex_matches(trusted, connector_url):
                issue("trusted_connector_endpoints_regex", trusted + [SAGEMAKER_URL_REGEX],
                      f"the connector URL {connector_url} matches none of its regexes, so connectors/_create "
                      f"is refused ('Connector URL is not matching the trusted connector endpoint regex'); "
                      f"add {SAGEMAKER_URL_REGEX}")
        roles = _list_setting(s, _S + "task_dispatcher.eligible_node_role.remote_model")
        if roles and "data" not in roles and no_node_with(roles):
            issue("task_dispatcher.eligible_node_role.remote_model", ["data", "ml"],
                  f"no node has any of the roles {roles}, so the remote model has nowhere to be deployed")
        if connector_access_params and not is_true("connector_access_control_enabled"):
            issue("connector_access_control_enabled", True,
                  "access_mode/backend_roles for a connector are rejected while connector access control is off "
                  "(it also needs the Security plugin); or pass no connector access parameters")
    if model_access_params and not is_true("model_access_control_enabled"):
        issue("model_access_control_enabled", True,
              "access_mode/backend_roles for a model group are rejected while model access control is off "
              "(it also needs the Security plugin); or pass no access parameters")
    for found in check.issues:
        if not (raise_on_blocking and found.blocking):      # blocking ones are in the exception's message
            log.warning("cluster setting: %s", found.message)
    if raise_on_blocking:
        check.raise_for_blocking()
    return check


# ------------------------------------------------------------------------------------------------ groups & search


def model_group_name(index: str | None = None, package_name: str | None = None) -> str:
    """One model group per index: ``finetune-assets/<index>`` (the name export gives the package)."""
    if index:
        return f"finetune-assets/{index}"
    if package_name:
        return package_name
    raise ValueError("give an index or a package name to derive the model group name")


def _search(api: _Api, path: str, query: dict, size: int = 100, sort: list | None = None) -> list[dict]:
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


def _find_group(api: _Api, name: str) -> str | None:
    hits = _search(api, f"{ML}/model_groups/_search", {"bool": {"filter": [{"term": {"name.keyword": name}}]}}, 10)
    exact = [hit["_id"] for hit in hits if hit.get("name") == name]
    return exact[0] if exact else None


_GROUP_TAKEN = re.compile(r"already being used by a model group with ID: ([A-Za-z0-9_\-]+)")


def ensure_model_group(client: OpenSearch, name: str, *, description: str | None = None,
                       access_mode: str | None = None, backend_roles: Sequence[str] | None = None,
                       retry: RetryPolicy | None = None, _api: _Api | None = None) -> tuple[str, bool]:
    """The id of the model group ``name`` (found by name, else registered) and whether it was created now.

    Access parameters are sent only when given (a cluster without model access control rejects them).
    """
    api = _api or _Api(client, retry)
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
            taken = _GROUP_TAKEN.search(_error_text(exc))
            if taken:        # registered meanwhile (another run), or not found by the name.keyword search
                log.info("model group %r already exists: %s", name, taken.group(1))
                return taken.group(1), False
            if _ambiguous(exc) and attempt < api.retry.max_retries:
                api.backoff(attempt)
                continue     # the lost request may have created it: search again before re-sending
            raise api.fail(exc, f"registering model group {name!r}") from exc
        group_id = answer.get("model_group_id")
        if not group_id:
            raise MLCommonsError(f"model_groups/_register answered without model_group_id: {answer}")
        log.info("registered model group %r: %s", name, group_id)
        return group_id, True
    raise MLCommonsError(f"could not register model group {name!r}")


def _group_models(api: _Api, group_id: str, **terms: str) -> list[dict]:
    filters = [{"term": {"model_group_id": group_id}}] + [{"term": {k: v}} for k, v in terms.items()]
    query = {"bool": {"filter": filters, "must_not": [{"exists": {"field": "chunk_number"}}]}}
    return _search(api, f"{ML}/models/_search", query, 100, sort=[{"created_time": {"order": "desc"}}])


def _pick_existing(models: list[dict]) -> dict | None:
    """A DEPLOYED (or partially deployed) model first, else one that only needs a deploy."""
    for states in (USABLE_STATES, DEPLOYABLE_STATES):
        for model in models:
            if model.get("model_state") in states:
                return model
    return None


# ------------------------------------------------------------------------------------------------ tasks & cleanup


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


def _wait_task(api: _Api, task_id: str, *, what: str, timeout: float, poll_interval: float) -> dict:
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
            raise TaskFailedError(f"{what}: task {task_id} ended {state}: {error.rstrip('.')}.{_setting_hint(error)}",
                                  task)
        if time.monotonic() >= deadline:
            raise TaskFailedError(f"{what}: task {task_id} still {state} after {timeout:.0f}s", task)
        api.sleep(interval)
        interval = min(interval * 1.5, max(poll_interval, 10.0))


def _deploy(api: _Api, model_id: str, *, timeout: float, poll_interval: float) -> tuple[str | None, str, list[str]]:
    """Deploy and wait; returns (task id, final state, warnings)."""
    try:
        answer = api.call("POST", f"{ML}/models/{model_id}/_deploy")
    except os_errors.TransportError as exc:
        raise api.fail(exc, f"deploying model {model_id}") from exc
    task_id = answer.get("task_id")
    warnings: list[str] = []
    if not task_id:
        return None, "DEPLOYED", warnings
    task = _wait_task(api, task_id, what=f"deploying model {model_id}", timeout=timeout, poll_interval=poll_interval)
    if task.get("state") == "COMPLETED_WITH_ERROR":
        warnings.append(f"model {model_id} deployed on some nodes only: {_task_error(task)}")
        return task_id, "PARTIALLY_DEPLOYED", warnings
    return task_id, "DEPLOYED", warnings


def _cleanup_model(api: _Api, model_id: str, *, undeploy: bool) -> str | None:
    """Undeploy (when a deploy was started) and delete a model this attempt created; a problem text or None."""
    problems = []
    if undeploy:
        try:
            api.call("POST", f"{ML}/models/{model_id}/_undeploy")
        except os_errors.TransportError as exc:
            problems.append(f"undeploy: {_reason(exc)}")
    for attempt in range(4):
        try:
            api.call("DELETE", f"{ML}/models/{model_id}")
            log.info("deleted model %s (created by this failed attempt)", model_id)
            return None
        except os_errors.TransportError as exc:
            if http_status(exc) == 404:
                return None
            if "deploying or deployed state" in _error_text(exc) and attempt < 3:
                api.backoff(attempt)         # undeploy still spreading over the nodes
                continue
            problems.append(f"delete: {_reason(exc)}")
            break
    text = (f"model {model_id} could not be removed ({'; '.join(problems)}); remove it with "
            f"POST {ML}/models/{model_id}/_undeploy then DELETE {ML}/models/{model_id}")
    log.error(text)
    return text


@contextlib.contextmanager
def _cleanup_on_failure(api: _Api, created: dict) -> Iterator[None]:
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


def _create_adopting(api: _Api, send: Callable[[], dict], find_new: Callable[[], str | None],
                     what: str) -> dict:
    """Send a creating call; after an ambiguous failure adopt what the lost request created, if anything."""
    for attempt in range(api.retry.max_retries + 1):
        try:
            return send()
        except os_errors.TransportError as exc:
            if not (_ambiguous(exc) and attempt < api.retry.max_retries):
                raise api.fail(exc, what) from exc
            log.warning("%s: %s; checking whether it was created before retrying", what, _reason(exc))
            api.backoff(attempt)
            adopted = find_new()
            if adopted:
                log.info("%s: adopting %s, created by the request whose answer was lost", what, adopted)
                return {"model_id": adopted, "adopted": True}
    raise MLCommonsError(f"{what}: gave up after {api.retry.max_retries} retries")


# ------------------------------------------------------------------------------------------------ local package


def load_package(package_dir: str | Path, chunk_size: int = MODEL_CHUNK_SIZE_BYTES) -> ModelPackage:
    """Read and check a package folder: the zip's SHA-256, size and chunk count must match the register body."""
    directory = Path(package_dir).expanduser()
    if not directory.is_dir():
        raise PackageError(f"package folder {directory} does not exist (export the model first)")
    body_path = directory / REGISTER_BODY_FILE
    if not body_path.is_file():
        found = sorted(p.name for p in directory.iterdir())
        pair = " (an inference-free model: register its document/ and query/ packages)" \
            if {"document", "query"} <= set(found) else ""
        raise PackageError(f"no {REGISTER_BODY_FILE} in {directory}; found {found}{pair}")
    try:
        body = json.loads(body_path.read_text(encoding="utf-8"))
        manifest_path = directory / MANIFEST_FILE
        manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    except ValueError as exc:
        raise PackageError(f"unreadable JSON in {directory}: {exc}") from exc
    zip_name = (manifest.get("files") or {}).get("zip")
    zips = [directory / zip_name] if zip_name else sorted(directory.glob("*.zip"))
    if len(zips) != 1 or not zips[0].is_file():
        raise PackageError(f"expected one model zip in {directory}, found {[p.name for p in zips]}")
    zip_path = zips[0]
    missing = [k for k in ("name", "version", "model_format", "function_name", "model_content_hash_value",
                           "model_content_size_in_bytes", "total_chunks") if k not in body]
    if missing:
        raise PackageError(f"{body_path} lacks {missing}")
    size = zip_path.stat().st_size
    digest = sha256_file(zip_path)
    if digest != body["model_content_hash_value"] or size != int(body["model_content_size_in_bytes"]):
        raise PackageError(f"{zip_path.name} (sha256 {digest[:12]}..., {size} bytes) does not match "
                           f"{REGISTER_BODY_FILE} (sha256 {str(body['model_content_hash_value'])[:12]}..., "
                           f"{body['model_content_size_in_bytes']} bytes): re-export the package")
    chunks = total_chunks(size, chunk_size)
    if chunks != int(body["total_chunks"]):
        raise PackageError(f"{REGISTER_BODY_FILE} says total_chunks={body['total_chunks']} but a {size}-byte zip in "
                           f"{chunk_size}-byte chunks makes {chunks}")
    return ModelPackage(directory=directory, zip_path=zip_path, register_body=body, manifest=manifest, sha256=digest,
                        size_bytes=size, total_chunks=chunks, function_name=str(body["function_name"]))


def register_local_package(client: OpenSearch, package_dir: str | Path, *, index: str | None = None,
                           group_name: str | None = None, access_mode: str | None = None,
                           backend_roles: Sequence[str] | None = None, deploy: bool = True,
                           check_settings: bool = True, timeout: float = 900.0, poll_interval: float = 2.0,
                           chunk_size: int = MODEL_CHUNK_SIZE_BYTES, retry: RetryPolicy | None = None,
                           sleep: Callable[[float], None] = time.sleep) -> RegistrationResult:
    """Upload an exported package as a local model in the index's model group, deploy it, return its id.

    Idempotent: a model in the group with the same ``model_content_hash_value`` is reused (deployed again if it
    is only registered) instead of uploading a duplicate; a changed zip becomes a new version in the same group.
    A model this call creates is undeployed and deleted when a later step fails.
    """
    package = load_package(package_dir, chunk_size)
    api = _Api(client, retry, sleep)
    notes: list[str] = []
    if check_settings:
        notes += check_cluster_settings(client, "local", model_access_params=bool(access_mode or backend_roles),
                                        _api=api).warnings
    name = group_name or model_group_name(index, package.register_body["name"])
    group_id, _ = ensure_model_group(client, name, access_mode=access_mode, backend_roles=backend_roles, _api=api)

    same = _group_models(api, group_id, model_content_hash_value=package.sha256)
    for stale in (m for m in same if m.get("model_state") == "REGISTERING"):
        notes.append(f"model {stale['_id']} holds an interrupted upload of this package (REGISTERING); "
                     f"delete it with DELETE {ML}/models/{stale['_id']}")
        log.warning("%s", notes[-1])
    existing = _pick_existing(same)
    if existing and (existing["model_state"] in USABLE_STATES or not deploy):
        log.info("model %s in group %s already has this package (sha256 %s..., %s): reused",
                 existing["_id"], name, package.sha256[:12], existing["model_state"])
        return RegistrationResult(existing["_id"], group_id, package.function_name, True, existing["model_state"],
                                  warnings=tuple(notes))
    if existing:     # registered earlier but not deployed: deploy it, no second upload
        log.info("model %s has this package but is %s: deploying it", existing["_id"], existing["model_state"])
        task_id, state, warnings = _deploy(api, existing["_id"], timeout=timeout, poll_interval=poll_interval)
        return RegistrationResult(existing["_id"], group_id, package.function_name, True, state,
                                  deploy_task_id=task_id, warnings=tuple(notes + warnings))

    known = {model["_id"] for model in same}
    body = {k: v for k, v in package.register_body.items() if k != "url"}
    body["model_group_id"] = group_id
    created: dict[str, Any] = {}
    with _cleanup_on_failure(api, created):
        answer = _create_adopting(
            api, lambda: api.call("POST", f"{ML}/models/_register_meta", body=body, creates=True),
            lambda: next((m["_id"] for m in _group_models(api, group_id, model_content_hash_value=package.sha256)
                          if m["_id"] not in known), None),
            f"registering the metadata of {package.zip_path.name}")
        model_id = answer.get("model_id")
        if not model_id:
            raise MLCommonsError(f"models/_register_meta answered without model_id: {answer}")
        created["model_id"] = model_id
        log.info("model %s created in group %s; uploading %d chunk(s), %d bytes", model_id, name,
                 package.total_chunks, package.size_bytes)
        with package.zip_path.open("rb") as handle:
            for number in range(package.total_chunks):
                chunk = handle.read(chunk_size)
                try:
                    api.call("POST", f"{ML}/models/{model_id}/upload_chunk/{number}", body=chunk, quiet=True)
                except os_errors.TransportError as exc:
                    raise api.fail(exc, f"uploading chunk {number + 1}/{package.total_chunks} of model {model_id}") \
                        from exc
        if not deploy:
            return RegistrationResult(model_id, group_id, package.function_name, False, "REGISTERED",
                                      warnings=tuple(notes))
        created["deployed"] = True
        task_id, state, warnings = _deploy(api, model_id, timeout=timeout, poll_interval=poll_interval)
    log.info("model %s deployed (%s)", model_id, state)
    return RegistrationResult(model_id, group_id, package.function_name, False, state, deploy_task_id=task_id,
                              warnings=tuple(notes + warnings))


def register_inference_free_package(client: OpenSearch, package_dir: str | Path,
                                    **kwargs: Any) -> tuple[RegistrationResult, RegistrationResult]:
    """Both halves of an inference-free sparse model, each as a local model in the index's model group:
    ``document/`` (SPARSE_ENCODING, for ingest) and ``query/`` (SPARSE_TOKENIZE, for ``neural_sparse`` queries).
    Keyword arguments go to :func:`register_local_package`; re-runs reuse both models."""
    directory = Path(package_dir).expanduser()
    for part, expected in (("document", SPARSE), ("query", TOKENIZE)):
        found = load_package(directory / part, kwargs.get("chunk_size", MODEL_CHUNK_SIZE_BYTES)).function_name
        if found != expected:
            raise PackageError(f"{directory / part} holds a {found} package; an inference-free model's {part}/ "
                               f"package must be {expected}")
    return (register_local_package(client, directory / "document", **kwargs),
            register_local_package(client, directory / "query", **kwargs))


# ------------------------------------------------------------------------------------------------ remote (SageMaker)


@dataclass(frozen=True)
class SageMakerEndpoint:
    """A SageMaker real-time endpoint serving embeddings; ``repr`` never shows keys.

    Dense (TEXT_EMBEDDING): the endpoint takes a JSON list of strings and returns a list of vectors (what
    ml-commons' default pre/post-processing functions expect). Sparse (SPARSE_ENCODING): same input, and it
    returns a list of ``{token: weight}`` objects, which ml-commons passes through as ``response`` for the
    ``sparse_encoding`` processor and ``neural_sparse`` query (there is no built-in sparse post-processor).
    Credentials: ``role_arn`` (an IAM role the OpenSearch domain may assume) or access keys.
    """

    endpoint_name: str
    region: str
    function_name: str = DENSE
    role_arn: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://runtime.sagemaker.{self.region}.amazonaws.com/endpoints/{self.endpoint_name}/invocations"

    def credential(self) -> dict[str, str]:
        if self.role_arn and not self.access_key:
            return {"roleArn": self.role_arn}
        if self.access_key and self.secret_key:
            keys = {"access_key": self.access_key, "secret_key": self.secret_key}
            if self.session_token:
                keys["session_token"] = self.session_token
            return keys
        raise ValueError("a SageMaker connector needs role_arn, or access_key and secret_key")


def sagemaker_connector_body(endpoint: SageMakerEndpoint, *, name: str, description: str | None = None) -> dict:
    """The ``connectors/_create`` body (ml-commons' SageMaker blueprint, protocol aws_sigv4)."""
    if endpoint.function_name not in (DENSE, SPARSE):
        raise ValueError(f"function_name must be {DENSE} or {SPARSE}, got {endpoint.function_name!r}")
    action: dict[str, Any] = {
        "action_type": "predict",
        "method": "POST",
        "headers": {"content-type": "application/json"},
        "url": endpoint.url,
        "request_body": "${parameters.input}",
        "pre_process_function": PRE_PROCESS_DEFAULT,
    }
    if endpoint.function_name == DENSE:
        action["post_process_function"] = POST_PROCESS_DEFAULT
    return {
        "name": name,
        "description": description or f"SageMaker endpoint {endpoint.endpoint_name} ({endpoint.function_name})",
        "version": "1",
        "protocol": "aws_sigv4",
        "credential": endpoint.credential(),
        "parameters": {"region": endpoint.region, "service_name": "sagemaker"},
        "actions": [action],
    }


def _predict_url(connector: dict) -> str | None:
    for action in connector.get("actions") or []:
        if str(action.get("action_type", "")).lower() == "predict":
            return action.get("url")
    return None


def ensure_connector(client: OpenSearch, body: dict, *, retry: RetryPolicy | None = None,
                     _api: _Api | None = None) -> tuple[str, bool]:
    """The id of the connector named ``body['name']`` (reused when it calls the same URL, else created) and
    whether it was created now. A connector of that name calling another URL is an error, not reused."""
    api = _api or _Api(client, retry)
    name, url = body["name"], _predict_url(body)
    for attempt in range(api.retry.max_retries + 1):
        hits = _search(api, f"{ML}/connectors/_search",
                       {"bool": {"filter": [{"term": {"name.keyword": name}}]}}, 10)
        same_name = [hit for hit in hits if hit.get("name") == name]
        for hit in same_name:
            if _predict_url(hit) == url:
                log.info("connector %r exists: %s (credentials are not compared; delete it to change them)",
                         name, hit["_id"])
                return hit["_id"], False
        if same_name:
            raise MLCommonsError(f"connector {name!r} ({same_name[0]['_id']}) calls {_predict_url(same_name[0])}, "
                                 f"not {url}: choose another connector name or delete that connector")
        try:
            answer = api.call("POST", f"{ML}/connectors/_create", body=body, creates=True, quiet=True)
        except os_errors.TransportError as exc:
            if _ambiguous(exc) and attempt < api.retry.max_retries:
                api.backoff(attempt)
                continue
            raise api.fail(exc, f"creating connector {name!r}") from exc
        connector_id = answer.get("connector_id")
        if not connector_id:
            raise MLCommonsError(f"connectors/_create answered without connector_id: {answer}")
        log.info("created connector %r: %s (%s)", name, connector_id, url)
        return connector_id, True
    raise MLCommonsError(f"could not create connector {name!r}")


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
    api = _Api(client, retry, sleep)
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
    same = [m for m in _group_models(api, group_id, algorithm="REMOTE") if m.get("connector_id") == connector_id]
    existing = _pick_existing(same)
    if existing and existing["model_state"] in USABLE_STATES:
        log.info("remote model %s (connector %s) is %s: reused", existing["_id"], connector_id, existing["model_state"])
        return RegistrationResult(existing["_id"], group_id, endpoint.function_name, True, existing["model_state"],
                                  connector_id=connector_id, warnings=tuple(notes))
    if existing:
        task_id, state, warnings = _deploy(api, existing["_id"], timeout=timeout, poll_interval=poll_interval)
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
    with _cleanup_on_failure(api, created):
        answer = _create_adopting(
            api, lambda: api.call("POST", f"{ML}/models/_register", body=register, creates=True),
            lambda: next((m["_id"] for m in _group_models(api, group_id, algorithm="REMOTE")
                          if m.get("connector_id") == connector_id and m["_id"] not in known), None),
            f"registering the remote model for connector {connector_id}")
        model_id = answer.get("model_id")
        if not model_id and answer.get("task_id"):
            task = _wait_task(api, answer["task_id"], what="registering the remote model", timeout=timeout,
                              poll_interval=poll_interval)
            model_id = task.get("model_id")
        if not model_id:
            raise MLCommonsError(f"models/_register answered without a model id: {answer}")
        created["model_id"] = model_id
        created["deployed"] = True
        task_id, state, warnings = _deploy(api, model_id, timeout=timeout, poll_interval=poll_interval)
    log.info("remote model %s deployed (%s) through connector %s", model_id, state, connector_id)
    return RegistrationResult(model_id, group_id, endpoint.function_name, False, state, connector_id=connector_id,
                              deploy_task_id=task_id, warnings=tuple(notes + warnings))


# ------------------------------------------------------------------------------------------------ verification


def _dense_dimension(api: _Api, model_id: str, probe_text: str) -> int:
    try:
        model = api.call("GET", f"{ML}/models/{model_id}")
    except os_errors.TransportError as exc:
        raise VerificationError(f"GET {ML}/models/{model_id} failed: {_reason(exc)}") from exc
    dimension = (model.get("model_config") or {}).get("embedding_dimension")
    if dimension:
        return int(dimension)
    try:   # a remote model has no model_config: ask it for one embedding
        answer = api.call("POST", f"{ML}/models/{model_id}/_predict", body={"text_docs": [probe_text]})
        output = answer["inference_results"][0]["output"][0]
        return int(output.get("shape", [len(output.get("data", []))])[-1])
    except (os_errors.TransportError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise VerificationError(f"cannot tell the embedding dimension of model {model_id} (no model_config, and "
                                f"_predict gave {exc}); pass dimension=") from exc


def verify_neural_search(client: OpenSearch, model_id: str, function_name: str, texts: Sequence[str], query: str,
                         *, dimension: int | None = None, query_model_id: str | None = None,
                         retry: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep) -> str:
    """Index ``texts`` through an ingest pipeline that uses the model, run one ``neural`` (TEXT_EMBEDDING) or
    ``neural_sparse`` (SPARSE_ENCODING) query, and return the top hit's id (``doc-<i>`` for ``texts[i]``).

    ``query_model_id``: a SPARSE_TOKENIZE model that encodes the query instead (inference-free sparse search:
    documents through ``model_id``, queries through the tokenizer's IDF weights).
    The test index and pipeline have unique names and are deleted afterwards, also when something fails.
    """
    if function_name not in (DENSE, SPARSE):
        raise ValueError(f"function_name must be {DENSE} or {SPARSE}, got {function_name!r}")
    if query_model_id and function_name != SPARSE:
        raise ValueError(f"query_model_id (a {TOKENIZE} model) goes with a {SPARSE} document model only")
    if not texts:
        raise ValueError("give at least one text to index")
    api = _Api(client, retry, sleep)
    suffix = uuid.uuid4().hex[:10]
    index = f"finetune-assets-verify-{suffix}"
    pipeline = f"finetune-assets-verify-{suffix}"
    if function_name == DENSE:
        dimension = dimension or _dense_dimension(api, model_id, texts[0])
        processor = {"text_embedding": {"model_id": model_id, "field_map": {"text": "embedding"}}}
        vector_field = {"type": "knn_vector", "dimension": dimension,
                        "method": {"name": "hnsw", "engine": "lucene", "space_type": "cosinesimil"}}
        settings = {"index.knn": True}
        search = {"neural": {"embedding": {"query_text": query, "model_id": model_id, "k": len(texts)}}}
        field_name = "embedding"
    else:
        processor = {"sparse_encoding": {"model_id": model_id, "field_map": {"text": "sparse"}}}
        vector_field = {"type": "rank_features"}
        settings = {}
        search = {"neural_sparse": {"sparse": {"query_text": query, "model_id": query_model_id or model_id}}}
        field_name = "sparse"
    made_pipeline = made_index = False
    try:
        step = f"PUT /_ingest/pipeline/{pipeline}"
        api.call("PUT", f"/_ingest/pipeline/{pipeline}",
                 body={"description": f"finetune-assets check of model {model_id}", "processors": [processor]})
        made_pipeline = True
        step = f"PUT /{index}"
        api.call("PUT", f"/{index}", body={
            "settings": {**settings, "index.default_pipeline": pipeline, "number_of_shards": 1,
                         "number_of_replicas": 0},
            "mappings": {"properties": {"text": {"type": "text"}, field_name: vector_field}},
        })
        made_index = True
        step = "POST /_bulk"
        lines = []
        for number, text in enumerate(texts):
            lines.append(json.dumps({"index": {"_index": index, "_id": f"doc-{number}"}}))
            lines.append(json.dumps({"text": text}))
        answer = api.call("POST", "/_bulk", body="\n".join(lines) + "\n", params={"refresh": "true"})
        if answer.get("errors"):
            failed = [item for item in answer.get("items", []) if (item.get("index") or {}).get("error")]
            error = failed[0]["index"]["error"] if failed else {}
            reason = error.get("reason", error) if isinstance(error, dict) else error
            raise VerificationError(f"{len(failed)} of {len(texts)} documents failed in the ingest pipeline "
                                    f"(model {model_id}): {reason}.{_setting_hint(str(reason))}")
        step = f"POST /{index}/_search"
        result = api.call("POST", f"/{index}/_search", body={"size": len(texts), "query": search,
                                                              "_source": {"excludes": [field_name]}})
        hits = (result.get("hits") or {}).get("hits") or []
        if not hits:
            raise VerificationError(f"the {next(iter(search))} query with model {model_id} found nothing")
        top = hits[0]["_id"]
        log.info("neural search check with model %s: top hit %s for %r", model_id, top, query)
        return top
    except os_errors.TransportError as exc:
        raise VerificationError(f"{step} failed: {_reason(exc).rstrip('.')}.{_setting_hint(_error_text(exc))}") \
            from exc
    finally:
        if made_index:
            with contextlib.suppress(os_errors.TransportError):
                api.call("DELETE", f"/{index}")
        if made_pipeline:
            with contextlib.suppress(os_errors.TransportError):
                api.call("DELETE", f"/_ingest/pipeline/{pipeline}")


# ------------------------------------------------------------------------------------------------ CLI


def _client_for(url: str, username: str | None, password: str | None, verify_certs: bool,
                aws_region: str | None, aws_service: str) -> OpenSearch:
    try:
        from finetune_assets.clients.index_dump import make_client
    except ImportError:   # pragma: no cover - index_dump ships with this package
        if aws_region:
            raise
        return OpenSearch(hosts=[url], http_auth=(username, password) if username else None,
                          verify_certs=verify_certs, ssl_show_warn=verify_certs, timeout=120)
    return make_client(url, username=username, password=password, aws_region=aws_region, aws_service=aws_service,
                       verify_certs=verify_certs, timeout=120.0)


def _redact(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//", url)


def register_main(argv: Sequence[str] | None = None) -> int:
    """``finetune-assets register PACKAGE_DIR --opensearch-url URL ...``: prints the model id on stdout."""
    parser = argparse.ArgumentParser(
        prog="finetune-assets register",
        description="Upload an exported model package to OpenSearch ml-commons (one model group per index), "
                    "deploy it and print its model id. Re-running with the same package reuses the model.")
    parser.add_argument("package_dir", metavar="PACKAGE_DIR", help="folder with the zip, ml_commons_register.json "
                                                                   "and package.json (the model_package asset)")
    parser.add_argument("--opensearch-url", default=os.environ.get("OPENSEARCH_URL"),
                        help="https://host:9200 (default: $OPENSEARCH_URL)")
    parser.add_argument("--index", help="index the model was tuned for: the model group is finetune-assets/INDEX")
    parser.add_argument("--username", help=f"basic-auth user; the password comes from ${PASSWORD_ENV}")
    parser.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate")
    parser.add_argument("--aws-region", help="sign requests with AWS SigV4 (Amazon OpenSearch Service)")
    parser.add_argument("--aws-service", default="es", choices=("es", "aoss"))
    parser.add_argument("--group-name", help="model group name (default: from --index or the package name)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the deploy task")
    parser.add_argument("--skip-settings-check", action="store_true",
                        help="do not read _cluster/settings first (users without cluster monitor rights)")
    parser.add_argument("-v", "--verbose", action="store_true")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not args.opensearch_url:
        parser.print_usage(sys.stderr)
        print("finetune-assets register: error: --opensearch-url (or OPENSEARCH_URL) is required", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s")
    password = os.environ.get(PASSWORD_ENV) if args.username else None
    if args.username and password is None:
        print(f"finetune-assets register: error: set {PASSWORD_ENV} for user {args.username!r}", file=sys.stderr)
        return 2
    try:
        client = _client_for(args.opensearch_url, args.username, password, not args.insecure, args.aws_region,
                             args.aws_service)
        log.info("registering %s on %s", args.package_dir, _redact(args.opensearch_url))
        result = register_local_package(client, args.package_dir, index=args.index, group_name=args.group_name,
                                        check_settings=not args.skip_settings_check, timeout=args.timeout)
    except PackageError as exc:
        print(f"finetune-assets register: {exc}", file=sys.stderr)
        return 2
    except (MLCommonsError, ValueError) as exc:
        print(f"finetune-assets register: {exc}", file=sys.stderr)
        return 1
    for warning in result.warnings:
        log.warning("%s", warning)
    log.info("model %s (%s, group %s)", result.model_id, "reused" if result.reused else "registered now",
             result.model_group_id)
    print(result.model_id)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(register_main())
