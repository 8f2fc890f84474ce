"""New corpora become partitions and runs: files in S3 (`s3://$FINETUNE_S3_BUCKET/<prefix><index>/...`), or
indices in the OpenSearch cluster that match `$FINETUNE_OPENSEARCH_INDEX_PATTERN`."""
import hashlib
import json
import os

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from finetune_assets.core.data.index_names import index_name_problem
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.opensearch import OpenSearchResource

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


def list_indices(client, pattern: str) -> dict[str, dict[str, str]]:
    """Name -> {uuid, creation date, status} of the indices matching the pattern (comma-separated allowed)."""
    rows = client.cat.indices(index=pattern, format="json", h="index,uuid,creation.date,status")
    return {row["index"]: {"uuid": row.get("uuid") or "", "created": row.get("creation.date") or "",
                           "status": row.get("status") or ""} for row in rows}


def plan_index_runs(indices: dict[str, dict[str, str]], seen: dict[str, str]):
    """Which indices need a run: open ones not seen with the same identity. Returns (runs, skipped, new cursor).

    The identity is the index uuid (its creation date when the cluster gives no uuid), so an index deleted and
    created again under the same name runs again, while re-listing the same indices never does.
    """
    runs, skipped, cursor = {}, {}, {}
    for index, info in sorted(indices.items()):
        if index.startswith("."):
            continue  # system and hidden indices are never corpora
        problem = index_name_problem(index) or (None if info["status"] in ("", "open") else "it is closed")
        if problem:
            skipped[index] = problem
            continue
        identity = info["uuid"] or info["created"]
        cursor[index] = identity
        if seen.get(index) != identity:
            runs[index] = f"{index}:{identity}"
    return runs, skipped, cursor


@sensor(job_name="finetune", minimum_interval_seconds=60, default_status=DefaultSensorStatus.STOPPED,
        description="Adds a partition and starts the finetune job (corpus read from the index) for each new "
                    "OpenSearch index matching FINETUNE_OPENSEARCH_INDEX_PATTERN.")
def opensearch_index_sensor(context: SensorEvaluationContext, opensearch: OpenSearchResource):
    if not opensearch.configured:
        return SkipReason("OPENSEARCH_URL is not set: no OpenSearch cluster to watch")
    pattern = os.environ.get("FINETUNE_OPENSEARCH_INDEX_PATTERN", "").strip()
    if not pattern:
        return SkipReason("FINETUNE_OPENSEARCH_INDEX_PATTERN is not set (for example docs-*): no indices to watch")
    seen = json.loads(context.cursor) if context.cursor else {}
    runs, skipped, cursor = plan_index_runs(list_indices(opensearch.client(), pattern), seen)
    for index, problem in sorted(skipped.items()):
        context.log.warning(f"skipping index '{index}': {problem}")
    new_partitions = [i for i in runs if not context.instance.has_dynamic_partition(index_partitions.name, i)]
    run_config = {"ops": {"raw_corpus": {"config": {"from_opensearch": True}}}}
    return SensorResult(
        run_requests=[RunRequest(run_key=key, partition_key=index, run_config=run_config,
                                 tags={"finetune/source": f"opensearch index {index}"})
                      for index, key in runs.items()],
        dynamic_partitions_requests=[index_partitions.build_add_request(new_partitions)] if new_partitions else [],
        cursor=json.dumps(cursor, sort_keys=True),
    )
