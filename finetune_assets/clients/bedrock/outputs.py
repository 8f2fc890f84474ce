"""Read batch job outputs back from S3: records streamed line by line, per-record errors counted, tokens.

The outputs of a job are ``<output uri>/<job id>/*.jsonl.out`` and ``manifest.json.out`` (S3 ``ListObjectsV2`` +
``GetObject``). Records with an ``error`` field are counted and reported, never fatal for the others; tokens come
from the manifests (or the records' usage fields when a manifest is missing).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from finetune_assets.clients.bedrock.aws import job_id_from_arn, split_s3_uri
from finetune_assets.clients.bedrock.model_bodies import record_usage

OUTPUT_FORMAT_URL = "https://docs.aws.amazon.com/bedrock/latest/userguide/batch-inference-results.html"

RecordParser = Callable[[dict], Any]


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


class BatchOutputReader:
    """The output step of :class:`~finetune_assets.clients.bedrock.client.BedrockBatchClient` (which supplies the
    ``s3`` client, ``max_error_samples`` and ``log``)."""

    def _job_output_prefix(self, description: Mapping[str, Any]) -> tuple[str, str]:
        uri = description["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
        bucket, key = split_s3_uri(uri)
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
