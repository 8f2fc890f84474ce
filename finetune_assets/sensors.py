"""New corpora in S3 become partitions and runs: `s3://$FINETUNE_S3_BUCKET/<prefix><index>/...`."""
import hashlib
import json
import os

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from finetune_assets.core.index_names import index_name_problem
from finetune_assets.partitions import index_partitions

DEFAULT_CORPUS_PREFIX = "corpora/"


def list_corpus_objects(bucket: str, prefix: str) -> dict[str, str]:
    """Key -> ETag of every corpus object under the prefix (paginated; boto3 honours AWS_ENDPOINT_URL)."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 8}))
    objects = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if not item["Key"].endswith("/"):
                objects[item["Key"]] = item["ETag"].strip('"')
    return objects


def plan_corpus_runs(objects: dict[str, str], seen: dict[str, str], prefix: str):
    """Which indexes need a run: those with a new or changed object. Returns (runs, skipped, new cursor).

    The run key hashes the index's whole object set, so re-evaluating the same state never requests a
    duplicate run, while a changed ETag always gives a new key.
    """
    by_index: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}
    for key, etag in objects.items():
        index, _, rest = key[len(prefix):].partition("/")
        if not rest:
            continue  # a file directly under the prefix belongs to no index
        problem = index_name_problem(index)
        if problem:
            skipped[index] = problem
            continue
        by_index.setdefault(index, {})[key] = etag
    runs = {}
    for index, files in sorted(by_index.items()):
        if any(seen.get(key) != etag for key, etag in files.items()):
            digest = hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()[:16]
            runs[index] = f"{index}:{digest}"
    cursor = {key: etag for files in by_index.values() for key, etag in files.items()}
    return runs, skipped, cursor


@sensor(job_name="finetune", minimum_interval_seconds=60, default_status=DefaultSensorStatus.STOPPED,
        description="Adds a partition and starts the finetune job for each new or changed corpus in S3.")
def s3_corpus_sensor(context: SensorEvaluationContext):
    bucket = os.environ.get("FINETUNE_S3_BUCKET")
    if not bucket:
        return SkipReason("FINETUNE_S3_BUCKET is not set: no S3 bucket to watch")
    prefix = os.environ.get("FINETUNE_S3_CORPUS_PREFIX", DEFAULT_CORPUS_PREFIX)
    seen = json.loads(context.cursor) if context.cursor else {}
    runs, skipped, cursor = plan_corpus_runs(list_corpus_objects(bucket, prefix), seen, prefix)
    for index, problem in sorted(skipped.items()):
        context.log.warning(f"skipping s3://{bucket}/{prefix}{index}/: {problem}")
    new_partitions = [i for i in runs if not context.instance.has_dynamic_partition(index_partitions.name, i)]
    return SensorResult(
        run_requests=[RunRequest(run_key=key, partition_key=index,
                                 tags={"finetune/source": f"s3://{bucket}/{prefix}{index}/"})
                      for index, key in runs.items()],
        dynamic_partitions_requests=[index_partitions.build_add_request(new_partitions)] if new_partitions else [],
        cursor=json.dumps(cursor, sort_keys=True),
    )
