"""The errors registration raises, each saying which call failed, why, and what to change."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


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


class UnknownProcessorError(MLCommonsError):
    """The cluster does not know a processor of the pipeline body (score-ranker-processor before OpenSearch 2.19)."""


class PruningUnsupportedError(MLCommonsError):
    """The cluster's sparse_encoding processor has no prune_type / prune_ratio (before OpenSearch 2.19)."""


class VerificationError(MLCommonsError):
    """The neural-search round trip with the registered model did not work."""


class ClusterUnreachableError(MLCommonsError):
    """No connection to the cluster at all (refused, unknown host, TLS failure or timeout)."""


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
