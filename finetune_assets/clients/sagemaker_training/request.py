"""Build and check the CreateTrainingJob request: what runs, where, with which hyperparameters and environment.

Limits checked before the call (botocore's SageMaker service model): HyperParameters 100 entries, keys 256 and
values 2,500 chars; Environment 100 entries, keys ``[a-zA-Z_][a-zA-Z0-9_]*`` up to 512 chars, values up to 512
chars. With the ``"entrypoint"`` launch (a custom image with the project installed),
``AlgorithmSpecification.ContainerEntrypoint`` is ``python -m finetune_assets.training`` (``torchrun --standalone
--nproc_per_node N -m ...`` on one multi-GPU instance).
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from finetune_assets.clients.sagemaker_training.aws import join_s3, split_s3_uri
from finetune_assets.clients.sagemaker_training.errors import SageMakerLimitError
from finetune_assets.clients.sagemaker_training.images import (
    distribution_hyperparameters,
    hf_training_image_uri,
    processes_per_instance,
    resolve_distribution,
)
from finetune_assets.clients.sagemaker_training.naming import MAX_TAG_VALUE
from finetune_assets.clients.sagemaker_training.source import LAUNCHER_NAME

LAUNCHES = ("toolkit", "entrypoint")
TRAINING_MODULE = "finetune_assets.training"
PIPES_ENV_VARS = ("DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES")
TRANSPORT_ENV = {"FINETUNE_PIPES_TRANSPORT": "s3"}
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"

# Service limits (botocore sagemaker service model, CreateTrainingJob).
MAX_ENV_ENTRIES, MAX_ENV_KEY, MAX_ENV_VALUE = 100, 512, 512
ENV_KEY_PATTERN = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAX_HP_ENTRIES, MAX_HP_KEY, MAX_HP_VALUE = 100, 256, 2500

# The HF Trainer prints {'loss': ..., ...}; SageMaker turns matches into the train:loss CloudWatch metric.
METRIC_DEFINITIONS = [{"Name": "train:loss", "Regex": r"'loss': '?([0-9.eE+-]+)"}]


def encode_hyperparameter(value: Any) -> str:
    """Hyperparameters are strings on SageMaker: text as is, everything else JSON (1.0, 4, true)."""
    return value if isinstance(value, str) else json.dumps(value)


def validate_environment(environment: Mapping[str, str]) -> None:
    problems = []
    if len(environment) > MAX_ENV_ENTRIES:
        problems.append(f"{len(environment)} entries (at most {MAX_ENV_ENTRIES})")
    for key, value in environment.items():
        if not isinstance(value, str):
            problems.append(f"{key}: value is {type(value).__name__}, must be a string")
            continue
        if len(key) > MAX_ENV_KEY or not ENV_KEY_PATTERN.match(key):
            problems.append(f"{key[:60]!r}: name must match [a-zA-Z_][a-zA-Z0-9_]* and be at most {MAX_ENV_KEY} chars")
        if len(value) > MAX_ENV_VALUE:
            problems.append(f"{key}: value is {len(value)} chars (at most {MAX_ENV_VALUE})")
    if problems:
        raise SageMakerLimitError(
            "training job Environment breaks SageMaker's limits (100 entries of at most 512 characters): "
            + "; ".join(problems) + ". Large values (such as a Dagster Pipes context) must travel through S3.")


def validate_hyperparameters(hyperparameters: Mapping[str, str]) -> None:
    problems = []
    if len(hyperparameters) > MAX_HP_ENTRIES:
        problems.append(f"{len(hyperparameters)} entries (at most {MAX_HP_ENTRIES})")
    for key, value in hyperparameters.items():
        if len(key) > MAX_HP_KEY:
            problems.append(f"{key[:60]!r}...: name longer than {MAX_HP_KEY} chars")
        if len(value) > MAX_HP_VALUE:
            problems.append(f"{key}: value is {len(value)} chars (at most {MAX_HP_VALUE})")
    if problems:
        raise SageMakerLimitError("training job HyperParameters break SageMaker's limits: " + "; ".join(problems))


@dataclass(frozen=True)
class TrainingJobSpec:
    """What a training job runs on and with. ``hyperparameters`` are the entry point's own (any JSON values)."""

    role_arn: str
    input_s3_uri: str
    output_s3_uri: str
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    image_uri: str | None = None           # None: the HF PyTorch training DLC for the region (toolkit launch)
    launch: str = "toolkit"                # "toolkit" | "entrypoint"
    instance_type: str = "ml.g5.xlarge"
    instance_count: int = 1
    volume_size_gb: int = 50
    max_runtime_s: int = 24 * 3600
    use_spot: bool = False
    max_wait_s: int | None = None          # spot only; default 2 x max_runtime_s
    checkpoint_s3_uri: str | None = None   # spot only; default <output>/<job name>/checkpoints
    environment: Mapping[str, str] = field(default_factory=dict)
    distribution: str = "auto"             # "auto" | "none" | "torch_distributed" | "smddp"
    container_entrypoint: Sequence[str] | None = None  # entrypoint launch; default python -m finetune_assets.training
    tags: Mapping[str, str] = field(default_factory=dict)
    extra_request: Mapping[str, Any] = field(default_factory=dict)  # e.g. VpcConfig, KMS keys; merged last

    def __post_init__(self) -> None:
        if self.launch not in LAUNCHES:
            raise ValueError(f"launch must be one of {LAUNCHES}, not {self.launch!r}")
        if self.launch == "entrypoint" and not self.image_uri:
            raise ValueError("launch='entrypoint' needs image_uri: a custom image with finetune-assets installed")
        for name in ("instance_count", "volume_size_gb", "max_runtime_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.use_spot and self.max_wait_s is not None and self.max_wait_s < self.max_runtime_s:
            raise ValueError(f"max_wait_s ({self.max_wait_s}) must be >= max_runtime_s ({self.max_runtime_s}) "
                             "for managed spot training")
        split_s3_uri(self.input_s3_uri)
        split_s3_uri(self.output_s3_uri)
        if self.checkpoint_s3_uri:
            split_s3_uri(self.checkpoint_s3_uri)

    def resolved_image(self, region: str) -> str:
        return self.image_uri or hf_training_image_uri(region)

    def resolved_distribution(self) -> str:
        return resolve_distribution(self.distribution, self.instance_type, self.instance_count)

    def identity(self, region: str) -> dict[str, Any]:
        """What makes two jobs the same job (the role, tags and Pipes variables do not)."""
        return {
            "image": self.resolved_image(region), "launch": self.launch, "instance_type": self.instance_type,
            "instance_count": self.instance_count, "volume_size_gb": self.volume_size_gb,
            "max_runtime_s": self.max_runtime_s, "use_spot": self.use_spot, "max_wait_s": self.max_wait_s,
            "checkpoint_s3_uri": self.checkpoint_s3_uri, "input": self.input_s3_uri, "output": self.output_s3_uri,
            "hyperparameters": {k: encode_hyperparameter(v) for k, v in self.hyperparameters.items()},
            "environment": dict(self.environment), "distribution": self.resolved_distribution(),
            "container_entrypoint": list(self.container_entrypoint or []), "extra": dict(self.extra_request),
        }


def container_entrypoint_for(spec: TrainingJobSpec) -> list[str]:
    if spec.container_entrypoint:
        return list(spec.container_entrypoint)
    distribution = spec.resolved_distribution()
    if distribution == "none":
        return ["python", "-m", TRAINING_MODULE]
    if spec.instance_count == 1 and distribution == "torch_distributed":
        return ["torchrun", "--standalone", "--nproc_per_node", str(processes_per_instance(spec.instance_type)),
                "-m", TRAINING_MODULE]
    raise ValueError(f"launch='entrypoint' with distribution={distribution!r} on {spec.instance_count} instances "
                     "needs container_entrypoint (a multi-node torchrun wrapper reading "
                     "/opt/ml/input/config/resourceconfig.json), or use launch='toolkit'")


def build_create_request(spec: TrainingJobSpec, *, job_name: str, region: str, environment: Mapping[str, str],
                         source_s3_uri: str | None = None, tags: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The CreateTrainingJob request. ``environment`` is the full container environment (validated here)."""
    hyperparameters = {key: encode_hyperparameter(value) for key, value in spec.hyperparameters.items()}
    clashes = sorted(key for key in hyperparameters if key.startswith("sagemaker_"))
    if clashes:
        raise ValueError(f"hyperparameter names starting with 'sagemaker_' are reserved for the toolkit: {clashes}")
    algorithm: dict[str, Any] = {"TrainingImage": spec.resolved_image(region), "TrainingInputMode": "File",
                                 "MetricDefinitions": METRIC_DEFINITIONS}
    if spec.launch == "toolkit":
        if not source_s3_uri:
            raise ValueError("the toolkit launch needs source_s3_uri (the uploaded source tarball)")
        hyperparameters.update({
            "sagemaker_program": json.dumps(LAUNCHER_NAME),
            "sagemaker_submit_directory": json.dumps(source_s3_uri),
            "sagemaker_container_log_level": json.dumps(logging.INFO),
            "sagemaker_region": json.dumps(region),
            "sagemaker_job_name": json.dumps(job_name),
        })
        hyperparameters.update(distribution_hyperparameters(spec.resolved_distribution(), spec.instance_type))
    else:
        algorithm["ContainerEntrypoint"] = container_entrypoint_for(spec)
    validate_hyperparameters(hyperparameters)
    environment = dict(environment)
    validate_environment(environment)

    stopping: dict[str, int] = {"MaxRuntimeInSeconds": spec.max_runtime_s}
    request: dict[str, Any] = {
        "TrainingJobName": job_name,
        "RoleArn": spec.role_arn,
        "AlgorithmSpecification": algorithm,
        "HyperParameters": hyperparameters,
        "InputDataConfig": [{
            "ChannelName": "train",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": spec.input_s3_uri,
                                            "S3DataDistributionType": "FullyReplicated"}},
            "ContentType": "application/jsonlines",
        }],
        "OutputDataConfig": {"S3OutputPath": spec.output_s3_uri},
        "ResourceConfig": {"InstanceType": spec.instance_type, "InstanceCount": spec.instance_count,
                           "VolumeSizeInGB": spec.volume_size_gb},
        "StoppingCondition": stopping,
        "Environment": environment,
    }
    if spec.use_spot:
        stopping["MaxWaitTimeInSeconds"] = spec.max_wait_s or 2 * spec.max_runtime_s
        request["EnableManagedSpotTraining"] = True
        request["CheckpointConfig"] = {
            "S3Uri": spec.checkpoint_s3_uri or join_s3(spec.output_s3_uri, job_name, "checkpoints"),
            "LocalPath": CHECKPOINT_LOCAL_PATH,
        }
    all_tags = {**(tags or {}), **spec.tags}
    if all_tags:
        request["Tags"] = [{"Key": key[:128], "Value": str(value)[:MAX_TAG_VALUE]} for key, value in all_tags.items()]
    request.update(spec.extra_request)
    return request
