"""Synthetic-query generation with Amazon Bedrock batch inference (boto3 only; no Dagster import).

One record per document goes to Bedrock: ``{"recordId": <doc id>, "modelInput": <InvokeModel body>}``. The body
is built for the model family picked from the model id (Anthropic Claude Messages API, Amazon Nova Messages
API). The flow, and every AWS call it makes:

1. ``prepare``: build the JSONL records and split them into parts that respect the batch quotas (no AWS call).
2. ``upload``: S3 ``PutObject`` (through ``upload_file``, with SSE) to
   ``<s3 base>/<index>/bedrock_batch_outputs/input/part-NNNNN.jsonl``; one part is one job.
3. ``run_jobs``: Bedrock ``CreateModelInvocationJob`` per part, with a deterministic ``clientRequestToken`` and job
   name (same corpus + settings = same token, so a retried step never starts a second job), then
   ``GetModelInvocationJob`` with backoff until every job ends. ``on_job_created(arn)`` fires as soon as an ARN
   exists; ARNs recorded that way can be given back (``existing_job_arns``) to re-attach instead of creating
   jobs again. A name conflict is resolved with ``ListModelInvocationJobs`` (the job already exists: attach).
4. ``read_job_outputs``: S3 ``ListObjectsV2`` + ``GetObject`` of ``<output uri>/<job id>/*.jsonl.out`` (streamed
   line by line) and ``manifest.json.out``. Records with an ``error`` field are counted and reported, never fatal
   for the others; tokens come from the manifests (or the records' usage fields when a manifest is missing).

A corpus below the batch minimum goes to the on-demand ``bedrock-runtime`` ``Converse`` API instead (throttling
retries with backoff); its answers are rewritten in the same Bedrock output layout, so downstream code is shared.

Quota defaults are the documented defaults for Claude and Nova models ("Amazon Bedrock service quotas",
https://docs.aws.amazon.com/general/latest/gr/bedrock.html#limits_bedrock); accounts can have other values, so
they are a parameter. Every client uses botocore's standard retry mode. Nothing here logs credentials, prompts
or document text: only ids, counts, statuses, S3 URIs and AWS error messages.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

QUOTA_SOURCE_URL = "https://docs.aws.amazon.com/general/latest/gr/bedrock.html#limits_bedrock"
INPUT_FORMAT_URL = "https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-data.html"
OUTPUT_FORMAT_URL = "https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-results.html"

ASSET_FOLDER = "bedrock_batch_outputs"
ANTHROPIC_VERSION = "bedrock-2023-05-31"
TOKEN_HEURISTIC = "chars/4 heuristic: about 4 characters per token for English text; real counts depend on the " \
                  "model's tokenizer and the language"

# GetModelInvocationJob statuses (all ten values of the service's ModelInvocationJobStatus enum).
RUNNING_STATES = frozenset({"Submitted", "Validating", "Scheduled", "InProgress", "Stopping"})
SUCCESS_STATES = frozenset({"Completed", "PartiallyCompleted"})
FAILED_STATES = frozenset({"Failed", "Stopped", "Expired"})

CONVERSE_RETRYABLE = frozenset({"ThrottlingException", "ServiceUnavailableException", "ServiceUnavailable",
                                "ModelNotReadyException", "InternalServerException", "ModelTimeoutException"})
CONVERSE_FATAL = frozenset({"AccessDeniedException", "ResourceNotFoundException", "UnrecognizedClientException"})

PromptParts = tuple[str | None, str]
PromptFn = Callable[[Mapping[str, Any]], "str | PromptParts"]
RecordParser = Callable[[dict], Any]


# --------------------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------------------
# model families and request bodies
# --------------------------------------------------------------------------------------------------------------
_GEO_PREFIX = r"(?:[a-z]{2,6}(?:-[a-z]+)?\.)?"  # us., eu., apac., global., us-gov. ... (inference profiles)
_CLAUDE = re.compile(rf"^{_GEO_PREFIX}anthropic\.claude")
_NOVA = re.compile(rf"^{_GEO_PREFIX}amazon\.nova-(?!canvas|reel|sonic)")
_NOVA_V1 = re.compile(rf"^{_GEO_PREFIX}amazon\.nova-(?:micro|lite|pro|premier)-v1")


def model_family(model_id: str) -> str:
    """'anthropic_claude' or 'amazon_nova', from a model id, an inference-profile id or a foundation-model ARN."""
    tail = model_id.strip().lower().rsplit("/", 1)[-1]
    if _CLAUDE.match(tail):
        return "anthropic_claude"
    if _NOVA.match(tail):
        return "amazon_nova"
    raise UnsupportedModelError(
        f"cannot tell the request format of model {model_id!r}: supported are Anthropic Claude "
        f"(anthropic.claude-*, us.anthropic.claude-*) and Amazon Nova text models (amazon.nova-*, us.amazon.nova-*). "
        f"For an application inference profile ARN pass model_family explicitly.")


def _normalise_prompt(prompt: str | PromptParts) -> PromptParts:
    if isinstance(prompt, str):
        return None, prompt
    system, user = prompt
    if not isinstance(user, str) or not user:
        raise ValueError("prompt_fn must return the user prompt text (or a (system, user) pair)")
    return (system or None), user


def build_model_input(family: str, system: str | None, user: str, settings: GenerationSettings,
                      model_id: str = "") -> dict:
    """The InvokeModel request body for one prompt (what goes in ``modelInput``)."""
    if family == "anthropic_claude":
        body: dict[str, Any] = {"anthropic_version": ANTHROPIC_VERSION, "max_tokens": settings.max_tokens}
        if system:
            body["system"] = system
        body["messages"] = [{"role": "user", "content": [{"type": "text", "text": user}]}]
        if settings.temperature is not None:
            body["temperature"] = settings.temperature
        if settings.top_p is not None:
            body["top_p"] = settings.top_p
        if settings.stop_sequences:
            body["stop_sequences"] = list(settings.stop_sequences)
        return body
    if family == "amazon_nova":
        body = {}
        if _NOVA_V1.match(model_id.strip().lower().rsplit("/", 1)[-1]):
            body["schemaVersion"] = "messages-v1"
        if system:
            body["system"] = [{"text": system}]
        body["messages"] = [{"role": "user", "content": [{"text": user}]}]
        body["inferenceConfig"] = _inference_config(settings)
        return body
    raise UnsupportedModelError(f"unknown model family {family!r}")


def _inference_config(settings: GenerationSettings) -> dict:
    config: dict[str, Any] = {"maxTokens": settings.max_tokens}
    if settings.temperature is not None:
        config["temperature"] = settings.temperature
    if settings.top_p is not None:
        config["topP"] = settings.top_p
    if settings.stop_sequences:
        config["stopSequences"] = list(settings.stop_sequences)
    return config


def converse_request(model_id: str, system: str | None, user: str, settings: GenerationSettings) -> dict:
    request: dict[str, Any] = {"modelId": model_id,
                               "messages": [{"role": "user", "content": [{"text": user}]}],
                               "inferenceConfig": _inference_config(settings)}
    if system:
        request["system"] = [{"text": system}]
    return request


def converse_to_model_output(family: str, response: Mapping[str, Any], record_id: str) -> dict:
    """A Converse answer rewritten as the family's InvokeModel response body (what batch puts in modelOutput)."""
    content = response.get("output", {}).get("message", {}).get("content", []) or []
    texts = [block["text"] for block in content if isinstance(block, Mapping) and "text" in block]
    usage = response.get("usage", {}) or {}
    stop = response.get("stopReason")
    if family == "anthropic_claude":
        return {"id": f"converse-{record_id}", "type": "message", "role": "assistant",
                "content": [{"type": "text", "text": t} for t in texts], "stop_reason": stop, "stop_sequence": None,
                "usage": {"input_tokens": usage.get("inputTokens", 0), "output_tokens": usage.get("outputTokens", 0)}}
    return {"output": {"message": {"role": "assistant", "content": [{"text": t} for t in texts]}},
            "stopReason": stop,
            "usage": {"inputTokens": usage.get("inputTokens", 0), "outputTokens": usage.get("outputTokens", 0),
                      "totalTokens": usage.get("totalTokens", 0)}}


def record_usage(record: Mapping[str, Any]) -> tuple[int, int]:
    """(input, output) tokens from a batch output record's modelOutput (Claude or Nova usage fields)."""
    output = record.get("modelOutput")
    usage = output.get("usage") if isinstance(output, Mapping) else None
    if not isinstance(usage, Mapping):
        return 0, 0
    tokens_in = usage.get("input_tokens", usage.get("inputTokens", 0)) or 0
    tokens_out = usage.get("output_tokens", usage.get("outputTokens", 0)) or 0
    return int(tokens_in), int(tokens_out)


# --------------------------------------------------------------------------------------------------------------
# documents -> records -> parts
# --------------------------------------------------------------------------------------------------------------
def document_id(document: Mapping[str, Any], id_field: str = "id") -> str:
    for key in (id_field, "_id", "doc_id"):
        value = document.get(key)
        if value is not None and str(value) != "":
            return str(value)
    raise ValueError(f"document without an id (looked at {id_field!r}, '_id', 'doc_id')")


def plan_parts(record_sizes: Sequence[int], quotas: BatchQuotas = DEFAULT_QUOTAS) -> list[tuple[int, int]]:
    """Split records (their JSONL line sizes in bytes, newline included) into [start, end) parts, one per job.

    Every part holds between ``min_records_per_job`` and the per-job/per-file record maxima, and at most
    ``bytes_per_part`` bytes. Parts are balanced (25,000 records with a 10,000 cap give 8,334/8,334/8,332).
    Raises ValueError when that is impossible (a single record larger than a file may be, or fewer records than
    the batch minimum: use Converse for those).
    """
    count = len(record_sizes)
    if count == 0:
        return []
    if count < quotas.min_records_per_job:
        raise ValueError(f"{count} records is below the batch minimum of {quotas.min_records_per_job} per job")
    byte_cap, record_cap = quotas.bytes_per_part, quotas.records_per_part
    largest = max(record_sizes)
    if largest > byte_cap:
        raise ValueError(f"one record is {largest} bytes, more than the {byte_cap}-byte input file limit")
    total = sum(record_sizes)
    wanted_parts = max(math.ceil(count / record_cap), math.ceil(total / byte_cap))
    target = math.ceil(count / wanted_parts)
    parts: list[list[int]] = []
    start, size = 0, 0
    for position, line_bytes in enumerate(record_sizes):
        records_in_part = position - start
        if records_in_part and (records_in_part >= target or size + line_bytes > byte_cap):
            parts.append([start, position])
            start, size = position, 0
        size += line_bytes
    parts.append([start, count])
    # The last part may be short: move records from the previous part until it reaches the minimum.
    if len(parts) > 1 and parts[-1][1] - parts[-1][0] < quotas.min_records_per_job:
        need = quotas.min_records_per_job - (parts[-1][1] - parts[-1][0])
        parts[-2][1] -= need
        parts[-1][0] -= need
    result = [(a, b) for a, b in parts]
    for a, b in result:
        part_bytes = sum(record_sizes[a:b])
        if not quotas.min_records_per_job <= b - a <= record_cap or part_bytes > byte_cap:
            raise ValueError(f"cannot split {count} records within the batch quotas ({quotas.as_dict()}): "
                             f"part [{a}, {b}) has {b - a} records and {part_bytes} bytes")
    return result


class _Uniform(Sequence):
    """len(n) sequence of one value, for planning from averages without a list of n ints."""

    def __init__(self, n: int, value: int):
        self.n, self.value = n, value

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item):
        if isinstance(item, slice):
            return [self.value] * len(range(*item.indices(self.n)))
        if not -self.n <= item < self.n:
            raise IndexError(item)
        return self.value


def estimate_batch_plan(num_documents: int, avg_doc_chars: float, *, max_document_chars: int | None = None,
                        prompt_overhead_chars: int = 800, output_tokens_per_document: int = 150,
                        max_tokens: int = 512, json_overhead_bytes: int = 300,
                        quotas: BatchQuotas = DEFAULT_QUOTAS) -> dict:
    """How a corpus would be submitted: jobs, records per job, estimated input/output tokens.

    Tokens use the chars/4 heuristic (about 4 characters per token in English text; other languages and code
    use more tokens per character), so treat them as an estimate for the cost report, not a bill.
    ``output_tokens_per_document`` is the expected answer length; ``max_output_tokens`` the upper bound.
    """
    num_documents = int(num_documents)
    doc_chars = float(avg_doc_chars) if max_document_chars is None else min(float(avg_doc_chars), max_document_chars)
    prompt_chars = doc_chars + prompt_overhead_chars
    # JSON escaping and UTF-8 make a line longer than its characters: assume 10 % on top of the overhead.
    record_bytes = int(math.ceil(prompt_chars * 1.1)) + json_overhead_bytes + 1
    if num_documents <= 0:
        mode, parts = "empty", []
    elif num_documents < quotas.min_records_per_job:
        mode, parts = "on_demand", []
    else:
        mode, parts = "batch", plan_parts(_Uniform(num_documents, record_bytes), quotas)
    records_per_job = [b - a for a, b in parts]
    return {
        "mode": mode,  # batch | on_demand (Converse: below the batch minimum) | empty
        "num_documents": num_documents,
        "num_jobs": len(parts),
        "records_per_job": records_per_job,
        "num_input_files": len(parts),
        "estimated_record_bytes": record_bytes,
        "estimated_input_bytes": record_bytes * num_documents,
        "estimated_input_tokens": int(math.ceil(prompt_chars / 4)) * num_documents,
        "estimated_output_tokens": output_tokens_per_document * num_documents,
        "max_output_tokens": max_tokens * num_documents,
        "token_estimate_method": TOKEN_HEURISTIC,
        "concurrent_job_quota_exceeded": len(parts) > quotas.max_concurrent_jobs,
        "quotas": quotas.as_dict(),
    }


# --------------------------------------------------------------------------------------------------------------
# plans and results
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchJobSpec:
    part: int
    record_count: int
    byte_count: int
    input_uri: str
    output_uri: str
    job_name: str
    client_request_token: str
    local_path: Path | None = None


@dataclass
class BatchInputPlan:
    mode: str                     # batch | on_demand | empty
    model_id: str
    model_family: str
    corpus_hash: str
    record_ids: list[str]
    specs: list[BatchJobSpec]
    input_prefix: str
    output_uri: str
    workdir: Path | None = None

    @property
    def num_records(self) -> int:
        return len(self.record_ids)

    def cleanup(self) -> None:
        if self.workdir is not None and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class BatchOutputs:
    """Raw Bedrock output records (``recordId``, ``modelOutput`` or ``error``) and what reading them found."""

    mode: str
    records: list[dict] = field(default_factory=list)
    error_count: int = 0
    error_samples: list[dict] = field(default_factory=list)
    malformed_lines: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    token_source: str = "none"  # manifest | records | converse | none
    job_arns: list[str] = field(default_factory=list)
    job_statuses: dict[str, str] = field(default_factory=dict)
    manifests: dict[str, dict] = field(default_factory=dict)
    missing_record_ids: list[str] = field(default_factory=list)

    def good_records(self) -> Iterator[dict]:
        return (r for r in self.records if not r.get("error"))

    def summary(self) -> dict:
        """JSON-safe summary for run metadata."""
        return {"mode": self.mode, "records": len(self.records), "record_errors": self.error_count,
                "malformed_lines": self.malformed_lines, "missing_records": len(self.missing_record_ids),
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "token_source": self.token_source, "job_arns": list(self.job_arns),
                "job_statuses": dict(self.job_statuses), "error_samples": list(self.error_samples)}


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------
def make_client(service: str, *, region_name: str | None = None, max_attempts: int = 8, read_timeout: int = 60):
    """A boto3 client with botocore's standard retry mode (throttling and 5xx retried with backoff)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": max_attempts}, read_timeout=read_timeout,
                    user_agent_extra="finetune-assets")
    return boto3.client(service, region_name=region_name, config=config)


def _split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def _slug(text: str, limit: int) -> str:
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-")[:limit].strip("-")
    return slug or "corpus"


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        return str(response.get("Error", {}).get("Message", ""))[:500]
    return str(exc)[:500]


@lru_cache(maxsize=1)
def _bedrock_service_model():
    """botocore's model of the Bedrock control plane: the patterns names and URIs are checked against."""
    import botocore.session

    return botocore.session.get_session().get_service_model("bedrock")


def job_id_from_arn(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


# --------------------------------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------------------------------
class BedrockBatchClient:
    """Bedrock batch inference (and the Converse fallback) for one model and one S3 location.

    Clients are created lazily with ``make_client`` (standard retries); tests inject stubbed ones. ``sleep``,
    ``clock`` and ``rng`` are injectable so polling and backoff run instantly under test.
    """

    def __init__(self, *, region_name: str | None = None, bedrock=None, bedrock_runtime=None, s3=None,
                 quotas: BatchQuotas = DEFAULT_QUOTAS, poll: PollSettings = PollSettings(),
                 converse_retry: ConverseRetry = ConverseRetry(), sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 log: Any = None, max_error_samples: int = 20):
        self.region_name = region_name
        self._bedrock, self._runtime, self._s3 = bedrock, bedrock_runtime, s3
        self.quotas, self.poll, self.converse_retry = quotas, poll, converse_retry
        self.sleep, self.clock = sleep, clock
        self.rng = rng or random.Random(0)
        self.log = log or logger
        self.max_error_samples = max_error_samples

    # -- clients ---------------------------------------------------------------------------------------------
    @property
    def bedrock(self):
        if self._bedrock is None:
            self._bedrock = make_client("bedrock", region_name=self.region_name)
        return self._bedrock

    @property
    def runtime(self):
        if self._runtime is None:
            # Few botocore attempts: the Converse loop below does the longer backoff itself.
            self._runtime = make_client("bedrock-runtime", region_name=self.region_name, max_attempts=3,
                                        read_timeout=300)
        return self._runtime

    @property
    def s3(self):
        if self._s3 is None:
            self._s3 = make_client("s3", region_name=self.region_name)
        return self._s3

    @staticmethod
    def _check(shape: str, value: str, what: str) -> None:
        metadata = _bedrock_service_model().shape_for(shape).metadata
        if not (metadata.get("min", 0) <= len(value) <= metadata.get("max", 1 << 30)) or \
                not re.fullmatch(metadata["pattern"], value):
            raise ValueError(f"{what} {value!r} does not match what Bedrock accepts ({shape}: "
                             f"pattern {metadata['pattern']!r}, length {metadata.get('min')}..{metadata.get('max')})")

    # -- 1. prepare -------------------------------------------------------------------------------------------
    def prepare(self, documents: Iterable[Mapping[str, Any]], *, index: str, s3_base_uri: str, model_id: str,
                prompt_fn: PromptFn, settings: GenerationSettings = GenerationSettings(),
                model_family_override: str | None = None, id_field: str = "id", idempotency_salt: str = "",
                workdir: str | Path | None = None) -> BatchInputPlan:
        """Build the JSONL records, split them into parts and name the jobs. No AWS call.

        The part files are written under ``workdir`` (a new temporary folder when None; ``plan.cleanup()``
        removes it). Job names and ``clientRequestToken``s are derived from a hash of every record line, the
        model, the S3 locations, the quotas and ``idempotency_salt``: the same corpus and settings always give the
        same token, so Bedrock's idempotency makes a retried submission a no-op.
        """
        family = model_family_override or model_family(model_id)
        bucket, base_key = _split_s3_uri(s3_base_uri)
        prefix = "/".join(p for p in (base_key.strip("/"), index, ASSET_FOLDER) if p)
        input_prefix = f"s3://{bucket}/{prefix}/input/"
        output_uri = f"s3://{bucket}/{prefix}/output/"
        owned = workdir is None
        folder = Path(tempfile.mkdtemp(prefix="bedrock-batch-")) if owned else Path(workdir)
        folder.mkdir(parents=True, exist_ok=True)
        spool_path = folder / "all-records.jsonl"
        digest = hashlib.sha256()
        record_ids: list[str] = []
        seen: set[str] = set()
        sizes: list[int] = []
        try:
            with spool_path.open("wb") as spool:
                for document in documents:
                    record_id = document_id(document, id_field)
                    if record_id in seen:
                        raise ValueError(f"duplicate document id {record_id!r}: recordIds must be unique")
                    seen.add(record_id)
                    system, user = _normalise_prompt(prompt_fn(document))
                    line = json.dumps({"recordId": record_id,
                                       "modelInput": build_model_input(family, system, user, settings, model_id)},
                                      ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
                    spool.write(line)
                    digest.update(line)
                    sizes.append(len(line))
                    record_ids.append(record_id)
            digest.update(json.dumps({"model": model_id, "family": family, "input": input_prefix,
                                      "output": output_uri, "quotas": self.quotas.as_dict(),
                                      "salt": idempotency_salt}, sort_keys=True).encode())
            corpus_hash = digest.hexdigest()
            count = len(record_ids)
            if count == 0:
                mode, parts = "empty", []
            elif count < self.quotas.min_records_per_job:
                mode, parts = "on_demand", []
            else:
                mode, parts = "batch", plan_parts(sizes, self.quotas)
            specs: list[BatchJobSpec] = []
            name_stem = f"ftq-{_slug(index, 30)}-{corpus_hash[:12]}"
            with spool_path.open("rb") as spool:
                for number, (start, end) in enumerate(parts):
                    name = f"part-{number:05d}.jsonl"
                    path = folder / name
                    with path.open("wb") as out:
                        for _ in range(start, end):
                            out.write(spool.readline())
                    spec = BatchJobSpec(part=number, record_count=end - start, byte_count=sum(sizes[start:end]),
                                        input_uri=input_prefix + name, output_uri=output_uri,
                                        job_name=f"{name_stem}-p{number:05d}",
                                        client_request_token=f"ftq{corpus_hash[:40]}p{number:05d}", local_path=path)
                    self._check("S3Uri", spec.input_uri, "input S3 URI")
                    self._check("S3Uri", spec.output_uri, "output S3 URI")
                    self._check("ModelInvocationJobName", spec.job_name, "job name")
                    self._check("ModelInvocationIdempotencyToken", spec.client_request_token, "clientRequestToken")
                    specs.append(spec)
            spool_path.unlink(missing_ok=True)
        except BaseException:
            if owned:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        self.log.info(f"bedrock batch plan for {index!r}: {count} records, mode={mode}, {len(specs)} job(s) "
                      f"{[s.record_count for s in specs]}, model family {family}")
        return BatchInputPlan(mode=mode, model_id=model_id, model_family=family, corpus_hash=corpus_hash,
                              record_ids=record_ids, specs=specs, input_prefix=input_prefix, output_uri=output_uri,
                              workdir=folder if owned else None)

    # -- 2. upload --------------------------------------------------------------------------------------------
    def upload(self, plan: BatchInputPlan, options: BatchJobOptions, parts: Iterable[int] | None = None) -> None:
        """S3 PutObject of each part file (upload_file: multipart above 8 MB), with server-side encryption."""
        extra: dict[str, str] = {"ServerSideEncryption": options.s3_sse, "ContentType": "application/jsonl"}
        if options.s3_sse == "aws:kms" and options.s3_kms_key_id:
            extra["SSEKMSKeyId"] = options.s3_kms_key_id
        wanted = None if parts is None else set(parts)
        for spec in plan.specs:
            if wanted is not None and spec.part not in wanted:
                continue
            if spec.local_path is None or not spec.local_path.is_file():
                raise FileNotFoundError(f"part file for {spec.input_uri} is missing; run prepare again")
            bucket, key = _split_s3_uri(spec.input_uri)
            self.s3.upload_file(str(spec.local_path), bucket, key, ExtraArgs=dict(extra))
            self.log.info(f"uploaded {spec.record_count} records ({spec.byte_count} bytes) to {spec.input_uri}")

    # -- 3. create / poll -------------------------------------------------------------------------------------
    def create_job_request(self, spec: BatchJobSpec, model_id: str, options: BatchJobOptions) -> dict:
        """The exact CreateModelInvocationJob parameters for one part."""
        self._check("RoleArn", options.role_arn, "role ARN")
        output_config: dict[str, Any] = {"s3Uri": spec.output_uri}
        if options.output_kms_key_id:
            output_config["s3EncryptionKeyId"] = options.output_kms_key_id
        request: dict[str, Any] = {
            "jobName": spec.job_name,
            "roleArn": options.role_arn,
            "clientRequestToken": spec.client_request_token,
            "modelId": model_id,
            "inputDataConfig": {"s3InputDataConfig": {"s3InputFormat": "JSONL", "s3Uri": spec.input_uri}},
            "outputDataConfig": {"s3OutputDataConfig": output_config},
        }
        if options.timeout_hours is not None:
            request["timeoutDurationInHours"] = options.timeout_hours
        if options.vpc_subnet_ids:
            request["vpcConfig"] = {"subnetIds": list(options.vpc_subnet_ids),
                                    "securityGroupIds": list(options.vpc_security_group_ids)}
        if options.tags:
            request["tags"] = [{"key": k, "value": v} for k, v in options.tags.items()]
        return request

    def create_job(self, spec: BatchJobSpec, model_id: str, options: BatchJobOptions) -> str:
        """CreateModelInvocationJob; on a name conflict, find the existing job (ListModelInvocationJobs)."""
        request = self.create_job_request(spec, model_id, options)
        try:
            arn = self.bedrock.create_model_invocation_job(**request)["jobArn"]
        except Exception as exc:  # botocore ClientError; imported lazily to keep this module light
            if _error_code(exc) != "ConflictException":
                raise
            arn = self.find_job_by_name(spec.job_name)
            if arn is None:
                raise
            self.log.info(f"job {spec.job_name} already exists ({arn}); attaching to it")
        else:
            self.log.info(f"created bedrock batch job {spec.job_name}: {arn}")
        return arn

    def find_job_by_name(self, job_name: str) -> str | None:
        kwargs: dict[str, Any] = {"nameContains": job_name, "maxResults": 100}
        while True:
            page = self.bedrock.list_model_invocation_jobs(**kwargs)
            for summary in page.get("invocationJobSummaries", []):
                if summary.get("jobName") == job_name:
                    return summary["jobArn"]
            if not page.get("nextToken"):
                return None
            kwargs["nextToken"] = page["nextToken"]

    def describe_job(self, job_arn: str) -> dict:
        return self.bedrock.get_model_invocation_job(jobIdentifier=job_arn)

    def run_jobs(self, plan: BatchInputPlan | None, options: BatchJobOptions | None, *,
                 existing_job_arns: Sequence[str] = (), on_job_created: Callable[[str], None] | None = None,
                 on_status: Callable[[str, str, dict], None] | None = None,
                 uploaded: bool = False) -> list[dict]:
        """Create the plan's jobs that do not exist yet and poll every job until all have ended.

        ``existing_job_arns`` are re-attached: matched to the plan's parts by job name, so only missing parts are
        uploaded and created (none when all are given). At most ``quotas.max_concurrent_jobs`` jobs of this run are
        in flight; more are created as earlier ones end. Returns the final GetModelInvocationJob answers, in part
        order (re-attached jobs with no matching part come last).
        """
        descriptions: dict[str, dict] = {}
        arn_for_part: dict[int, str] = {}
        extra_arns: list[str] = []
        parts_by_name = {spec.job_name: spec for spec in (plan.specs if plan else [])}
        for arn in dict.fromkeys(existing_job_arns):
            description = self.describe_job(arn)
            descriptions[arn] = description
            spec = parts_by_name.get(description.get("jobName", ""))
            if spec is not None:
                arn_for_part[spec.part] = arn
            else:
                extra_arns.append(arn)
                if plan is not None:
                    self.log.warning(f"re-attached job {arn} ({description.get('jobName')}) matches no part of this "
                                     f"corpus; it is polled and its outputs read anyway")
        to_create = [spec for spec in (plan.specs if plan else []) if spec.part not in arn_for_part]
        if to_create and (plan is None or options is None):
            raise ValueError("creating jobs needs a plan and job options")
        if to_create and not uploaded:
            self.upload(plan, options, parts=[s.part for s in to_create])
        if arn_for_part or extra_arns:
            self.log.info(f"re-attached to {len(arn_for_part) + len(extra_arns)} existing job(s); "
                          f"{len(to_create)} to create")

        ordered_arns: list[str] = []
        active: list[str] = [arn for arn in (*arn_for_part.values(), *extra_arns)]
        finished: dict[str, dict] = {}
        last_status: dict[str, str] = {}
        concurrency = self.quotas.max_concurrent_jobs
        interval = self.poll.initial_interval_s
        started = self.clock()
        max_wait = self.poll.max_wait_s
        if max_wait is None:
            max_wait = ((options.timeout_hours if options and options.timeout_hours else 24) + 2) * 3600.0
        queue = list(to_create)
        first_round = True
        while True:
            while queue and len(active) < concurrency:
                spec = queue[0]
                try:
                    arn = self.create_job(spec, plan.model_id, options)
                except Exception as exc:
                    if _error_code(exc) == "ServiceQuotaExceededException" and active:
                        concurrency = len(active)
                        self.log.warning(f"bedrock refused job {spec.job_name} ({_error_message(exc)}); waiting for "
                                         f"one of the {len(active)} running job(s) to end")
                        break
                    raise
                queue.pop(0)
                arn_for_part[spec.part] = arn
                active.append(arn)
                if on_job_created is not None:
                    on_job_created(arn)
            for arn in list(active):
                description = descriptions.pop(arn, None) if first_round else None
                description = description or self.describe_job(arn)
                status = description.get("status", "")
                if status != last_status.get(arn):
                    last_status[arn] = status
                    self.log.info(f"bedrock batch job {description.get('jobName', arn)}: {status}"
                                  + (f" ({description['message']})" if description.get("message") else ""))
                    if on_status is not None:
                        on_status(arn, status, description)
                if status in FAILED_STATES:
                    others = [a for a in (*active, *finished) if a != arn]
                    raise BedrockBatchJobFailed(arn, status, description.get("message"),
                                                job_name=description.get("jobName", ""), other_job_arns=others)
                if status in SUCCESS_STATES:
                    if status == "PartiallyCompleted":
                        self.log.warning(f"bedrock batch job {description.get('jobName', arn)} PartiallyCompleted: "
                                         f"{description.get('errorRecordCount', '?')} record(s) failed; the others "
                                         f"are used")
                    finished[arn] = description
                    active.remove(arn)
                elif status not in RUNNING_STATES:
                    self.log.warning(f"unknown bedrock batch job status {status!r} for {arn}; still waiting")
            first_round = False
            if not queue and not active:
                break
            waited = self.clock() - started
            if waited >= max_wait:
                raise BedrockBatchTimeout([*active, *[arn_for_part.get(s.part, s.job_name) for s in queue]], waited)
            self.sleep(min(interval, max(max_wait - waited, 0.0)))
            interval = min(interval * self.poll.backoff, self.poll.max_interval_s)
        for part in sorted(arn_for_part):
            ordered_arns.append(arn_for_part[part])
        ordered_arns.extend(a for a in extra_arns if a not in ordered_arns)
        return [finished[arn] for arn in ordered_arns]

    def wait_for_jobs(self, job_arns: Sequence[str], *, on_status=None) -> list[dict]:
        """Re-attach only: poll known jobs until they end (no plan, nothing created)."""
        return self.run_jobs(None, None, existing_job_arns=job_arns, on_status=on_status)

    # -- 4. outputs -------------------------------------------------------------------------------------------
    def _job_output_prefix(self, description: Mapping[str, Any]) -> tuple[str, str]:
        uri = description["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
        bucket, key = _split_s3_uri(uri)
        key = key.rstrip("/")
        job_id = job_id_from_arn(description["jobArn"])
        return bucket, (f"{key}/{job_id}/" if key else f"{job_id}/")

    def list_job_output_keys(self, description: Mapping[str, Any]) -> tuple[str, list[str], str | None]:
        """(bucket, the job's ``*.jsonl.out`` keys, its ``manifest.json.out`` key or None)."""
        bucket, prefix = self._job_output_prefix(description)
        outputs, manifest = [], None
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("manifest.json.out"):
                    manifest = key
                elif key.endswith(".jsonl.out"):
                    outputs.append(key)
        return bucket, sorted(outputs), manifest

    def iter_job_output_records(self, description: Mapping[str, Any], *, include_model_input: bool = False,
                                malformed: list[int] | None = None) -> Iterator[dict]:
        """Stream the raw output records of one job, line by line (S3 GetObject, never the whole file)."""
        bucket, keys, _ = self.list_job_output_keys(description)
        for key in keys:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
            try:
                for number, raw in enumerate(body.iter_lines(chunk_size=1 << 20), start=1):
                    if not raw.strip():
                        continue
                    try:
                        record = json.loads(raw)
                        if not isinstance(record, dict):
                            raise ValueError("not a JSON object")
                    except ValueError:
                        self.log.warning(f"s3://{bucket}/{key}:{number}: not a JSON object; skipped")
                        if malformed is not None:
                            malformed[0] += 1
                        continue
                    if not include_model_input:
                        record.pop("modelInput", None)
                    yield record
            finally:
                body.close()

    def read_manifest(self, description: Mapping[str, Any]) -> dict | None:
        bucket, _, key = self.list_job_output_keys(description)
        if key is None:
            return None
        try:
            return json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ValueError:
            self.log.warning(f"s3://{bucket}/{key} is not valid JSON; tokens are counted from the records")
            return None

    def read_job_outputs(self, descriptions: Sequence[Mapping[str, Any]], *,
                         expected_record_ids: Sequence[str] | None = None, include_model_input: bool = False,
                         record_parser: RecordParser | None = None) -> BatchOutputs:
        """Every output record of the jobs, per-record errors counted, tokens from the manifests.

        ``record_parser`` (optional, e.g. ``parse_output_record``) supplies per-record token counts when a job has
        no manifest; without it the Claude/Nova usage fields are read directly.
        """
        result = BatchOutputs(mode="batch")
        malformed = [0]
        record_tokens = [0, 0]
        manifest_tokens = [0, 0]
        all_manifests = True
        for description in descriptions:
            arn = description["jobArn"]
            result.job_arns.append(arn)
            result.job_statuses[arn] = description.get("status", "")
            for record in self.iter_job_output_records(description, include_model_input=include_model_input,
                                                       malformed=malformed):
                result.records.append(record)
                if record.get("error"):
                    result.error_count += 1
                    if len(result.error_samples) < self.max_error_samples:
                        error = record["error"] if isinstance(record["error"], Mapping) else {"errorMessage":
                                                                                              str(record["error"])}
                        result.error_samples.append({"recordId": record.get("recordId"),
                                                     "errorCode": error.get("errorCode"),
                                                     "errorMessage": str(error.get("errorMessage", ""))[:300]})
                    continue
                tokens_in, tokens_out = self._record_tokens(record, record_parser)
                record_tokens[0] += tokens_in
                record_tokens[1] += tokens_out
            manifest = self.read_manifest(description)
            if manifest is None:
                all_manifests = False
                self.log.warning(f"no manifest.json.out for job {arn}; tokens counted from the records")
            else:
                result.manifests[arn] = manifest
                manifest_tokens[0] += int(manifest.get("inputTokenCount", 0) or 0)
                manifest_tokens[1] += int(manifest.get("outputTokenCount", 0) or 0)
        result.malformed_lines = malformed[0]
        if descriptions and all_manifests:
            result.input_tokens, result.output_tokens, result.token_source = (*manifest_tokens, "manifest")
        else:
            result.input_tokens, result.output_tokens = record_tokens
            result.token_source = "records" if result.records else "none"
        if expected_record_ids is not None:
            seen = {r.get("recordId") for r in result.records}
            result.missing_record_ids = [rid for rid in expected_record_ids if rid not in seen]
        manifest_errors = sum(int(m.get("errorRecordCount", 0) or 0) for m in result.manifests.values())
        self.log.info(f"read {len(result.records)} bedrock output record(s) from {len(descriptions)} job(s): "
                      f"{result.error_count} record error(s) (manifests say {manifest_errors}), "
                      f"{result.malformed_lines} malformed line(s), {len(result.missing_record_ids)} missing; "
                      f"tokens in/out {result.input_tokens}/{result.output_tokens} ({result.token_source})")
        if result.error_samples:
            self.log.warning(f"first record errors: {result.error_samples[:5]}")
        return result

    @staticmethod
    def _record_tokens(record: dict, record_parser: RecordParser | None) -> tuple[int, int]:
        if record_parser is not None:
            try:
                parsed = record_parser(record)
                return int(getattr(parsed, "input_tokens", 0) or 0), int(getattr(parsed, "output_tokens", 0) or 0)
            except Exception:  # a parser problem must not lose the record: fall back to the usage fields
                pass
        return record_usage(record)

    # -- on-demand fallback -------------------------------------------------------------------------------------
    def converse_records(self, documents: Iterable[Mapping[str, Any]], *, model_id: str, prompt_fn: PromptFn,
                         settings: GenerationSettings = GenerationSettings(), model_family_override: str | None = None,
                         id_field: str = "id", include_model_input: bool = False) -> BatchOutputs:
        """bedrock-runtime Converse per document, answers in the batch output layout.

        Throttling (ThrottlingException, ServiceUnavailable, ModelNotReady, and 5xx) is retried with exponential
        backoff and full jitter; a record that still fails becomes an ``error`` record, like in a batch output.
        Access and missing-model errors stop the run (they would fail every record).
        """
        family = model_family_override or model_family(model_id)
        result = BatchOutputs(mode="on_demand", token_source="converse")
        seen: set[str] = set()
        for document in documents:
            record_id = document_id(document, id_field)
            if record_id in seen:
                raise ValueError(f"duplicate document id {record_id!r}: recordIds must be unique")
            seen.add(record_id)
            system, user = _normalise_prompt(prompt_fn(document))
            record: dict[str, Any] = {"recordId": record_id}
            if include_model_input:
                record["modelInput"] = build_model_input(family, system, user, settings, model_id)
            try:
                response = self._converse_with_retry(converse_request(model_id, system, user, settings), record_id)
            except _RecordFailed as failure:
                record["error"] = {"errorCode": failure.status, "errorMessage": failure.message}
                result.error_count += 1
                if len(result.error_samples) < self.max_error_samples:
                    result.error_samples.append({"recordId": record_id, "errorCode": failure.status,
                                                 "errorMessage": failure.message[:300]})
            else:
                record["modelOutput"] = converse_to_model_output(family, response, record_id)
                usage = response.get("usage", {}) or {}
                result.input_tokens += int(usage.get("inputTokens", 0) or 0)
                result.output_tokens += int(usage.get("outputTokens", 0) or 0)
            result.records.append(record)
        self.log.info(f"converse: {len(result.records)} record(s), {result.error_count} error(s), tokens in/out "
                      f"{result.input_tokens}/{result.output_tokens}")
        return result

    def _converse_with_retry(self, request: dict, record_id: str) -> dict:
        retry = self.converse_retry
        for attempt in range(1, retry.max_attempts + 1):
            try:
                return self.runtime.converse(**request)
            except Exception as exc:
                code = _error_code(exc)
                if not code:
                    raise
                if code in CONVERSE_FATAL:
                    raise
                status = int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                             or 0)
                if code in CONVERSE_RETRYABLE and attempt < retry.max_attempts:
                    delay = self.rng.uniform(0, min(retry.max_delay_s, retry.base_delay_s * 2 ** (attempt - 1)))
                    self.log.info(f"converse {code} for record {record_id}; retry {attempt}/{retry.max_attempts - 1} "
                                  f"in {delay:.1f} s")
                    self.sleep(delay)
                    continue
                raise _RecordFailed(status or (429 if code == "ThrottlingException" else 400),
                                    f"{code}: {_error_message(exc)}") from exc
        raise AssertionError("unreachable")

    # -- everything ---------------------------------------------------------------------------------------------
    def generate(self, documents: Sequence[Mapping[str, Any]], *, index: str, s3_base_uri: str, model_id: str,
                 prompt_fn: PromptFn, options: BatchJobOptions, settings: GenerationSettings = GenerationSettings(),
                 existing_job_arns: Sequence[str] = (), on_job_created: Callable[[str], None] | None = None,
                 on_status: Callable[[str, str, dict], None] | None = None, idempotency_salt: str = "",
                 model_family_override: str | None = None, id_field: str = "id",
                 include_model_input: bool = False, record_parser: RecordParser | None = None,
                 workdir: str | Path | None = None) -> BatchOutputs:
        """Queries for every document: batch jobs (or Converse below the batch minimum), outputs read back.

        Re-attach: pass the ARNs recorded by ``on_job_created`` as ``existing_job_arns``; jobs are matched to parts
        by name and only missing parts are created.
        """
        plan = self.prepare(documents, index=index, s3_base_uri=s3_base_uri, model_id=model_id, prompt_fn=prompt_fn,
                            settings=settings, model_family_override=model_family_override, id_field=id_field,
                            idempotency_salt=idempotency_salt, workdir=workdir)
        try:
            if plan.mode == "empty" and not existing_job_arns:
                return BatchOutputs(mode="empty")
            if plan.mode == "on_demand" and not existing_job_arns:
                return self.converse_records(documents, model_id=model_id, prompt_fn=prompt_fn, settings=settings,
                                             model_family_override=plan.model_family, id_field=id_field,
                                             include_model_input=include_model_input)
            descriptions = self.run_jobs(plan, options, existing_job_arns=existing_job_arns,
                                         on_job_created=on_job_created, on_status=on_status)
            return self.read_job_outputs(descriptions, expected_record_ids=plan.record_ids,
                                         include_model_input=include_model_input, record_parser=record_parser)
        finally:
            plan.cleanup()


class _RecordFailed(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


__all__ = [
    "ASSET_FOLDER", "BatchInputPlan", "BatchJobOptions", "BatchJobSpec", "BatchOutputs", "BatchQuotas",
    "BedrockBatchClient", "BedrockBatchError", "BedrockBatchJobFailed", "BedrockBatchTimeout", "ConverseRetry",
    "DEFAULT_QUOTAS", "FAILED_STATES", "GenerationSettings", "PollSettings", "QUOTA_SOURCE_URL", "RUNNING_STATES",
    "SUCCESS_STATES", "UnsupportedModelError", "build_model_input", "converse_request", "converse_to_model_output",
    "document_id", "estimate_batch_plan", "job_id_from_arn", "make_client", "model_family", "plan_parts",
    "record_usage",
]
