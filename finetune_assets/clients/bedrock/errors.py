"""The errors Bedrock batch generation raises; a failed or timed-out job says how to resume."""
from __future__ import annotations

from collections.abc import Sequence


class BedrockBatchError(RuntimeError):
    """Base class for errors raised by this module."""


class UnsupportedModelError(BedrockBatchError, ValueError):
    pass


class BedrockBatchJobFailed(BedrockBatchError):
    """A batch job ended Failed, Stopped or Expired. The job's own ``message`` is in the text."""

    def __init__(self, job_arn: str, status: str, message: str | None, *, job_name: str = "",
                 other_job_arns: Sequence[str] = ()):
        self.job_arn, self.status, self.message, self.job_name = job_arn, status, message, job_name
        self.other_job_arns = list(other_job_arns)
        text = f"Bedrock batch job {job_name or job_arn} ({job_arn}) ended {status}: {message or 'no message given'}."
        if status == "Expired":
            text += " It did not finish within its timeout (timeoutDurationInHours); resubmit or raise the timeout."
        text += " To start it again, change the input or idempotency_salt (the same corpus and settings map to the " \
                "same clientRequestToken and job name)."
        if self.other_job_arns:
            text += f" Other jobs of this run keep running; re-attach to them with existing_job_arns=" \
                    f"{self.other_job_arns}."
        super().__init__(text)


class BedrockBatchTimeout(BedrockBatchError, TimeoutError):
    def __init__(self, job_arns: Sequence[str], waited_s: float):
        self.job_arns = list(job_arns)
        super().__init__(f"Bedrock batch jobs still running after {waited_s:.0f} s: {self.job_arns}. They keep running "
                         f"in Bedrock; re-attach later with existing_job_arns.")
