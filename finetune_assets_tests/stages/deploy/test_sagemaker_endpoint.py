"""SageMaker endpoint deployment: moto over HTTP for what it implements (S3, CreateModel, endpoint configs,
CreateEndpoint, DescribeEndpoint, canned InvokeEndpoint), botocore Stubber (requests validated against the real
service model) for the status sequences moto cannot produce (Creating, Updating, Failed, RollingBack) and for
UpdateEndpoint, which moto does not implement. The last tests run the Dagster assets: model_endpoint against moto,
then registered_model_id against the ml-commons contract server, which must take the remote-model path.
"""
from __future__ import annotations

import datetime as dt
import importlib.util
import io
import json
import shutil
import tarfile
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from dagster import DagsterInstance, materialize

from finetune_assets.clients import sagemaker_endpoint as ep
from finetune_assets.clients.sagemaker_training.aws import make_client
from finetune_assets.clients.sagemaker_training.jobs import PollSettings
from finetune_assets.core.jsonl import read_json, write_json, write_jsonl
from finetune_assets.core.offline_models import splade_tiny_path
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.opensearch import OpenSearchResource
from finetune_assets.resources.sagemaker_endpoint import SageMakerEndpointResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.serving import inference
from finetune_assets.stages.deploy.model_endpoint import model_endpoint
from finetune_assets.stages.deploy.model_package import PACKAGE_FILE
from finetune_assets.stages.deploy.registered_model_id import registered_model_id
from finetune_assets_tests.fakes.ml_commons_fake import DEV_SETTINGS, running_fake
from finetune_assets_tests.fakes.moto_server import moto_aws, moto_server  # noqa: F401

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/sagemaker-execution"
CONNECTOR_ROLE = "arn:aws:iam::123456789012:role/opensearch-invokes-sagemaker"
BUCKET = "finetune-models"
INDEX = "tiny-docs"
FAST = PollSettings(initial_s=1.0, max_s=3.0, factor=2.0, timeout_s=60.0)
SERVERLESS = ep.EndpointSpec(role_arn=ROLE, mode="serverless", memory_mb=2048, max_concurrency=3)
FAILURE = ("The primary container for production variant AllTraffic did not pass the ping health check. "
           "Please check CloudWatch logs for this endpoint.")


def not_found(stubber: Stubber, method: str, what: str, params: dict) -> None:
    stubber.add_client_error(method, "ValidationException", f'Could not find {what} "arn:aws:sagemaker:x".',
                             http_status_code=400, expected_params=params)


def endpoint_answer(status: str, config: str, reason: str | None = None, name: str = "finetune-tiny-docs") -> dict:
    now = dt.datetime(2026, 11, 23, tzinfo=dt.timezone.utc)
    answer = {"EndpointName": name, "EndpointArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/{name}",
              "EndpointConfigName": config, "EndpointStatus": status, "CreationTime": now, "LastModifiedTime": now}
    if reason:
        answer["FailureReason"] = reason
    return answer


def staged(config: str = "finetune-tiny-docs-bbbbbbbbbb") -> ep.StagedModel:
    return ep.StagedModel("finetune-tiny-docs", "finetune-tiny-docs-mmmmmmmmmm", config, "s3://b/model.tar.gz",
                          "serverless", REGION, "sparse", tags={"finetune-index": INDEX})


@pytest.fixture
def sagemaker_stub():
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


@pytest.fixture(scope="module")
def splade_handler_model():
    """SPLADE-tiny loaded by the handler (once: importing sentence-transformers is the slow part)."""
    return inference.model_fn(str(splade_tiny_path()))


@pytest.fixture
def aws(moto_aws):  # noqa: F811 - the fixture imported above
    moto_aws.client("s3").create_bucket(Bucket=BUCKET)
    return moto_aws


def changed_copy(source: Path, folder: Path) -> Path:
    """The same model with one changed file, as a new training run would give."""
    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "finetune_run": 2}))
    return folder


def deploy(model_dir: Path, spec: ep.EndpointSpec = SERVERLESS, **kwargs) -> ep.Deployment:
    return ep.deploy_endpoint(make_client("sagemaker"), make_client("s3"), model_dir, spec, index=INDEX,
                              model_data_prefix=f"s3://{BUCKET}/endpoints/{INDEX}", poll=FAST, sleep=lambda s: None,
                              **kwargs)


# --------------------------------------------------------------------------------------------- model.tar.gz


def test_model_tar_gz_serves_with_only_its_own_code(tmp_path, splade_handler_model):
    archive = ep.package_model(splade_tiny_path(), tmp_path / "model.tar.gz")
    assert ep.package_model(splade_tiny_path(), tmp_path / "again.tar.gz").read_bytes() == archive.read_bytes()
    extracted = tmp_path / "opt-ml-model"
    with tarfile.open(archive) as tar:
        tar.extractall(extracted, filter="data")
    assert (extracted / "code" / "inference.py").read_bytes() == Path(inference.__file__).read_bytes()
    assert (extracted / "code" / "requirements.txt").read_text().split() == list(ep.SERVING_REQUIREMENTS)
    assert (extracted / "config.json").read_bytes() == (splade_tiny_path() / "config.json").read_bytes()

    # As the container does: import code/inference.py by path, with no finetune_assets on the path.
    spec = importlib.util.spec_from_file_location("inference", extracted / "code" / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.model_fn(str(extracted))
    rows = json.loads(module.output_fn(module.predict_fn(module.input_fn(b'["yellow bananas"]', "application/json"),
                                                         model), "application/json"))
    assert len(rows) == 1 and "banana" in " ".join(rows[0])
    source = (extracted / "code" / "inference.py").read_text()
    assert "import finetune_assets" not in source and "from finetune_assets" not in source


# --------------------------------------------------------------------------------------------- moto


def test_deploy_creates_everything_once_and_a_rerun_reuses_it(aws):
    first = deploy(splade_tiny_path())
    sagemaker, s3 = aws.client("sagemaker"), aws.client("s3")
    assert first.action == "created" and first.staged.created == ("model.tar.gz", "model", "endpoint config")
    model = sagemaker.describe_model(ModelName=first.staged.model_name)
    container = model["PrimaryContainer"]
    assert container["Image"] == ep.inference_image_uri(REGION) and "pytorch-inference" in container["Image"]
    assert container["ModelDataUrl"] == first.staged.model_data_uri and model["ExecutionRoleArn"] == ROLE
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    variant = sagemaker.describe_endpoint_config(EndpointConfigName=first.staged.endpoint_config_name)[
        "ProductionVariants"][0]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 3}
    assert variant["ModelName"] == first.staged.model_name
    endpoint = sagemaker.describe_endpoint(EndpointName="finetune-tiny-docs")
    assert endpoint["EndpointConfigName"] == first.staged.endpoint_config_name
    assert first.endpoint_arn == endpoint["EndpointArn"]

    again = deploy(splade_tiny_path())
    assert again.action == "unchanged" and again.staged.created == ()
    names = ("endpoint_name", "model_name", "endpoint_config_name", "model_data_uri")
    assert [getattr(again.staged, n) for n in names] == [getattr(first.staged, n) for n in names]
    assert len(sagemaker.list_models()["Models"]) == 1
    assert len(sagemaker.list_endpoint_configs()["EndpointConfigs"]) == 1
    assert s3.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 1


def test_a_changed_model_or_setting_stages_new_versions_beside_the_old(aws, tmp_path):
    first = deploy(splade_tiny_path())
    sagemaker = make_client("sagemaker")
    s3_prefix = f"s3://{BUCKET}/endpoints/{INDEX}"
    changed = ep.stage_model(sagemaker, make_client("s3"), changed_copy(splade_tiny_path(), tmp_path / "m2"),
                             SERVERLESS, index=INDEX, model_data_prefix=s3_prefix)
    assert changed.created == ("model.tar.gz", "model", "endpoint config")
    assert changed.model_name != first.staged.model_name and changed.model_data_uri != first.staged.model_data_uri
    assert changed.endpoint_config_name != first.staged.endpoint_config_name
    assert changed.endpoint_name == first.staged.endpoint_name          # the same endpoint gets updated
    realtime = ep.stage_model(sagemaker, make_client("s3"), splade_tiny_path(),
                              ep.EndpointSpec(role_arn=ROLE, mode="realtime", instance_type="ml.c5.large",
                                              instance_count=2), index=INDEX, model_data_prefix=s3_prefix)
    assert realtime.created == ("endpoint config",) and realtime.model_name == first.staged.model_name
    variant = aws.client("sagemaker").describe_endpoint_config(
        EndpointConfigName=realtime.endpoint_config_name)["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.c5.large", 2)
    assert len(aws.client("sagemaker").list_models()["Models"]) == 2


def test_throttled_calls_are_retried_by_the_client(aws):
    deploy(splade_tiny_path())
    client, answers = make_client("sagemaker"), []

    def throttle_once(request, **_):
        answers.append(request.url)
        if len(answers) == 1:
            body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
            return AWSResponse(request.url, 400, {}, _Raw(body))
        return None

    client.meta.events.register("before-send.sagemaker.DescribeEndpoint", throttle_once)
    assert ep.describe_endpoint(client, "finetune-tiny-docs")["EndpointStatus"] == "InService"
    assert len(answers) == 2


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body


# --------------------------------------------------------------------------------------------- Stubber


def test_creating_then_in_service(sagemaker_stub):
    client, stubber = sagemaker_stub
    config = "finetune-tiny-docs-bbbbbbbbbb"
    not_found(stubber, "describe_endpoint", "endpoint", {"EndpointName": "finetune-tiny-docs"})
    stubber.add_response("create_endpoint", {"EndpointArn": endpoint_answer("Creating", config)["EndpointArn"]},
                         {"EndpointName": "finetune-tiny-docs", "EndpointConfigName": config,
                          "Tags": [{"Key": "finetune-index", "Value": INDEX}]})
    for status in ("Creating", "Creating", "Creating", "InService"):
        stubber.add_response("describe_endpoint", endpoint_answer(status, config), {"EndpointName": "finetune-tiny-docs"})
    sleeps, seen = [], []
    deployment = ep.roll_out(client, staged(config), poll=FAST, sleep=sleeps.append, on_status=seen.append)
    assert deployment.action == "created" and deployment.endpoint_arn.endswith("endpoint/finetune-tiny-docs")
    assert sleeps == [1.0, 2.0, 3.0]                  # backoff while nothing changes, capped at max_s
    assert seen[-2:] == ["finetune-tiny-docs: Creating", "finetune-tiny-docs: InService"]


def test_failed_creation_raises_the_failure_reason_verbatim(sagemaker_stub):
    client, stubber = sagemaker_stub
    config = "finetune-tiny-docs-bbbbbbbbbb"
    not_found(stubber, "describe_endpoint", "endpoint", {"EndpointName": "finetune-tiny-docs"})
    stubber.add_response("create_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/x"}, None)
    stubber.add_response("describe_endpoint", endpoint_answer("Creating", config))
    stubber.add_response("describe_endpoint", endpoint_answer("Failed", config, FAILURE))
    with pytest.raises(ep.EndpointFailed) as caught:
        ep.roll_out(client, staged(config), poll=FAST, sleep=lambda s: None)
    assert caught.value.reason == FAILURE and caught.value.status == "Failed"
    assert str(caught.value) == f"SageMaker endpoint finetune-tiny-docs is Failed: {FAILURE}"


def test_changed_model_updates_the_endpoint_in_place(sagemaker_stub):
    client, stubber = sagemaker_stub
    old, new = "finetune-tiny-docs-aaaaaaaaaa", "finetune-tiny-docs-bbbbbbbbbb"
    stubber.add_response("describe_endpoint", endpoint_answer("InService", old))
    stubber.add_response("update_endpoint", {"EndpointArn": endpoint_answer("Updating", new)["EndpointArn"]},
                         {"EndpointName": "finetune-tiny-docs", "EndpointConfigName": new})
    stubber.add_response("describe_endpoint", endpoint_answer("InService", old))   # the update not yet visible
    stubber.add_response("describe_endpoint", endpoint_answer("Updating", new))
    stubber.add_response("describe_endpoint", endpoint_answer("InService", new))
    deployment = ep.roll_out(client, staged(new), poll=FAST, sleep=lambda s: None)
    assert deployment.action == "updated" and deployment.staged.endpoint_config_name == new


def test_rolled_back_update_says_why_and_what_still_serves(sagemaker_stub):
    client, stubber = sagemaker_stub
    old, new = "finetune-tiny-docs-aaaaaaaaaa", "finetune-tiny-docs-bbbbbbbbbb"
    stubber.add_response("describe_endpoint", endpoint_answer("InService", old))
    stubber.add_response("update_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/x"})
    stubber.add_response("describe_endpoint", endpoint_answer("Updating", new))
    stubber.add_response("describe_endpoint", endpoint_answer("RollingBack", new))
    stubber.add_response("describe_endpoint", endpoint_answer("InService", old, FAILURE))
    with pytest.raises(ep.EndpointRolledBack) as caught:
        ep.roll_out(client, staged(new), poll=FAST, sleep=lambda s: None)
    assert caught.value.reason == FAILURE and caught.value.serving_config == old
    assert FAILURE in str(caught.value) and f"still serves {old}, not {new}" in str(caught.value)


def test_an_endpoint_whose_creation_failed_is_recreated(sagemaker_stub):
    client, stubber = sagemaker_stub
    old, new = "finetune-tiny-docs-aaaaaaaaaa", "finetune-tiny-docs-bbbbbbbbbb"
    stubber.add_response("describe_endpoint", endpoint_answer("Failed", old, FAILURE))
    stubber.add_response("delete_endpoint", {}, {"EndpointName": "finetune-tiny-docs"})
    stubber.add_response("describe_endpoint", endpoint_answer("Deleting", old))
    not_found(stubber, "describe_endpoint", "endpoint", {"EndpointName": "finetune-tiny-docs"})
    stubber.add_response("create_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/x"},
                         {"EndpointName": "finetune-tiny-docs", "EndpointConfigName": new, "Tags": ANY})
    stubber.add_response("describe_endpoint", endpoint_answer("InService", new))
    assert ep.roll_out(client, staged(new), poll=FAST, sleep=lambda s: None).action == "recreated"


def test_a_deployment_in_progress_is_waited_for_before_updating(sagemaker_stub):
    client, stubber = sagemaker_stub
    old, new = "finetune-tiny-docs-aaaaaaaaaa", "finetune-tiny-docs-bbbbbbbbbb"
    stubber.add_response("describe_endpoint", endpoint_answer("Updating", old))
    stubber.add_response("describe_endpoint", endpoint_answer("Updating", old))
    stubber.add_response("describe_endpoint", endpoint_answer("InService", old))
    stubber.add_response("update_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/x"},
                         {"EndpointName": "finetune-tiny-docs", "EndpointConfigName": new})
    stubber.add_response("describe_endpoint", endpoint_answer("Updating", new))
    stubber.add_response("describe_endpoint", endpoint_answer("InService", new))
    assert ep.roll_out(client, staged(new), poll=FAST, sleep=lambda s: None).action == "updated"


def test_waiting_stops_at_the_timeout(sagemaker_stub):
    client, stubber = sagemaker_stub
    ticks = iter(range(0, 1000, 30))
    for _ in range(2):
        stubber.add_response("describe_endpoint", endpoint_answer("Creating", "c"))
    with pytest.raises(ep.EndpointTimeout, match="still Creating after 60 s"):
        ep.wait_for_endpoint(client, "finetune-tiny-docs", poll=FAST, sleep=lambda s: None,
                             clock=lambda: next(ticks))


# --------------------------------------------------------------------------------------------- InvokeEndpoint


def runtime_stub(answer: bytes | None = None, error: dict | None = None):
    client = boto3.client("sagemaker-runtime", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    params = {"EndpointName": "finetune-tiny-docs", "ContentType": "application/json", "Accept": "application/json",
              "Body": json.dumps(list(ep.SMOKE_TEXTS)).encode()}
    if error:
        stubber.add_client_error("invoke_endpoint", "ModelError", "Received client error (400) from primary",
                                 http_status_code=424, expected_params=params, modeled_fields=error)
    else:
        stubber.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(answer), len(answer)),
                                                 "ContentType": "application/json"}, params)
    stubber.activate()
    return client


@pytest.mark.parametrize("kind, answer, shape", [
    ("dense", [[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], "2 x 3 dense"),
    ("sparse", [{"search": 1.2, "engine": 0.4}, {"index": 0.9}], "2 sparse, 2/1 tokens"),
])
def test_smoke_test_sends_a_json_list_and_checks_the_shape(kind, answer, shape):
    deployment = ep.Deployment(ep.StagedModel("finetune-tiny-docs", "m", "c", "s3://b/k", "serverless", REGION, kind),
                               "arn", "created")
    assert ep.smoke_test(runtime_stub(json.dumps(answer).encode()), deployment) == shape


@pytest.mark.parametrize("kind, answer, problem", [
    ("dense", [[0.1, 0.2]], "expected a list of 2 items"),
    ("dense", [[0.1, 0.2], [0.1]], "vectors of different lengths [1, 2]"),
    ("dense", [{"a": 1.0}, {"b": 1.0}], "item 0 is not a non-empty list of finite numbers"),
    ("sparse", [[0.1], [0.2]], "item 0 is not an object of token -> positive weight"),
    ("sparse", [{"a": 0.0}, {}], "item 0 is not an object of token -> positive weight"),
    ("sparse", [{}, {}], "every item is empty"),
])
def test_answers_that_break_the_contract_are_reported(kind, answer, problem):
    with pytest.raises(ep.EndpointError, match=f"breaks the {kind} contract") as caught:
        ep.prediction_shape(answer, 2, kind)
    assert problem in str(caught.value)


def test_a_container_error_reaches_the_message():
    logs = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/finetune-tiny-docs"
    client = runtime_stub(error={"OriginalStatusCode": 400, "OriginalMessage": "request body is an empty list",
                                 "LogStreamArn": logs})
    with pytest.raises(ep.EndpointError) as caught:
        ep.invoke_endpoint(client, "finetune-tiny-docs")
    assert str(caught.value) == ("InvokeEndpoint finetune-tiny-docs failed: ModelError (container answered 400): "
                                 f"request body is an empty list; logs: {logs}")


# --------------------------------------------------------------------------------------------- assets


def queue_invoke_answer(server, body: str) -> None:
    """moto's InvokeEndpoint answers what is queued here (its documented /moto-api/static API)."""
    payload = {"results": [{"Body": body, "ContentType": "application/json", "InvokedProductionVariant": "AllTraffic",
                            "CustomAttributes": ""}]}
    request = urllib.request.Request(f"{server.endpoint_url}/moto-api/static/sagemaker/endpoint-results",
                                     data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


def seed(storage: ArtifactStorage, asset: str, write) -> None:
    """Write a version of `asset` with `write(folder)` and make it current, as the asset itself would."""
    folder = storage.artifact_dir(INDEX, asset)
    write(folder)
    storage.publish(INDEX, asset, folder)


def upstream_artifacts(root: Path) -> ArtifactStorage:
    """What the assets before model_endpoint leave in storage (the model is the real SPLADE-tiny)."""
    storage = ArtifactStorage(root=str(root))
    seed(storage, "trained_model", lambda folder: shutil.copytree(splade_tiny_path(), folder / "model"))
    seed(storage, "evaluation_report", lambda folder: write_json(folder / "report.json", {
        "results": {"base": {"ndcg@10": 0.58}, "tuned": {"ndcg@10": 0.61}}, "tolerance": 0.01,
        "judged_queries": 12}))
    seed(storage, "training_pairs", lambda folder: write_jsonl(folder / "held_out.jsonl", [
        {"query": "yellow bananas", "positive": "Bananas are yellow and sweet.", "doc_id": "d2"}]))
    seed(storage, "raw_corpus", lambda folder: write_jsonl(folder / "documents.jsonl", [
        {"id": "d1", "text": "The cat sat on the mat."}, {"id": "d2", "text": "Bananas are yellow and sweet."},
        {"id": "d3", "text": "OpenSearch registers fine-tuned embedding models."}]))
    return storage


def run(assets, storage, resources: dict, config: dict | None = None):
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("index", [INDEX])
        result = materialize(assets, partition_key=INDEX, instance=instance, raise_on_error=False,
                             resources={"storage": storage, "base_model": BaseModelResource(model_type="sparse"),
                                        **resources},
                             run_config={"ops": {"model_endpoint": {"config": config}}} if config else None)
        return result


def failure(result) -> str:
    """The step failure's message with its causes (the asset's own exception is the cause)."""
    error, parts = result.get_step_failure_events()[0].event_specific_data.error, []
    while error is not None:
        parts.append(error.message)
        error = error.cause
    return "\n".join(parts)


def endpoint_resource(**overrides) -> SageMakerEndpointResource:
    settings = {"region_name": REGION, "role_arn": ROLE, "bucket": BUCKET, "poll_initial_s": 0.01,
                "connector_role_arn": CONNECTOR_ROLE, **overrides}
    return SageMakerEndpointResource(**settings)


def test_model_endpoint_deploys_and_registration_takes_the_remote_path(aws, tmp_path, splade_handler_model):
    storage = upstream_artifacts(tmp_path / "storage")
    answer = inference.predict_fn(list(ep.SMOKE_TEXTS), splade_handler_model)   # what the real handler answers
    queue_invoke_answer(aws, inference.output_fn(answer, None))

    deployed = run([model_endpoint], storage, {"sagemaker_endpoint": endpoint_resource()},
                   {"deployment": "serverless", "memory_mb": 3072, "max_concurrency": 2})
    assert deployed.success
    metadata = deployed.asset_materializations_for_node("model_endpoint")[0].metadata
    assert metadata["endpoint_name"].value == "finetune-tiny-docs" and metadata["mode"].value == "serverless"
    assert metadata["smoke_test"].value.startswith("2 sparse, ") and metadata["kind"].value == "sparse"
    assert metadata["console_url"].value.endswith("#/endpoints/finetune-tiny-docs")
    record = read_json(storage.fetch(INDEX, "model_endpoint") / "endpoint.json")
    sagemaker = aws.client("sagemaker")
    assert record["endpoint_arn"] == sagemaker.describe_endpoint(EndpointName="finetune-tiny-docs")["EndpointArn"]
    variant = sagemaker.describe_endpoint_config(EndpointConfigName=record["endpoint_config_name"])[
        "ProductionVariants"][0]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 2}

    with running_fake(settings=DEV_SETTINGS, deploy_polls=1) as cluster:
        registered = run([registered_model_id], storage, {"opensearch": OpenSearchResource(url=cluster.url),
                                                          "sagemaker_endpoint": endpoint_resource()})
        assert registered.success
        calls = cluster.calls()
        connector = next(iter(cluster.connectors.values()))
        model = cluster.models[read_json(storage.fetch(INDEX, "registered_model_id") / "registration.json")[
            "model_id"]]
    metadata = registered.asset_materializations_for_node("registered_model_id")[0].metadata
    assert metadata["registered"].value is True and metadata["source"].value == "SageMaker endpoint finetune-tiny-docs"
    assert metadata["verification_top_hit_is_source_document"].value is True
    assert connector["actions"][0]["url"] == (f"https://runtime.sagemaker.{REGION}.amazonaws.com/endpoints/"
                                             "finetune-tiny-docs/invocations")
    assert connector["credential"] == {"roleArn": CONNECTOR_ROLE} and "post_process_function" not in \
        connector["actions"][0]                                           # sparse: the list of maps passes as is
    assert model["algorithm"] == "REMOTE" and model["model_state"] == "DEPLOYED"
    assert not [c for c in calls if "_register_meta" in c or "upload_chunk" in c]   # no local package uploaded


def test_after_a_failed_gate_the_endpoint_serves_the_base_model_and_registration_takes_it(aws, tmp_path,
                                                                                        splade_handler_model):
    """The tuned model fails the gate and BM25 + base beats BM25 on the held-out queries: the base model is deployed,
    recorded as a fallback, and registered through its endpoint; a tuned model's endpoint would not be."""
    storage = upstream_artifacts(tmp_path / "storage")
    figures = {"bm25": 0.50, "base": 0.58, "tuned": 0.40, "hybrid_base": 0.66, "hybrid_tuned": 0.45}
    seed(storage, "evaluation_report", lambda folder: write_json(folder / "report.json", {
        "results": {row: {"ndcg@10": value} for row, value in figures.items()}, "tolerance": 0.01,
        "judged_queries": 12}))
    answer = inference.predict_fn(list(ep.SMOKE_TEXTS), splade_handler_model)
    queue_invoke_answer(aws, inference.output_fn(answer, None))
    deployed = run([model_endpoint], storage, {"sagemaker_endpoint": endpoint_resource()}, {"deployment": "serverless"})
    assert deployed.success
    metadata = deployed.asset_materializations_for_node("model_endpoint")[0].metadata
    assert metadata["system"].value == "base" and metadata["fallback"].value is True
    assert read_json(storage.fetch(INDEX, "model_endpoint") / "endpoint.json")["system"] == "base"

    seed(storage, "model_package", lambda folder: write_json(folder / PACKAGE_FILE, {"system": "base"}))
    with running_fake(settings=DEV_SETTINGS, deploy_polls=1) as cluster:
        registered = run([registered_model_id], storage, {"opensearch": OpenSearchResource(url=cluster.url),
                                                          "sagemaker_endpoint": endpoint_resource()})
        assert registered.success
        remote = [m for m in cluster.models.values() if m["algorithm"] == "REMOTE"]
    metadata = registered.asset_materializations_for_node("registered_model_id")[0].metadata
    assert metadata["system"].value == "base" and metadata["fallback"].value is True
    assert metadata["source"].value == "SageMaker endpoint finetune-tiny-docs (the base model)" and len(remote) == 1

    # Had model_package packaged the tuned model (the base loses to BM25), the base endpoint must not be registered.
    seed(storage, "model_package", lambda folder: write_json(folder / PACKAGE_FILE, {"system": "tuned"}))
    fallback = run([registered_model_id], storage, {"opensearch": OpenSearchResource(),
                                                    "sagemaker_endpoint": endpoint_resource()})
    metadata = fallback.asset_materializations_for_node("registered_model_id")[0].metadata
    assert metadata["registered"].value is False and "fallback to BM25" in metadata["note"].value


def test_deployment_none_deploys_nothing_and_registration_keeps_the_package_path(aws, tmp_path):
    storage = upstream_artifacts(tmp_path / "storage")
    result = run([model_endpoint], storage, {"sagemaker_endpoint": endpoint_resource()})
    assert result.success
    metadata = result.asset_materializations_for_node("model_endpoint")[0].metadata
    assert metadata["deployed"].value is False and "nothing was deployed" in metadata["note"].value
    assert aws.client("sagemaker").list_endpoints()["Endpoints"] == []
    seed(storage, "model_package", lambda folder: (folder / "ml_commons_register.json").write_text("{}"))
    registered = run([registered_model_id], storage, {"opensearch": OpenSearchResource(),
                                                      "sagemaker_endpoint": endpoint_resource()})
    note = registered.asset_materializations_for_node("registered_model_id")[0].metadata["note"].value
    assert "nothing was registered" in note and "model_package" in note


def test_bad_settings_fail_before_anything_is_uploaded(aws, tmp_path):
    storage = upstream_artifacts(tmp_path / "storage")
    result = run([model_endpoint], storage, {"sagemaker_endpoint": endpoint_resource()},
                 {"deployment": "serverless", "memory_mb": 5000})
    assert not result.success
    assert "memory_mb" in failure(result) and "multiple of 1024" in failure(result)
    no_role = run([model_endpoint], storage, {"sagemaker_endpoint": endpoint_resource(role_arn="")}, {"deployment": "realtime"})
    assert "FINETUNE_SAGEMAKER_ROLE_ARN" in failure(no_role)
    assert aws.client("s3").list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0


def test_registration_without_a_connector_role_says_which_variable_to_set(aws, tmp_path):
    storage = upstream_artifacts(tmp_path / "storage")
    seed(storage, "model_endpoint", lambda folder: write_json(folder / "endpoint.json", {
        "deployed": True, "endpoint_name": "finetune-tiny-docs", "region": REGION, "kind": "dense"}))
    with running_fake(settings=DEV_SETTINGS) as cluster:
        result = run([registered_model_id], storage, {"opensearch": OpenSearchResource(url=cluster.url),
                                                      "sagemaker_endpoint": endpoint_resource(connector_role_arn="")})
        assert cluster.connectors == {}
    assert "FINETUNE_OPENSEARCH_CONNECTOR_ROLE_ARN" in failure(result) and "finetune-tiny-docs" in failure(result)
