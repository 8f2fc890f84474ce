"""Upload batch input to S3, create the batch jobs (idempotently, within the concurrency quota) and poll them.

``run_jobs`` creates each part's ``CreateModelInvocationJob`` with a deterministic ``clientRequestToken`` and job
name (same corpus + settings = same token, so a retried step never starts a second job), then polls
``GetModelInvocationJob`` with backoff until every job ends. ``on_job_created(arn)`` fires as soon as an ARN
exists; ARNs recorded that way can be given back (``existing_job_arns``) to re-attach instead of creating jobs
again. A name conflict is resolved with ``ListModelInvocationJobs`` (the job already exists: attach).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from finetune_assets.clients.bedrock.aws import check_shape, error_code, error_message, split_s3_uri
from finetune_assets.clients.bedrock.errors import BedrockBatchJobFailed, BedrockBatchTimeout
from finetune_assets.clients.bedrock.planning import BatchInputPlan, BatchJobSpec
from finetune_assets.clients.bedrock.settings import BatchJobOptions

# GetModelInvocationJob statuses (all ten values of the service's ModelInvocationJobStatus enum).
RUNNING_STATES = frozenset({"Submitted", "Validating", "Scheduled", "InProgress", "Stopping"})
SUCCESS_STATES = frozenset({"Completed", "PartiallyCompleted"})
FAILED_STATES = frozenset({"Failed", "Stopped", "Expired"})


class BatchJobs:
    """The job steps of :class:`~finetune_assets.clients.bedrock.client.BedrockBatchClient` (which supplies the
    ``bedrock`` and ``s3`` clients, ``quotas``, ``poll``, ``sleep``, ``clock`` and ``log``)."""

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
            bucket, key = split_s3_uri(spec.input_uri)
            self.s3.upload_file(str(spec.local_path), bucket, key, ExtraArgs=dict(extra))
            self.log.info(f"uploaded {spec.record_count} records ({spec.byte_count} bytes) to {spec.input_uri}")

    # -- 3. create / poll -------------------------------------------------------------------------------------
    def create_job_request(self, spec: BatchJobSpec, model_id: str, options: BatchJobOptions) -> dict:
        """The exact CreateModelInvocationJob parameters for one part."""
        check_shape("RoleArn", options.role_arn, "role ARN")
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
            if error_code(exc) != "ConflictException":
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
                    if error_code(exc) == "ServiceQuotaExceededException" and active:
                        concurrency = len(active)
                        self.log.warning(f"bedrock refused job {spec.job_name} ({error_message(exc)}); waiting for "
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
