"""Serve a sentence-transformers model from a SageMaker endpoint (real-time or serverless); boto3 only, no Dagster.

AWS API actions this module calls (for the IAM policy of whoever runs the deployment):
    s3:GetObject                       HeadObject on the model.tar.gz key (skip the upload when it is there)
    s3:PutObject                       upload_file of model.tar.gz (multipart above 8 MB needs no other action)
    sagemaker:DescribeModel            is the content-named model there already?
    sagemaker:CreateModel              + iam:PassRole on the execution role (ExecutionRoleArn)
    sagemaker:DescribeEndpointConfig   is the content-named endpoint config there already?
    sagemaker:CreateEndpointConfig
    sagemaker:DescribeEndpoint         state before deploying, then polled until InService
    sagemaker:CreateEndpoint           when the endpoint does not exist
    sagemaker:UpdateEndpoint           when it serves another endpoint config
    sagemaker:DeleteEndpoint           only for an endpoint whose creation Failed (it serves nothing), to re-create it
    sagemaker:AddTags                  Tags given to CreateModel / CreateEndpointConfig / CreateEndpoint
    sagemaker:InvokeEndpoint           (sagemaker-runtime) the smoke test after InService
The execution role itself needs s3:GetObject on the model.tar.gz, ECR pull on the image, and CloudWatch Logs.

Idempotency: model.tar.gz is stored under a hash of its inputs (model files, handler, requirements); the model and
endpoint-config names are ``<prefix>-<index>-<hash>`` of everything that defines them; the endpoint name is stable
(``<prefix>-<index>``), so an ml-commons connector keeps pointing at it. A re-run with the same model describes
everything and changes nothing; a changed model or setting creates a new model and config and updates the endpoint
in place (SageMaker swaps instances with no downtime, and rolls back when the new ones fail).

Throttling and transient errors: the clients come from ``make_client`` (botocore standard retry mode, 8 attempts,
exponential backoff), which retries ThrottlingException, 5xx answers and dropped connections on every call here.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from finetune_assets.clients.sagemaker_training.aws import is_not_found, join_s3, region_of, slug, split_s3_uri
from finetune_assets.clients.sagemaker_training.images import HF_DLC_ACCOUNTS, gpus_per_instance
from finetune_assets.clients.sagemaker_training.jobs import PollSettings
from finetune_assets.clients.sagemaker_training.naming import inputs_digest, tag_value, training_job_base_name
from finetune_assets.clients.sagemaker_training.request import validate_environment
from finetune_assets.clients.sagemaker_training.source import write_tar_gz
from finetune_assets.core.cost import cost
from finetune_assets.core.export.package import sha256_file
from finetune_assets.serving import inference

logger = logging.getLogger(__name__)

MODES = ("realtime", "serverless")
# AWS PyTorch inference DLC (sagemaker flavour). Its toolkit calls model_fn/input_fn/predict_fn/output_fn and
# pip-installs code/requirements.txt at start-up; unlike the Hugging Face inference toolkit it imports no
# transformers itself, so upgrading transformers to 5.x (sentence-transformers 6 needs it) cannot break it.
PYTORCH_INFERENCE_REPOSITORY = "pytorch-inference"
DEFAULT_CPU_IMAGE_TAG = "2.6.0-cpu-py312-ubuntu22.04-sagemaker"
DEFAULT_GPU_IMAGE_TAG = "2.6.0-gpu-py312-cu124-ubuntu22.04-sagemaker"
# torch is left out on purpose: the image's build (CPU or CUDA) must stay.
SERVING_REQUIREMENTS = ("sentence-transformers==6.2.0", "transformers>=5.0,<6")
HANDLER_NAME = "inference.py"
SERVERLESS_MEMORY_MB = tuple(range(1024, 6145, 1024))
MAX_SERVERLESS_CONCURRENCY = 200
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
IN_PROGRESS = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})
FAILED = frozenset({"Failed", "UpdateRollbackFailed", "OutOfService", "Deleting"})
SMOKE_TEXTS = ("What does a search engine index?", "An inverted index maps terms to the documents containing them.")
DEFAULT_POLL = PollSettings(initial_s=15.0, max_s=60.0, factor=1.5, timeout_s=3600.0)


class EndpointError(RuntimeError):
    """Deploying or calling the endpoint failed; the message says which call and why."""


class EndpointFailed(EndpointError):
    """The endpoint ended Failed (or another state it cannot serve from); ``reason`` is SageMaker's FailureReason."""

    def __init__(self, endpoint_name: str, status: str, reason: str | None):
        self.endpoint_name, self.status, self.reason = endpoint_name, status, reason
        text = f"SageMaker endpoint {endpoint_name} is {status}"
        super().__init__(text + (f": {reason}" if reason else " (no FailureReason given)"))


class EndpointRolledBack(EndpointFailed):
    """UpdateEndpoint did not take: SageMaker rolled back and the endpoint still serves ``serving_config``."""

    def __init__(self, endpoint_name: str, reason: str | None, serving_config: str, wanted_config: str):
        super().__init__(endpoint_name, "InService (update rolled back)", reason)
        self.serving_config, self.wanted_config = serving_config, wanted_config
        self.args = (f"{self.args[0]}. It still serves {serving_config}, not {wanted_config}.",)


class EndpointTimeout(EndpointError, TimeoutError):
    pass


# ------------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class EndpointSpec:
    """What to deploy and how; ``mode`` realtime uses the instance fields, serverless the memory/concurrency ones."""

    role_arn: str
    mode: str = "serverless"
    instance_type: str = cost.DEFAULT_ENDPOINT_INSTANCE
    instance_count: int = 1
    memory_mb: int = cost.DEFAULT_SERVERLESS_MEMORY_MB
    max_concurrency: int = 5
    image_uri: str = ""
    environment: Mapping[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"deployment mode must be one of {MODES}, not {self.mode!r}")
        if not self.role_arn:
            raise ValueError("a SageMaker execution role ARN is needed (set FINETUNE_SAGEMAKER_ROLE_ARN): the "
                             "endpoint's containers use it to read model.tar.gz and pull the image")
        if self.mode == "realtime" and self.instance_count < 1:
            raise ValueError(f"instance_count must be at least 1, not {self.instance_count}")
        if self.mode == "serverless" and self.memory_mb not in SERVERLESS_MEMORY_MB:
            raise ValueError(f"memory_mb must be one of {SERVERLESS_MEMORY_MB} for a serverless endpoint, "
                             f"not {self.memory_mb}")
        if self.mode == "serverless" and not 1 <= self.max_concurrency <= MAX_SERVERLESS_CONCURRENCY:
            raise ValueError(f"max_concurrency must be 1..{MAX_SERVERLESS_CONCURRENCY}, not {self.max_concurrency}")

    def resolved_image(self, region: str) -> str:
        if self.image_uri:
            return self.image_uri
        gpu = self.mode == "realtime" and gpus_per_instance(self.instance_type) > 0
        return inference_image_uri(region, gpu=gpu)

    def variant(self, model_name: str) -> dict[str, Any]:
        variant: dict[str, Any] = {"VariantName": "AllTraffic", "ModelName": model_name}
        if self.mode == "serverless":
            variant["ServerlessConfig"] = {"MemorySizeInMB": self.memory_mb, "MaxConcurrency": self.max_concurrency}
        else:
            variant.update(InstanceType=self.instance_type, InitialInstanceCount=self.instance_count,
                           InitialVariantWeight=1.0)
        return variant


def inference_image_uri(region: str, *, gpu: bool = False) -> str:
    """The AWS PyTorch inference DLC for a region (same registry accounts as the Hugging Face DLCs)."""
    account = HF_DLC_ACCOUNTS.get(region)
    if account is None:
        raise ValueError(f"no known Deep Learning Container registry for region {region!r}; set image_uri "
                         f"(<account>.dkr.ecr.<region>.amazonaws.com/{PYTORCH_INFERENCE_REPOSITORY}:<tag>)")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    tag = DEFAULT_GPU_IMAGE_TAG if gpu else DEFAULT_CPU_IMAGE_TAG
    return f"{account}.dkr.ecr.{region}.{domain}/{PYTORCH_INFERENCE_REPOSITORY}:{tag}"


def container_environment(region: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the inference toolkit reads: the handler module and its folder; HF_HUB_OFFLINE since every file ships."""
    env = {"SAGEMAKER_PROGRAM": HANDLER_NAME, "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
           "SAGEMAKER_CONTAINER_LOG_LEVEL": "20", "SAGEMAKER_REGION": region, "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", **(extra or {})}
    validate_environment(env)
    return env


# ------------------------------------------------------------------------------------------------ names


def endpoint_name_for(prefix: str, index: str) -> str:
    """``<prefix>-<index>``: stable across model versions, so a connector URL stays valid after updates."""
    name = "-".join(p for p in (slug(prefix, 63), slug(index, 63)) if p)[:63].strip("-")
    return check_name(name or "endpoint", "endpoint name")


def versioned_name(prefix: str, index: str, identity: Mapping[str, Any]) -> str:
    """``<prefix>-<index>-<hash of identity>`` for models and endpoint configs (both at most 63 characters)."""
    return check_name(training_job_base_name(prefix, index, inputs_digest(identity)), "name")


def check_name(name: str, what: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ValueError(f"invalid SageMaker {what} {name!r}: letters, digits and single hyphens, at most 63")
    return name


# ------------------------------------------------------------------------------------------------ model.tar.gz


def handler_files(requirements: Sequence[str] = SERVING_REQUIREMENTS) -> dict[str, bytes]:
    """``code/inference.py`` and ``code/requirements.txt``, the layout SageMaker's inference toolkits expect."""
    return {f"code/{HANDLER_NAME}": Path(inference.__file__).read_bytes(),
            "code/requirements.txt": "".join(f"{line}\n" for line in requirements).encode()}


def _model_files(model_dir: Path) -> list[tuple[str, Path]]:
    if not model_dir.is_dir():
        raise FileNotFoundError(f"no model folder at {model_dir}")
    files = sorted((p.relative_to(model_dir).as_posix(), p) for p in model_dir.rglob("*") if p.is_file())
    kept = [(name, path) for name, path in files
            if not name.startswith("code/") and "__pycache__" not in name and not name.endswith(".pyc")]
    if not kept:
        raise FileNotFoundError(f"the model folder {model_dir} is empty")
    return kept


def model_digest(model_dir: str | Path, requirements: Sequence[str] = SERVING_REQUIREMENTS) -> str:
    """sha256 over every model file's name and content hash plus the handler files (not over gzip bytes)."""
    digest = hashlib.sha256()
    for name, path in _model_files(Path(model_dir)):
        digest.update(f"{name}\0{sha256_file(path)}\n".encode())
    for name, data in sorted(handler_files(requirements).items()):
        digest.update(f"{name}\0{hashlib.sha256(data).hexdigest()}\n".encode())
    return digest.hexdigest()


def package_model(model_dir: str | Path, destination: str | Path,
                  requirements: Sequence[str] = SERVING_REQUIREMENTS) -> Path:
    """model.tar.gz: the model folder at the root plus ``code/`` (weights barely compress: gzip level 1)."""
    entries: list[tuple[str, bytes | Path]] = [*_model_files(Path(model_dir)), *handler_files(requirements).items()]
    path, _ = write_tar_gz(destination, entries, compresslevel=1)
    return path


def upload_model_data(s3, model_dir: str | Path, s3_prefix: str,
                      requirements: Sequence[str] = SERVING_REQUIREMENTS) -> tuple[str, bool]:
    """``<s3_prefix>/model-<hash>.tar.gz``, packed and uploaded only when not there yet; returns (uri, uploaded)."""
    from botocore.exceptions import ClientError

    uri = join_s3(s3_prefix, f"model-{model_digest(model_dir, requirements)[:16]}.tar.gz")
    bucket, key = split_s3_uri(uri)
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return uri, False
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    with tempfile.TemporaryDirectory(prefix="model-tar-") as folder:
        archive = package_model(model_dir, Path(folder) / "model.tar.gz", requirements)
        s3.upload_file(str(archive), bucket, key)
    return uri, True


# ------------------------------------------------------------------------------------------------ SageMaker calls


def _exists_error(error) -> bool:
    info = error.response.get("Error", {})
    return info.get("Code") == "ResourceInUse" or "already exist" in info.get("Message", "").lower()


def _describe(call: Callable[..., dict], **kwargs) -> dict | None:
    from botocore.exceptions import ClientError

    try:
        return call(**kwargs)
    except ClientError as error:
        if is_not_found(error):
            return None
        raise


def _create(create: Callable[..., dict], describe: Callable[[], dict | None], request: Mapping[str, Any],
            what: str) -> bool:
    """Create unless it exists; a name clash with a concurrent run counts as existing. True when created here."""
    from botocore.exceptions import ClientError

    if describe() is not None:
        return False
    try:
        create(**request)
        return True
    except ClientError as error:
        if _exists_error(error) and describe() is not None:
            return False
        info = error.response.get("Error", {})
        raise EndpointError(f"{what} failed: {info.get('Code')}: {info.get('Message')}") from error


def _tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": key[:128], "Value": tag_value(str(value))} for key, value in tags.items()]


def ensure_model(sagemaker, name: str, *, image_uri: str, model_data_uri: str, role_arn: str,
                 environment: Mapping[str, str], tags: Mapping[str, str]) -> bool:
    request = {"ModelName": name, "ExecutionRoleArn": role_arn, "Tags": _tags(tags),
               "PrimaryContainer": {"Image": image_uri, "ModelDataUrl": model_data_uri,
                                    "Environment": dict(environment)}}
    return _create(sagemaker.create_model, lambda: _describe(sagemaker.describe_model, ModelName=name), request,
                   f"CreateModel {name}")


def ensure_endpoint_config(sagemaker, name: str, variant: Mapping[str, Any], tags: Mapping[str, str]) -> bool:
    request = {"EndpointConfigName": name, "ProductionVariants": [dict(variant)], "Tags": _tags(tags)}
    return _create(sagemaker.create_endpoint_config,
                   lambda: _describe(sagemaker.describe_endpoint_config, EndpointConfigName=name), request,
                   f"CreateEndpointConfig {name}")


def describe_endpoint(sagemaker, name: str) -> dict | None:
    return _describe(sagemaker.describe_endpoint, EndpointName=name)


def wait_for_endpoint(sagemaker, name: str, *, config_name: str | None = None, poll: PollSettings = DEFAULT_POLL,
                      on_status: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> dict:
    """Poll DescribeEndpoint until it settles: InService returns the description, Failed raises (FailureReason as is).

    With ``config_name``, InService on another config after a transition means SageMaker rolled the update back
    (raises ``EndpointRolledBack``); before any transition it is taken as not yet visible, and polled again.
    """
    started, interval, last, moved = clock(), poll.initial_s, None, False
    while True:
        description = sagemaker.describe_endpoint(EndpointName=name)
        status = description["EndpointStatus"]
        changed = status != last
        if changed and on_status is not None:
            reason = description.get("FailureReason")
            on_status(f"{name}: {status}" + (f" ({reason})" if reason and status != "InService" else ""))
        moved = moved or (last is not None and changed) or status in IN_PROGRESS
        last = status
        if status == "InService":
            serving = description.get("EndpointConfigName")
            if config_name is None or serving == config_name:
                return description
            if moved:
                raise EndpointRolledBack(name, description.get("FailureReason"), serving, config_name)
        elif status in FAILED:
            raise EndpointFailed(name, status, description.get("FailureReason"))
        waited = clock() - started
        if poll.timeout_s is not None and waited >= poll.timeout_s:
            raise EndpointTimeout(f"SageMaker endpoint {name} still {status} after {waited:.0f} s; it keeps going "
                                  "in SageMaker, and a re-run picks it up")
        interval = poll.initial_s if changed else min(poll.max_s, interval * poll.factor)
        sleep(interval)


def _wait_deleted(sagemaker, name: str, poll: PollSettings, sleep: Callable[[float], None],
                  clock: Callable[[], float]) -> None:
    started = clock()
    while describe_endpoint(sagemaker, name) is not None:
        if poll.timeout_s is not None and clock() - started >= poll.timeout_s:
            raise EndpointTimeout(f"SageMaker endpoint {name} was not deleted within {poll.timeout_s:.0f} s")
        sleep(poll.initial_s)


# ------------------------------------------------------------------------------------------------ deploy


@dataclass(frozen=True)
class StagedModel:
    """What an endpoint should serve: the model, its endpoint config, and where model.tar.gz lies."""

    endpoint_name: str
    model_name: str
    endpoint_config_name: str
    model_data_uri: str
    mode: str
    region: str
    kind: str                        # dense | sparse (inference.model_kind of the model folder)
    created: tuple[str, ...] = ()    # what staging created: model.tar.gz, model, endpoint config
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Deployment:
    staged: StagedModel
    endpoint_arn: str
    action: str                      # created | updated | unchanged | recreated

    @property
    def console_url(self) -> str:
        region, name = self.staged.region, self.staged.endpoint_name
        return f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#/endpoints/{name}"

    def to_dict(self) -> dict[str, Any]:
        staged = {key: value for key, value in asdict(self.staged).items() if key != "tags"}
        return {**staged, "created": list(self.staged.created), "endpoint_arn": self.endpoint_arn,
                "action": self.action, "console_url": self.console_url}


def stage_model(sagemaker, s3, model_dir: str | Path, spec: EndpointSpec, *, index: str, model_data_prefix: str,
                endpoint_name: str = "", name_prefix: str = "finetune",
                on_status: Callable[[str], None] | None = None) -> StagedModel:
    """Upload model.tar.gz, CreateModel and CreateEndpointConfig, each only when its content-named copy is missing."""
    spec.validate()
    region = region_of(sagemaker)
    kind = inference.model_kind(model_dir)
    endpoint_name = check_name(endpoint_name, "endpoint name") if endpoint_name else \
        endpoint_name_for(name_prefix, index)
    tags = {"finetune-index": index, "finetune-endpoint": endpoint_name}
    data_uri, uploaded = upload_model_data(s3, model_dir, model_data_prefix)
    image = spec.resolved_image(region)
    environment = container_environment(region, spec.environment)
    model_name = versioned_name(name_prefix, index, {"data": data_uri, "image": image, "role": spec.role_arn,
                                                     "environment": environment})
    new_model = ensure_model(sagemaker, model_name, image_uri=image, model_data_uri=data_uri, role_arn=spec.role_arn,
                             environment=environment, tags=tags)
    variant = spec.variant(model_name)
    config_name = versioned_name(name_prefix, index, {"variant": variant})
    new_config = ensure_endpoint_config(sagemaker, config_name, variant, tags)
    created = tuple(what for what, done in (("model.tar.gz", uploaded), ("model", new_model),
                                             ("endpoint config", new_config)) if done)
    (on_status or logger.info)(f"model {model_name} ({'new' if new_model else 'reused'}), endpoint config "
                               f"{config_name} ({'new' if new_config else 'reused'}), model data {data_uri}")
    return StagedModel(endpoint_name, model_name, config_name, data_uri, spec.mode, region, kind, created, tags)


def roll_out(sagemaker, staged: StagedModel, *, poll: PollSettings = DEFAULT_POLL,
             on_status: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> Deployment:
    """CreateEndpoint, UpdateEndpoint or nothing, so the endpoint serves the staged config; wait for InService."""
    say = on_status or logger.info
    action = _converge(sagemaker, staged.endpoint_name, staged.endpoint_config_name, staged.tags, poll=poll, say=say,
                       sleep=sleep, clock=clock)
    description = wait_for_endpoint(sagemaker, staged.endpoint_name, config_name=staged.endpoint_config_name,
                                    poll=poll, on_status=say, sleep=sleep, clock=clock)
    return Deployment(staged, description["EndpointArn"], action)


def deploy_endpoint(sagemaker, s3, model_dir: str | Path, spec: EndpointSpec, *, index: str, model_data_prefix: str,
                    endpoint_name: str = "", name_prefix: str = "finetune", poll: PollSettings = DEFAULT_POLL,
                    on_status: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic) -> Deployment:
    staged = stage_model(sagemaker, s3, model_dir, spec, index=index, model_data_prefix=model_data_prefix,
                         endpoint_name=endpoint_name, name_prefix=name_prefix, on_status=on_status)
    return roll_out(sagemaker, staged, poll=poll, on_status=on_status, sleep=sleep, clock=clock)


def _converge(sagemaker, name: str, config_name: str, tags: Mapping[str, str], *, poll: PollSettings,
              say: Callable[[str], None], sleep: Callable[[float], None], clock: Callable[[], float]) -> str:
    """Make ``name`` serve ``config_name``: create, update, leave alone, or re-create after a failed creation."""
    from botocore.exceptions import ClientError

    action = "created"
    existing = describe_endpoint(sagemaker, name)
    if existing is not None and existing["EndpointStatus"] in IN_PROGRESS \
            and existing.get("EndpointConfigName") != config_name:
        say(f"{name} is {existing['EndpointStatus']} (another deployment): waiting before changing it")
        try:
            existing = wait_for_endpoint(sagemaker, name, poll=poll, on_status=say, sleep=sleep, clock=clock)
        except EndpointFailed as failure:
            existing = {"EndpointStatus": failure.status, "FailureReason": failure.reason}
    if existing is not None and existing["EndpointStatus"] == "Failed":
        say(f"{name} failed before ({existing.get('FailureReason')}); deleting it to create it again")
        sagemaker.delete_endpoint(EndpointName=name)
        _wait_deleted(sagemaker, name, poll, sleep, clock)
        existing, action = None, "recreated"
    try:
        if existing is None:
            sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=config_name, Tags=_tags(tags))
            say(f"CreateEndpoint {name} -> {config_name}")
            return action
        if existing.get("EndpointConfigName") == config_name:
            return "unchanged"
        sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=config_name)
        say(f"UpdateEndpoint {name}: {existing.get('EndpointConfigName')} -> {config_name}")
        return "updated"
    except ClientError as error:
        info = error.response.get("Error", {})
        raise EndpointError(f"deploying {config_name} to endpoint {name} failed: {info.get('Code')}: "
                            f"{info.get('Message')}") from error


# ------------------------------------------------------------------------------------------------ smoke test


def invoke_endpoint(runtime, endpoint_name: str, texts: Sequence[str] = SMOKE_TEXTS) -> list:
    """InvokeEndpoint with a JSON list of strings (what ml-commons sends); returns the decoded JSON answer."""
    from botocore.exceptions import ClientError

    try:
        answer = runtime.invoke_endpoint(EndpointName=endpoint_name, ContentType="application/json",
                                         Accept="application/json", Body=json.dumps(list(texts)).encode())
    except ClientError as error:
        response = error.response
        info = response.get("Error", {})
        detail = response.get("OriginalMessage") or info.get("Message")
        status = f" (container answered {response['OriginalStatusCode']})" if "OriginalStatusCode" in response else ""
        logs = f"; logs: {response['LogStreamArn']}" if response.get("LogStreamArn") else ""
        raise EndpointError(f"InvokeEndpoint {endpoint_name} failed: {info.get('Code')}{status}: {detail}{logs}") \
            from error
    raw = answer["Body"].read()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise EndpointError(f"{endpoint_name} answered {answer.get('ContentType')} that is not JSON: "
                            f"{raw[:200]!r}") from exc


def prediction_shape(prediction: Any, count: int, kind: str) -> str:
    """Check an answer against the ml-commons contract for ``kind``; a short description of its shape."""
    def fail(problem: str) -> EndpointError:
        return EndpointError(f"the endpoint's answer breaks the {kind} contract: {problem}")

    if not isinstance(prediction, list) or len(prediction) != count:
        raise fail(f"expected a list of {count} items, got {type(prediction).__name__} "
                   f"of {len(prediction) if isinstance(prediction, list) else '?'}")
    if kind == inference.DENSE:
        sizes = set()
        for number, row in enumerate(prediction):
            if not isinstance(row, list) or not row or not all(_finite(v) for v in row):
                raise fail(f"item {number} is not a non-empty list of finite numbers")
            sizes.add(len(row))
        if len(sizes) != 1:
            raise fail(f"vectors of different lengths {sorted(sizes)}")
        return f"{count} x {sizes.pop()} dense"
    for number, row in enumerate(prediction):
        if not isinstance(row, dict) or not all(isinstance(k, str) and _finite(v) and v > 0 for k, v in row.items()):
            raise fail(f"item {number} is not an object of token -> positive weight")
    if not any(prediction):
        raise fail("every item is empty (no token has a weight)")
    return f"{count} sparse, {'/'.join(str(len(row)) for row in prediction)} tokens"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def smoke_test(runtime, deployment: Deployment, texts: Sequence[str] = SMOKE_TEXTS) -> str:
    staged = deployment.staged
    return prediction_shape(invoke_endpoint(runtime, staged.endpoint_name, texts), len(texts), staged.kind)


__all__ = [
    "DEFAULT_POLL", "Deployment", "EndpointError", "EndpointFailed", "EndpointRolledBack", "EndpointSpec",
    "EndpointTimeout", "MODES", "SERVING_REQUIREMENTS", "SMOKE_TEXTS", "StagedModel", "container_environment",
    "deploy_endpoint", "describe_endpoint", "endpoint_name_for", "ensure_endpoint_config", "ensure_model",
    "handler_files", "inference_image_uri", "invoke_endpoint", "model_digest", "package_model", "prediction_shape",
    "roll_out", "smoke_test", "stage_model", "upload_model_data", "versioned_name", "wait_for_endpoint",
]
