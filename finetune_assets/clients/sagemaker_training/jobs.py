"""Find, create, poll and stop training jobs, re-attaching to a job of the same inputs instead of duplicating it."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from finetune_assets.clients.sagemaker_training.aws import is_not_found
from finetune_assets.clients.sagemaker_training.errors import (
    SageMakerTrainingError,
    TrainingJobFailed,
    TrainingJobTimeout,
)
from finetune_assets.clients.sagemaker_training.naming import attempt_name, job_console_url

logger = logging.getLogger(__name__)

RUNNING_STATES = frozenset({"InProgress", "Stopping"})
ATTACHABLE_STATES = frozenset({"InProgress", "Completed"})
TERMINAL_STATES = frozenset({"Completed", "Failed", "Stopped", "Deleting"})


@dataclass(frozen=True)
class PollSettings:
    """DescribeTrainingJob backoff: ``initial_s`` after a change, x ``factor`` per unchanged poll, up to ``max_s``."""

    initial_s: float = 15.0
    max_s: float = 120.0
    factor: float = 1.5
    timeout_s: float | None = None  # None: wait as long as SageMaker's own MaxRuntime/MaxWait allow


def _already_exists(error) -> bool:
    info = error.response.get("Error", {})
    message = info.get("Message", "").lower()
    return info.get("Code") == "ResourceInUse" or "already exists" in message or "must be unique" in message


def describe_job(sagemaker, job_name: str) -> dict | None:
    from botocore.exceptions import ClientError

    try:
        return sagemaker.describe_training_job(TrainingJobName=job_name)
    except ClientError as error:
        if is_not_found(error):
            return None
        raise


@dataclass
class JobResolution:
    job_name: str
    existing: dict | None  # the description of a job to re-attach to; None: create job_name
    previous: list[tuple[str, str]] = field(default_factory=list)  # (name, status) of earlier ended attempts

    @property
    def attach(self) -> bool:
        return self.existing is not None


def resolve_job(sagemaker, base_name: str, *, max_attempts: int = 20) -> JobResolution:
    """Find the job to use for ``base_name``: an InProgress/Completed attempt to re-attach to, or the next free name.

    SageMaker job names are unique per account and region forever, so a Failed or Stopped attempt moves on to
    ``<base>-r2``, ``<base>-r3``, ... (one DescribeTrainingJob per existing attempt).
    """
    previous: list[tuple[str, str]] = []
    for attempt in range(1, max_attempts + 1):
        name = attempt_name(base_name, attempt)
        description = describe_job(sagemaker, name)
        if description is None:
            return JobResolution(name, None, previous)
        status = description["TrainingJobStatus"]
        if status in ATTACHABLE_STATES:
            return JobResolution(name, description, previous)
        previous.append((name, status))
    raise SageMakerTrainingError(f"{max_attempts} attempts of {base_name} already ended without success "
                                 f"({previous[-3:]}...); change the inputs or the job name prefix")


def create_job(sagemaker, request: Mapping[str, Any]) -> tuple[str, dict | None]:
    """CreateTrainingJob; returns (arn, None), or (arn, description) when a concurrent run created it first."""
    from botocore.exceptions import ClientError

    try:
        return sagemaker.create_training_job(**request)["TrainingJobArn"], None
    except ClientError as error:
        if not _already_exists(error):
            raise
        description = describe_job(sagemaker, request["TrainingJobName"])
        if description is None:
            raise
        return description["TrainingJobArn"], description


def stop_job(sagemaker, job_name: str) -> bool:
    """StopTrainingJob; False when the job had already ended (SageMaker answers ValidationException)."""
    from botocore.exceptions import ClientError

    try:
        sagemaker.stop_training_job(TrainingJobName=job_name)
        return True
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound"):
            logger.warning("StopTrainingJob %s: %s", job_name, error.response["Error"].get("Message"))
            return False
        raise


def _transition_text(transition: Mapping[str, Any]) -> str:
    message = transition.get("StatusMessage")
    return f"{transition.get('Status')}: {message}" if message else str(transition.get("Status"))


def wait_for_job(sagemaker, job_name: str, *, poll: PollSettings = PollSettings(),
                 on_transition: Callable[[str], None] | None = None,
                 on_status: Callable[[dict], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 first: dict | None = None) -> dict:
    """Poll DescribeTrainingJob until the job ends; return the Completed description or raise TrainingJobFailed.

    Every new or updated entry of ``SecondaryStatusTransitions`` goes to ``on_transition`` (as "Status: message").
    The interval grows by ``factor`` while nothing changes and drops back to ``initial_s`` when something does.
    Interrupts (KeyboardInterrupt, the orchestrator's own) raised by ``sleep`` propagate unchanged.
    """
    started, interval = clock(), poll.initial_s
    seen: dict[int, tuple] = {}
    description = first
    while True:
        if description is None:
            description = sagemaker.describe_training_job(TrainingJobName=job_name)
        changed = False
        for index, transition in enumerate(description.get("SecondaryStatusTransitions") or []):
            key = (transition.get("Status"), transition.get("StatusMessage"))
            if seen.get(index) != key:
                seen[index] = key
                changed = True
                if on_transition is not None:
                    on_transition(_transition_text(transition))
        if on_status is not None:
            on_status(description)
        status = description["TrainingJobStatus"]
        if status == "Completed":
            return description
        if status in TERMINAL_STATES:
            raise TrainingJobFailed(job_name, status, description.get("FailureReason"),
                                    secondary_status=description.get("SecondaryStatus", ""),
                                    job_arn=description.get("TrainingJobArn", ""))
        if poll.timeout_s is not None and clock() - started >= poll.timeout_s:
            raise TrainingJobTimeout(job_name, clock() - started)
        interval = poll.initial_s if changed else min(poll.max_s, interval * poll.factor)
        sleep(interval)
        description = None


def job_summary(description: Mapping[str, Any], region: str) -> dict[str, Any]:
    """Plain values worth recording about a finished job."""
    name = description.get("TrainingJobName", "")
    summary = {
        "sagemaker_training_job": name,
        "sagemaker_training_job_arn": description.get("TrainingJobArn", ""),
        "sagemaker_status": description.get("TrainingJobStatus", ""),
        "sagemaker_console_url": job_console_url(region, name),
        "sagemaker_model_artifacts": (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts", ""),
    }
    for key, label in (("TrainingTimeInSeconds", "sagemaker_training_seconds"),
                       ("BillableTimeInSeconds", "sagemaker_billable_seconds")):
        if description.get(key) is not None:
            summary[label] = int(description[key])
    resource = description.get("ResourceConfig") or {}
    if resource:
        summary["sagemaker_instances"] = f"{resource.get('InstanceCount', 1)} x {resource.get('InstanceType', '?')}"
    return summary


def iter_transitions(description: Mapping[str, Any]) -> Iterable[str]:
    return (_transition_text(t) for t in description.get("SecondaryStatusTransitions") or [])
