"""Shared Bedrock test doubles: Stubber-wrapped clients, service-valid responses, and Bedrock's S3 output layout.

moto does not implement Bedrock batch inference, so the Bedrock APIs are stubbed with ``botocore.stub.Stubber``
(which validates requests and responses against the real service model) while S3 runs on a moto server.
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

from botocore.stub import Stubber

from finetune_assets.clients.bedrock.aws import make_client

REGION = "us-east-1"
BUCKET = "finetune-bucket"
BASE_URI = f"s3://{BUCKET}/runs"
INDEX = "product-docs"
CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
NOVA = "us.amazon.nova-lite-v1:0"
ROLE = "arn:aws:iam::123456789012:role/BedrockBatchRole"
SUBMIT_TIME = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc)


def job_arn(job_id: str = "abcdef123456") -> str:
    return f"arn:aws:bedrock:{REGION}:123456789012:model-invocation-job/{job_id}"


def stubbed(service: str):
    client = make_client(service, region_name=REGION)
    return client, Stubber(client)


def job_description(arn: str, status: str, *, name: str = "ftq-job", output_uri: str | None = None,
                    input_uri: str | None = None, message: str | None = None, model_id: str = CLAUDE,
                    **counts) -> dict:
    """A GetModelInvocationJob answer (defaults: the BASE_URI/INDEX layout of the client tests)."""
    description = {
        "jobArn": arn, "jobName": name, "modelId": model_id, "roleArn": ROLE, "status": status,
        "submitTime": SUBMIT_TIME, "lastModifiedTime": SUBMIT_TIME,
        "inputDataConfig": {"s3InputDataConfig": {"s3InputFormat": "JSONL", "s3Uri": input_uri or
                                                  f"{BASE_URI}/{INDEX}/bedrock_batch_outputs/input/part-00000.jsonl"}},
        "outputDataConfig": {"s3OutputDataConfig": {
            "s3Uri": output_uri or f"{BASE_URI}/{INDEX}/bedrock_batch_outputs/output/"}},
        **counts,
    }
    if message is not None:
        description["message"] = message
    return description


def claude_output(record_id: str, n: int, text: str | None = None) -> dict:
    return {"recordId": record_id,
            "modelInput": {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 512, "messages": []},
            "modelOutput": {"id": f"msg_{n}", "type": "message", "role": "assistant",
                            "content": [{"type": "text", "text": text or f"query one {n}\nquery two {n}"}],
                            "stop_reason": "end_turn", "usage": {"input_tokens": 40, "output_tokens": 12}}}


def converse_answer(text: str, tokens_in: int = 30, tokens_out: int = 9) -> dict:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": tokens_in, "outputTokens": tokens_out, "totalTokens": tokens_in + tokens_out},
            "metrics": {"latencyMs": 120}}


def write_bedrock_outputs(s3, bucket: str, input_key: str, output_prefix: str, *,
                          answer: Callable[[str, int], dict] = claude_output, errors: dict | None = None,
                          manifest_tokens: tuple[int, int] | None = None) -> int:
    """What Bedrock does while a job runs: ``<output prefix><input file>.out`` (one line per input record, in no
    particular order; ``error`` lines for ``errors``) and, with ``manifest_tokens``, ``manifest.json.out``.
    Returns the number of records."""
    errors = errors or {}
    lines = []
    for n, line in enumerate(s3.get_object(Bucket=bucket, Key=input_key)["Body"].iter_lines()):
        record = json.loads(line)
        if record["recordId"] in errors:
            lines.append({"recordId": record["recordId"], "modelInput": record["modelInput"],
                          "error": errors[record["recordId"]]})
        else:
            lines.append({**answer(record["recordId"], n), "modelInput": record["modelInput"]})
    body = "\n".join(json.dumps(r) for r in reversed(lines)) + "\n\n"  # order is not guaranteed
    name = input_key.rsplit("/", 1)[-1]
    s3.put_object(Bucket=bucket, Key=f"{output_prefix}{name}.out", Body=body.encode())
    if manifest_tokens is not None:
        failed = sum(1 for r in lines if "error" in r)
        manifest = {"totalRecordCount": len(lines), "processedRecordCount": len(lines),
                    "successRecordCount": len(lines) - failed, "errorRecordCount": failed,
                    "inputTokenCount": manifest_tokens[0], "outputTokenCount": manifest_tokens[1]}
        s3.put_object(Bucket=bucket, Key=f"{output_prefix}manifest.json.out", Body=json.dumps(manifest).encode())
    return len(lines)
