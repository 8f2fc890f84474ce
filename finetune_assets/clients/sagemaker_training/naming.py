"""Name training jobs deterministically: input fingerprints and digests, base names, retry names, tags, URLs."""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from finetune_assets.clients.sagemaker_training.aws import slug, split_s3_uri

# Service limits (botocore sagemaker service model, CreateTrainingJob).
MAX_JOB_NAME = 63
JOB_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
MAX_TAG_VALUE = 256


def inputs_digest(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def training_job_base_name(prefix: str, partition: str | None, digest: str, *, hash_chars: int = 10) -> str:
    """``<prefix>-<partition>-<hash>``: deterministic, valid, and leaves room for a ``-rNN`` retry suffix."""
    room = MAX_JOB_NAME - hash_chars - 1 - 4  # "-<hash>" and "-r99"
    head = "-".join(p for p in (slug(prefix, room), slug(partition or "", room)) if p)[:room].strip("-")
    name = f"{head or 'training'}-{digest[:hash_chars]}"
    if not JOB_NAME_PATTERN.match(name):  # cannot happen with the slugging above; fail loudly if it does
        raise ValueError(f"generated an invalid training job name {name!r}")
    return name


def attempt_name(base: str, attempt: int) -> str:
    return base if attempt == 1 else f"{base}-r{attempt}"


def job_console_url(region: str, job_name: str) -> str:
    return (f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
            f"#/jobs/{job_name}")


def tag_value(text: str) -> str:
    """Tag values allow letters, digits, spaces and _ . : / = + - @ only."""
    return re.sub(r"[^\w\s.:/=+\-@]", "_", text)[:MAX_TAG_VALUE]


def fingerprint_s3_prefix(s3, uri: str) -> str:
    """sha256 over (key, size, ETag) of every object under the prefix (ListObjectsV2); fails when it is empty."""
    bucket, prefix = split_s3_uri(uri)
    digest, count = hashlib.sha256(), 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            digest.update(f"{item['Key']}\0{item['Size']}\0{item.get('ETag', '')}\n".encode())
            count += 1
    if not count:
        raise FileNotFoundError(f"no training data under {uri} (the train channel would be empty)")
    return digest.hexdigest()
