"""Batch quotas, generation settings, job options and polling/retry settings for Bedrock query generation.

Quota defaults are the documented defaults for Claude and Nova models ("Amazon Bedrock service quotas",
https://docs.aws.amazon.com/general/latest/gr/bedrock.html#limits_bedrock); accounts can have other values, so
they are a parameter.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

QUOTA_SOURCE_URL = "https://docs.aws.amazon.com/general/latest/gr/bedrock.html#limits_bedrock"


@dataclass(frozen=True)
class BatchQuotas:
    """Batch inference quotas. Defaults: the documented defaults for Claude 3/3.5 and Nova V1 models.

    Source: Amazon Bedrock service quotas, https://docs.aws.amazon.com/general/latest/gr/bedrock.html#limits_bedrock
    ("Minimum number of records per batch inference job" 100, "Records per batch inference job" 50,000,
    "Records per input file per batch inference job" 50,000, "Batch inference input file size (in GB)" 1,
    "Batch inference job size (in GB)" 5 (100 for Nova Pro), "Sum of in-progress and submitted batch inference
    jobs using a base model" 20). GB is taken as 10^9 bytes, the safe reading. Check Service Quotas for your
    account: some of these are adjustable and they differ per model.
    """

    min_records_per_job: int = 100
    max_records_per_job: int = 50_000
    max_records_per_file: int = 50_000
    max_file_bytes: int = 1_000_000_000
    max_job_bytes: int = 5_000_000_000
    max_concurrent_jobs: int = 20

    def __post_init__(self) -> None:
        if self.min_records_per_job < 1 or self.max_concurrent_jobs < 1:
            raise ValueError("min_records_per_job and max_concurrent_jobs must be at least 1")
        if min(self.max_records_per_job, self.max_records_per_file) < 2 * self.min_records_per_job:
            raise ValueError("the per-job and per-file record maxima must be at least twice the per-job minimum")

    @property
    def records_per_part(self) -> int:
        return min(self.max_records_per_job, self.max_records_per_file)

    @property
    def bytes_per_part(self) -> int:
        return min(self.max_file_bytes, self.max_job_bytes)  # one input file per job

    def as_dict(self) -> dict:
        return {"min_records_per_job": self.min_records_per_job, "max_records_per_job": self.max_records_per_job,
                "max_records_per_file": self.max_records_per_file, "max_file_bytes": self.max_file_bytes,
                "max_job_bytes": self.max_job_bytes, "max_concurrent_jobs": self.max_concurrent_jobs,
                "source": QUOTA_SOURCE_URL}


DEFAULT_QUOTAS = BatchQuotas()


@dataclass(frozen=True)
class GenerationSettings:
    max_tokens: int = 512
    temperature: float | None = 0.7
    top_p: float | None = None  # newer Claude models refuse temperature and top_p together: set one
    stop_sequences: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "stop_sequences": list(self.stop_sequences)}


@dataclass(frozen=True)
class BatchJobOptions:
    """CreateModelInvocationJob options. ``role_arn``: the Bedrock batch service role (reads input, writes output)."""

    role_arn: str
    timeout_hours: int | None = None          # 24..168; Bedrock's default (24 h) when None
    vpc_subnet_ids: tuple[str, ...] = ()
    vpc_security_group_ids: tuple[str, ...] = ()
    output_kms_key_id: str | None = None      # outputDataConfig.s3OutputDataConfig.s3EncryptionKeyId
    s3_sse: str = "AES256"                    # SSE for the uploaded inputs: AES256 or aws:kms
    s3_kms_key_id: str | None = None          # with s3_sse="aws:kms"
    tags: Mapping[str, str] = field(default_factory=dict)  # needs bedrock:TagResource when set

    def __post_init__(self) -> None:
        if self.timeout_hours is not None and not 24 <= self.timeout_hours <= 168:
            raise ValueError(f"timeout_hours must be between 24 and 168 (got {self.timeout_hours})")
        if bool(self.vpc_subnet_ids) != bool(self.vpc_security_group_ids):
            raise ValueError("a VPC config needs both subnet ids and security group ids")
        if self.s3_sse not in ("AES256", "aws:kms"):
            raise ValueError(f"s3_sse must be AES256 or aws:kms (got {self.s3_sse!r})")


@dataclass(frozen=True)
class PollSettings:
    initial_interval_s: float = 30.0
    max_interval_s: float = 300.0
    backoff: float = 1.5
    max_wait_s: float | None = None  # None: the job timeout (or 24 h) plus 2 h of queueing


@dataclass(frozen=True)
class ConverseRetry:
    max_attempts: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
