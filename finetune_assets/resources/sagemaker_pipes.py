"""Dagster Pipes for SageMaker training jobs: ``PipesSageMakerTrainingClient`` and ``SageMakerTrainingResource``.

dagster-aws has Pipes clients for ECS, EMR, Glue, Lambda, ... but none for SageMaker, so this one is built the same
way on ``open_pipes_session``:

- context: dagster-aws ``PipesS3ContextInjector`` writes the Pipes context to ``s3://<bucket>/<key_prefix>/context/
  <random>/context.json`` (deleted when the session closes). A SageMaker ``Environment`` holds at most 100 entries of
  512 characters, far too small for a context, so only the two bootstrap variables travel in it
  (``DAGSTER_PIPES_CONTEXT``, ``DAGSTER_PIPES_MESSAGES``: base64 of zlib JSON, about 100-200 characters each), plus
  ``FINETUNE_PIPES_TRANSPORT=s3`` (the entry point then uses ``PipesS3ContextLoader``/``PipesS3MessageWriter``) and
  ``AWS_DEFAULT_REGION``.
- messages: dagster-aws ``PipesS3MessageReader`` (subclassed only to put the chunks under ``<key_prefix>/messages/``
  instead of the bucket root, and to read a previous job's location when re-attaching). Chunks are kept after the
  run: re-attaching to a job reads them again. Put an S3 lifecycle rule on ``<key_prefix>/`` to expire them.

The AWS side (names, limits, request, polling, stop, model download) is the
``finetune_assets.clients.sagemaker_training`` package.

Idempotency: the job name is ``<prefix>-<partition>-<sha256[:10]>`` of everything that defines the job (image,
instances, hyperparameters, input URI plus a fingerprint of the objects under it, output URI, environment, the
source tarball's hash, ``idempotency_key``). A run that finds that job InProgress or Completed re-attaches to it
(no CreateTrainingJob); a Failed/Stopped one is retried as ``<name>-r2``, ``-r3``, ...
"""
from __future__ import annotations

import random
import string
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    ConfigurableResource,
    MetadataValue,
    OpExecutionContext,
    PipesClient,
    open_pipes_session,
)
from dagster._core.definitions.resource_annotation import TreatAsResourceParam
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.pipes.client import PipesClientCompletedInvocation, PipesParams
from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader
from dagster_pipes import PipesBlobStoreMessageWriter, decode_param
from pydantic import Field

from finetune_assets.clients.sagemaker_training.artifacts import download_model
from finetune_assets.clients.sagemaker_training.aws import join_s3, make_client, region_of, split_s3_uri
from finetune_assets.clients.sagemaker_training.errors import SageMakerTrainingError, TrainingJobFailed
from finetune_assets.clients.sagemaker_training.jobs import (
    PollSettings,
    create_job,
    job_summary,
    resolve_job,
    stop_job,
    wait_for_job,
)
from finetune_assets.clients.sagemaker_training.naming import (
    fingerprint_s3_prefix,
    inputs_digest,
    job_console_url,
    tag_value,
    training_job_base_name,
)
from finetune_assets.clients.sagemaker_training.request import TRANSPORT_ENV, TrainingJobSpec, build_create_request
from finetune_assets.clients.sagemaker_training.source import DEFAULT_CONTAINER_REQUIREMENTS, source_tarball_for_run
from finetune_assets.core.redact import redact

DEFAULT_INSTANCE_TYPE = "ml.g5.xlarge"


class PipesS3PrefixedMessageReader(PipesS3MessageReader):
    """``PipesS3MessageReader`` whose chunks go to ``<key_prefix>/messages/<random>/<n>.json``.

    ``params`` (a decoded ``DAGSTER_PIPES_MESSAGES`` of an existing job) makes it read that location instead of
    handing out a new one: that is how a re-attached run gets the messages of the job it did not start.
    """

    def __init__(self, *, bucket: str, client: Any, key_prefix: str = "", params: Mapping[str, Any] | None = None,
                 interval: float = 10, include_stdio_in_messages: bool = False):
        super().__init__(interval=interval, bucket=bucket, client=client,
                         include_stdio_in_messages=include_stdio_in_messages)
        self.key_prefix = key_prefix.strip("/")
        self.fixed_params = dict(params) if params else None

    @contextmanager
    def get_params(self) -> Iterator[PipesParams]:
        if self.fixed_params is not None:
            yield dict(self.fixed_params)
            return
        suffix = "".join(random.choices(string.ascii_letters, k=30))
        yield {
            "bucket": self.bucket,
            "key_prefix": "/".join(p for p in (self.key_prefix, "messages", suffix) if p),
            PipesBlobStoreMessageWriter.INCLUDE_STDIO_IN_MESSAGES_KEY: self.include_stdio_in_messages,
        }


def message_params_of(description: Mapping[str, Any]) -> dict | None:
    """The Pipes message location a job was started with (its ``DAGSTER_PIPES_MESSAGES``), if it can be read."""
    raw = (description.get("Environment") or {}).get("DAGSTER_PIPES_MESSAGES")
    if not raw:
        return None
    try:
        params = decode_param(raw)
    except Exception:  # noqa: BLE001 - a foreign or damaged value: treat as unknown
        return None
    return params if isinstance(params, dict) and params.get("bucket") and params.get("key_prefix") else None


class PipesSageMakerTrainingClient(PipesClient, TreatAsResourceParam):
    """Run ``python -m finetune_assets.training`` as a SageMaker training job under Dagster Pipes.

    Args:
        bucket: S3 bucket for the Pipes context and messages and the source tarballs.
        key_prefix: key prefix under ``bucket`` (``<prefix>/context/``, ``<prefix>/messages/``, ``<prefix>/code/``).
        code_s3_uri: where source tarballs go (default ``s3://<bucket>/<key_prefix>/code``).
        source_s3_uri: a source tarball already in S3 (for example built in CI with ``build_source_tarball``), used
            instead of building and uploading one per run; its URI and ETag go into the job identity.
        region_name: AWS region (default: boto3's, from the environment).
        sagemaker_client, s3_client: boto3 clients to use (default: new ones with standard retries).
        poll: DescribeTrainingJob backoff (``PollSettings``).
        message_interval_s: how often the message reader looks for new chunks in S3.
        forward_termination: call StopTrainingJob when the Dagster run is interrupted.
        requirements: ``requirements.txt`` of the source tarball (pip-installed by the SageMaker toolkit).
        fingerprint_inputs: fold a ListObjectsV2 fingerprint of the train channel into the job name.
        sleep: the poll loop's sleep (tests inject one).
    """

    def __init__(self, *, bucket: str, key_prefix: str = "dagster-pipes", code_s3_uri: str | None = None,
                 source_s3_uri: str | None = None, region_name: str | None = None, sagemaker_client: Any = None,
                 s3_client: Any = None,
                 poll: PollSettings = PollSettings(), message_interval_s: float = 10.0,
                 forward_termination: bool = True,
                 requirements: Sequence[str] = DEFAULT_CONTAINER_REQUIREMENTS,
                 fingerprint_inputs: bool = True, sleep: Callable[[float], None] = time.sleep):
        if not bucket:
            raise ValueError("PipesSageMakerTrainingClient needs an S3 bucket for the Pipes context and messages")
        self.bucket = bucket
        self.key_prefix = key_prefix.strip("/")
        self.code_s3_uri = code_s3_uri or join_s3(f"s3://{bucket}", self.key_prefix, "code")
        self.source_s3_uri = source_s3_uri or None
        self._sagemaker = sagemaker_client or make_client("sagemaker", region_name)
        self._s3 = s3_client or make_client("s3", region_name)
        self.poll = poll
        self.message_interval_s = message_interval_s
        self.forward_termination = forward_termination
        self.requirements = tuple(requirements)
        self.fingerprint_inputs = fingerprint_inputs
        self._sleep = sleep

    def run(  # type: ignore[override]
        self,
        *,
        context: AssetExecutionContext | OpExecutionContext,
        role_arn: str,
        input_s3_uri: str,
        output_s3_uri: str,
        hyperparameters: Mapping[str, Any] | None = None,
        job_name_prefix: str = "finetune",
        image_uri: str | None = None,
        launch: str = "toolkit",
        instance_type: str = DEFAULT_INSTANCE_TYPE,
        instance_count: int = 1,
        volume_size_gb: int = 50,
        max_runtime_s: int = 24 * 3600,
        use_spot: bool = False,
        max_wait_s: int | None = None,
        checkpoint_s3_uri: str | None = None,
        environment: Mapping[str, str] | None = None,
        extras: Mapping[str, Any] | None = None,
        model_dir: str | Path | None = None,
        distribution: str = "auto",
        container_entrypoint: Sequence[str] | None = None,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str = "",
        extra_request: Mapping[str, Any] | None = None,
    ) -> PipesClientCompletedInvocation:
        """Create (or re-attach to) the training job, wait for it, and download the model into ``model_dir``.

        Raises ``TrainingJobFailed`` (SageMaker's FailureReason verbatim) when the job ends Failed or Stopped;
        stops the job and re-raises when the run is interrupted.
        """
        spec = TrainingJobSpec(
            role_arn=role_arn, input_s3_uri=input_s3_uri, output_s3_uri=output_s3_uri,
            hyperparameters=dict(hyperparameters or {}), image_uri=image_uri or None, launch=launch,
            instance_type=instance_type, instance_count=instance_count, volume_size_gb=volume_size_gb,
            max_runtime_s=max_runtime_s, use_spot=use_spot, max_wait_s=max_wait_s,
            checkpoint_s3_uri=checkpoint_s3_uri or None, environment=dict(environment or {}),
            distribution=distribution, container_entrypoint=container_entrypoint, tags=dict(tags or {}),
            extra_request=dict(extra_request or {}),
        )
        region = region_of(self._sagemaker)
        partition = context.partition_key if context.has_partition_key else None
        source_uri, source_digest = None, ""
        if spec.launch == "toolkit" and self.source_s3_uri:
            bucket, key = split_s3_uri(self.source_s3_uri)
            source_uri = self.source_s3_uri
            source_digest = f"{source_uri}#{self._s3.head_object(Bucket=bucket, Key=key).get('ETag', '')}"
        elif spec.launch == "toolkit":
            source_uri, source_digest = source_tarball_for_run(self._s3, self.code_s3_uri,
                                                                   requirements=self.requirements)
        fingerprint = fingerprint_s3_prefix(self._s3, input_s3_uri) if self.fingerprint_inputs else ""
        digest = inputs_digest({**spec.identity(region), "partition": partition, "input_fingerprint": fingerprint,
                                   "source": source_digest, "idempotency_key": idempotency_key})
        resolution = resolve_job(self._sagemaker, training_job_base_name(job_name_prefix, partition, digest))
        for name, status in resolution.previous:
            context.log.info(f"earlier attempt {name} ended {status}; not re-attaching to it")

        reader_params = message_params_of(resolution.existing) if resolution.attach else None
        if resolution.attach and reader_params is None:
            context.log.warning(f"re-attaching to {resolution.job_name}, whose Pipes message location cannot be read "
                                "from its Environment: its logs and metadata will not reach Dagster")
        reader = PipesS3PrefixedMessageReader(
            bucket=(reader_params or {}).get("bucket", self.bucket), client=self._s3,
            key_prefix=self.key_prefix, params=reader_params, interval=self.message_interval_s)
        injector = PipesS3ContextInjector(bucket=self.bucket, client=self._s3,
                                          key_prefix=f"{self.key_prefix}/context/" if self.key_prefix else None)

        with open_pipes_session(context=context, context_injector=injector, message_reader=reader,
                                extras=dict(extras or {})) as session:
            job_name, first = resolution.job_name, resolution.existing
            if resolution.attach:
                context.log.info(f"re-attaching to SageMaker training job {job_name} "
                                 f"({first['TrainingJobStatus']}) instead of creating a duplicate")
            else:
                env = {"AWS_DEFAULT_REGION": region, **spec.environment, **session.get_bootstrap_env_vars(),
                       **TRANSPORT_ENV}
                run_tags = {"dagster-run-id": context.run.run_id, "finetune-inputs-sha256": digest[:32]}
                if partition is not None:
                    run_tags["dagster-partition"] = tag_value(partition)
                request = build_create_request(spec, job_name=job_name, region=region, environment=env,
                                                  source_s3_uri=source_uri, tags=run_tags)
                arn, first = create_job(self._sagemaker, request)
                if first is not None:
                    context.log.warning(f"{job_name} was created by a concurrent run; following it (its Pipes "
                                        "messages go to that run)")
                context.log.info(f"created SageMaker training job {job_name} ({arn}) on "
                                 f"{spec.instance_count} x {spec.instance_type}: "
                                 f"{job_console_url(region, job_name)}")
            try:
                description = wait_for_job(
                    self._sagemaker, job_name, poll=self.poll, sleep=self._sleep, first=first,
                    on_transition=lambda text: context.log.info(f"[SageMaker {job_name}] {text}"))
            except (DagsterExecutionInterruptedError, KeyboardInterrupt):
                if self.forward_termination:
                    context.log.warning(f"run interrupted: stopping SageMaker training job {job_name}")
                    if stop_job(self._sagemaker, job_name):
                        context.log.warning(f"StopTrainingJob sent for {job_name}")
                raise
            except TrainingJobFailed as failure:
                context.log.error(redact(str(failure)))
                raise
            summary = job_summary(description, region)
            metadata: dict[str, Any] = {**summary,
                                        "sagemaker_console_url": MetadataValue.url(summary["sagemaker_console_url"])}
            if model_dir is not None:
                if not summary["sagemaker_model_artifacts"]:
                    raise SageMakerTrainingError(f"{job_name} Completed without ModelArtifacts.S3ModelArtifacts")
                path = download_model(self._s3, summary["sagemaker_model_artifacts"], model_dir)
                context.log.info(f"model from {summary['sagemaker_model_artifacts']} extracted into {path}")
                metadata["sagemaker_model_dir"] = MetadataValue.path(str(path))
        return PipesClientCompletedInvocation(session, metadata=metadata)


class SageMakerTrainingResource(ConfigurableResource):
    """Configuration for training on SageMaker; ``run`` hands over to ``PipesSageMakerTrainingClient``."""

    default_backend: str = Field(default="local", description="What trained_model's backend 'auto' means: local "
                                 "or sagemaker (FINETUNE_MODE=aws)")
    region_name: str = Field(default="", description="AWS region ('' = from the environment)")
    bucket: str = Field(default="", description="S3 bucket for Pipes context/messages, source tarballs, outputs")
    key_prefix: str = Field(default="dagster-pipes", description="Key prefix under the bucket")
    role_arn: str = Field(default="", description="SageMaker execution role ARN")
    image_uri: str = Field(default="", description="Training image ('' = Hugging Face PyTorch training DLC)")
    launch: str = Field(default="toolkit", description="toolkit (DLC + source tarball) or entrypoint (custom image)")
    source_s3_uri: str = Field(default="", description="Pre-built source tarball ('' = build and upload per run)")
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    volume_size_gb: int = 50
    max_runtime_s: int = 24 * 3600
    use_spot: bool = False
    max_wait_s: int = Field(default=0, description="Managed spot wait limit (0 = 2 x max_runtime_s)")
    checkpoint_s3_uri: str = Field(default="", description="Spot checkpoints ('' = <output>/<job>/checkpoints)")
    output_s3_uri: str = Field(default="", description="Job output prefix ('' = s3://<bucket>/<key_prefix>/output)")
    distribution: str = Field(default="auto", description="auto | none | torch_distributed | smddp")
    job_name_prefix: str = "finetune"
    poll_initial_s: float = 15.0
    poll_max_s: float = 120.0
    message_interval_s: float = 10.0
    container_requirements: list[str] = Field(default_factory=lambda: list(DEFAULT_CONTAINER_REQUIREMENTS))

    def get_pipes_client(self, *, sagemaker_client: Any = None, s3_client: Any = None,
                         sleep: Callable[[float], None] = time.sleep) -> PipesSageMakerTrainingClient:
        return PipesSageMakerTrainingClient(
            bucket=self.bucket, key_prefix=self.key_prefix, source_s3_uri=self.source_s3_uri or None,
            region_name=self.region_name or None,
            sagemaker_client=sagemaker_client, s3_client=s3_client,
            poll=PollSettings(initial_s=self.poll_initial_s, max_s=self.poll_max_s),
            message_interval_s=self.message_interval_s, requirements=self.container_requirements, sleep=sleep)

    def run(self, *, context: AssetExecutionContext | OpExecutionContext, input_s3_uri: str,
            hyperparameters: Mapping[str, Any], model_dir: str | Path | None = None,
            environment: Mapping[str, str] | None = None, extras: Mapping[str, Any] | None = None,
            client: PipesSageMakerTrainingClient | None = None, **overrides: Any) -> PipesClientCompletedInvocation:
        if not self.role_arn and "role_arn" not in overrides:
            raise ValueError("SageMakerTrainingResource.role_arn is not set")
        settings: dict[str, Any] = {
            "role_arn": self.role_arn, "image_uri": self.image_uri or None, "launch": self.launch,
            "instance_type": self.instance_type, "instance_count": self.instance_count,
            "volume_size_gb": self.volume_size_gb, "max_runtime_s": self.max_runtime_s, "use_spot": self.use_spot,
            "max_wait_s": self.max_wait_s or None, "checkpoint_s3_uri": self.checkpoint_s3_uri or None,
            "output_s3_uri": self.output_s3_uri or join_s3(f"s3://{self.bucket}", self.key_prefix, "output"),
            "distribution": self.distribution, "job_name_prefix": self.job_name_prefix,
        }
        settings.update(overrides)
        return (client or self.get_pipes_client()).run(
            context=context, input_s3_uri=input_s3_uri, hyperparameters=hyperparameters, model_dir=model_dir,
            environment=environment, extras=extras, **settings)
