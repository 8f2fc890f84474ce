"""Synthetic-query generation with Amazon Bedrock batch inference (boto3 only; no Dagster import).

:class:`.client.BedrockBatchClient` runs the flow; each step lives in its own module. Every AWS call it makes:

1. ``prepare`` (:mod:`.planning`): build the JSONL records (bodies from :mod:`.model_bodies`) and split them
   into parts that respect the batch quotas (:mod:`.settings`); no AWS call.
2. ``upload`` (:mod:`.jobs`): S3 ``PutObject`` (through ``upload_file``, with SSE) to
   ``<s3 base>/<index>/bedrock_batch_outputs/input/part-NNNNN.jsonl``; one part is one job.
3. ``run_jobs`` (:mod:`.jobs`): Bedrock ``CreateModelInvocationJob`` per part, idempotent, then
   ``GetModelInvocationJob`` with backoff until every job ends; ``ListModelInvocationJobs`` on a name conflict.
4. ``read_job_outputs`` (:mod:`.outputs`): S3 ``ListObjectsV2`` + ``GetObject`` of the job's outputs and manifest.

A corpus below the batch minimum goes to the on-demand ``bedrock-runtime`` ``Converse`` API instead
(:mod:`.converse`). Nothing here logs credentials, prompts or document text: only ids, counts, statuses, S3 URIs
and AWS error messages.
"""
