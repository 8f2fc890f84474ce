"""Turn documents into batch input: JSONL records split into parts within the batch quotas, one job per part.

``prepare`` writes the part files locally (no AWS call); ``estimate_batch_plan`` sizes a corpus for the cost
report without building records.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune_assets.clients.bedrock.aws import check_shape, slug, split_s3_uri
from finetune_assets.clients.bedrock.model_bodies import PromptFn, build_model_input, model_family, normalise_prompt
from finetune_assets.clients.bedrock.settings import DEFAULT_QUOTAS, BatchQuotas, GenerationSettings

INPUT_FORMAT_URL = "https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-data.html"

ASSET_FOLDER = "bedrock_batch_outputs"
TOKEN_HEURISTIC = "chars/4 heuristic: about 4 characters per token for English text; real counts depend on the " \
                  "model's tokenizer and the language"


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


class BatchPlanner:
    """The planning step of :class:`~finetune_assets.clients.bedrock.client.BedrockBatchClient` (which supplies
    ``quotas`` and ``log``)."""

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
        bucket, base_key = split_s3_uri(s3_base_uri)
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
                    system, user = normalise_prompt(prompt_fn(document))
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
            name_stem = f"ftq-{slug(index, 30)}-{corpus_hash[:12]}"
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
                    check_shape("S3Uri", spec.input_uri, "input S3 URI")
                    check_shape("S3Uri", spec.output_uri, "output S3 URI")
                    check_shape("ModelInvocationJobName", spec.job_name, "job name")
                    check_shape("ModelInvocationIdempotencyToken", spec.client_request_token, "clientRequestToken")
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
