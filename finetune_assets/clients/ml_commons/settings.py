"""Read the cluster's ml-commons settings and name each one that blocks a registration path, with its fix."""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from finetune_assets.clients.ml_commons.api import ML, SAGEMAKER_URL_REGEX, Api, describe_error
from finetune_assets.clients.ml_commons.api import SETTINGS_PREFIX as _S
from finetune_assets.clients.ml_commons.errors import ClusterSettingsError, SettingIssue
from finetune_assets.clients.retry import RetryPolicy, http_status

log = logging.getLogger(__name__)


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
                           retry: RetryPolicy | None = None, _api: Api | None = None) -> ClusterCheck:
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
    api = _api or Api(client, retry)
    check = ClusterCheck(path=path, settings={})
    try:
        answer = api.call("GET", "/_cluster/settings", params={"include_defaults": "true", "flat_settings": "true"})
    except os_errors.TransportError as exc:
        if http_status(exc) in (401, 403):
            check.warnings.append(f"cannot read cluster settings ({describe_error(exc)}); settings not checked")
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
            check.warnings.append(f"ml-commons probe answered {describe_error(exc)}")
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
                check.warnings.append(f"cannot list node roles ({describe_error(exc)}); ML-node checks skipped")
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
