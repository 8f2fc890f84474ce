"""The errors SageMaker training raises: limits broken before any call, and jobs that failed or ran too long."""
from __future__ import annotations


class SageMakerTrainingError(RuntimeError):
    """Base class for errors raised by this module."""


class SageMakerLimitError(SageMakerTrainingError, ValueError):
    """A request would break a CreateTrainingJob limit; raised before any AWS call."""


class TrainingJobFailed(SageMakerTrainingError):
    """A training job ended Failed, Stopped or Deleting. ``failure_reason`` is SageMaker's text, verbatim."""

    def __init__(self, job_name: str, status: str, failure_reason: str | None, *, secondary_status: str = "",
                 job_arn: str = ""):
        self.job_name, self.status, self.failure_reason = job_name, status, failure_reason
        self.secondary_status, self.job_arn = secondary_status, job_arn
        detail = f" ({secondary_status})" if secondary_status and secondary_status != status else ""
        text = f"SageMaker training job {job_name} ended {status}{detail}"
        text += f": {failure_reason}" if failure_reason else " (no FailureReason given)"
        if status == "Failed":
            text += ". Re-running with the same inputs starts a new attempt (job name suffix -rN)."
        super().__init__(text)


class TrainingJobTimeout(SageMakerTrainingError, TimeoutError):
    def __init__(self, job_name: str, waited_s: float):
        self.job_name = job_name
        super().__init__(f"SageMaker training job {job_name} still running after {waited_s:.0f} s; it keeps "
                         "running in SageMaker; a re-run with the same inputs re-attaches to it")
