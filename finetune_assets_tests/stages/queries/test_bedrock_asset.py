"""bedrock_batch_outputs with the bedrock backend, materialized by Dagster.

Storage and Bedrock's inputs/outputs live in a real moto S3 server over HTTP; the Bedrock control plane
(CreateModelInvocationJob, GetModelInvocationJob) and bedrock-runtime Converse are botocore Stubbers, which
validate every request against the real service model. An ``after-call`` hook on CreateModelInvocationJob plays
Bedrock: it reads the uploaded input and writes ``<job id>/part-00000.jsonl.out`` and the manifest.
"""
from __future__ import annotations

import json
import tempfile

import boto3
import pytest
from botocore.stub import ANY
from dagster import AssetKey, DagsterInstance, materialize

from finetune_assets.clients.bedrock import client as bedrock_client
from finetune_assets.core.data.demo_corpus import python_docs_documents
from finetune_assets.core.querygen import parse_output_record
from finetune_assets.core.querygen.prompts import SYSTEM_PROMPT, build_query_prompt, max_answer_tokens
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.query_generator import QueryGeneratorResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.queries.bedrock_batch_outputs import bedrock_batch_outputs
from finetune_assets_tests.fakes.bedrock_stubs import (
    BUCKET,
    CLAUDE,
    ROLE,
    claude_output,
    converse_answer,
    job_arn,
    job_description,
    stubbed,
    write_bedrock_outputs,
)

# pytest fixtures, imported "as" themselves so linters see them used
from finetune_assets_tests.fakes.moto_server import moto_aws as moto_aws
from finetune_assets_tests.fakes.moto_server import moto_server as moto_server

INDEX = "python-docs"
ROOT = f"s3://{BUCKET}/runs"
WORK = f"runs/bedrock-batch/{INDEX}/bedrock_batch_outputs"       # where Bedrock reads and writes
ARTIFACTS = f"runs/artifacts/{INDEX}/bedrock_batch_outputs"      # its versions and the CURRENT pointer
STATE = f"runs/state/{INDEX}/bedrock_batch_outputs/jobs.json"   # job ARNs, kept across failed steps
INPUT_KEY = f"{WORK}/input/part-00000.jsonl"
JOB_ID = "q1w2e3r4t5y6"
ARN = job_arn(JOB_ID)
FAILED = {"errorCode": 400, "errorMessage": "Input is too long for requested model."}


def answer_text(record_id: str) -> str:
    return json.dumps({"queries": [{"type": "factoid", "text": f"fact in {record_id}"},
                                   {"type": "conceptual", "text": f"idea of {record_id}"}]})


def answer(record_id: str, n: int) -> dict:
    return claude_output(record_id, n, text=answer_text(record_id))


@pytest.fixture
def s3(moto_aws):
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def put_corpus(s3, count: int) -> list[dict]:
    """Publish raw_corpus to the bucket as the raw_corpus asset would."""
    documents = python_docs_documents()[:count]
    with tempfile.TemporaryDirectory() as cache:
        storage = ArtifactStorage(root=ROOT, cache_dir=cache)
        folder = storage.artifact_dir(INDEX, "raw_corpus")
        (folder / "documents.jsonl").write_text("".join(json.dumps(d) + "\n" for d in documents))
        storage.publish(INDEX, "raw_corpus", folder)
    return documents


@pytest.fixture
def bedrock_stubs(monkeypatch):
    """Stubbed bedrock and bedrock-runtime clients handed to the asset through make_client; S3 stays real."""
    clients = {service: stubbed(service) for service in ("bedrock", "bedrock-runtime")}
    real = bedrock_client.make_client
    monkeypatch.setattr(bedrock_client, "make_client",
                        lambda service, **kw: clients[service][0] if service in clients else real(service, **kw))
    return clients


def generator(**overrides) -> QueryGeneratorResource:
    return QueryGeneratorResource(**{"backend": "bedrock", "model_id": CLAUDE, "role_arn": ROLE,
                                     "region_name": "us-east-1", "poll_interval_s": 0, "poll_max_interval_s": 0,
                                     **overrides})


def run(tmp_path, cache: str, instance=None, raise_on_error: bool = True, root: str = ROOT, query_generator=None,
        run_config=None):
    instance = instance or DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("index", [INDEX])
    storage = ArtifactStorage(root=root, cache_dir=str(tmp_path / cache))  # a new cache: a new machine
    return materialize([bedrock_batch_outputs], partition_key=INDEX, instance=instance,
                       resources={"storage": storage, "query_generator": query_generator or generator(),
                                  "base_model": BaseModelResource()},
                       raise_on_error=raise_on_error, run_config=run_config)


def metadata(result) -> dict:
    materialization = result.asset_materializations_for_node("bedrock_batch_outputs")[0]
    return {key: value.value for key, value in materialization.metadata.items()}


def read_object(s3, key: str):
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()


def current_version(s3) -> str:
    """Key prefix of the bedrock_batch_outputs version that its CURRENT pointer names (what downstream fetches)."""
    return f"{ARTIFACTS}/{read_object(s3, f'{ARTIFACTS}/CURRENT').strip()}"


def output_records(s3) -> list[dict]:
    return [json.loads(line) for line in read_object(s3, f"{current_version(s3)}/documents.jsonl.out").splitlines()]


def created_job_names(bedrock) -> list[str]:
    """Job names of the CreateModelInvocationJob requests the client builds (captured before the stub answers)."""
    names = []
    bedrock.meta.events.register("before-parameter-build.bedrock.CreateModelInvocationJob",
                                 lambda params, **_: names.append(params["jobName"]))
    return names


def test_batch_job_outputs_become_the_asset_records(s3, bedrock_stubs, tmp_path):
    documents = put_corpus(s3, 120)
    failed_id = documents[7]["id"]
    bedrock, stub = bedrock_stubs["bedrock"]
    bedrock.meta.events.register(  # Bedrock runs the job: outputs appear under <output uri>/<job id>/
        "after-call.bedrock.CreateModelInvocationJob",
        lambda **_: write_bedrock_outputs(s3, BUCKET, INPUT_KEY, f"{WORK}/output/{JOB_ID}/", answer=answer,
                                          errors={failed_id: FAILED}, manifest_tokens=(6_100, 2_400)))
    stub.add_response("create_model_invocation_job", {"jobArn": ARN}, expected_params={
        "jobName": ANY, "clientRequestToken": ANY, "roleArn": ROLE, "modelId": CLAUDE,
        "inputDataConfig": {"s3InputDataConfig": {"s3InputFormat": "JSONL", "s3Uri": f"s3://{BUCKET}/{INPUT_KEY}"}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://{BUCKET}/{WORK}/output/"}}})
    for status in ("Submitted", "InProgress", "Completed"):
        stub.add_response("get_model_invocation_job",
                          job_description(ARN, status, output_uri=f"s3://{BUCKET}/{WORK}/output/"),
                          expected_params={"jobIdentifier": ARN})
    instance = DagsterInstance.ephemeral()
    with stub:
        result = run(tmp_path, "cache", instance=instance)
        stub.assert_no_pending_responses()

    meta = metadata(result)
    assert meta["mode"] == "batch" and meta["jobs"] == 1 and meta["job_arns"] == [ARN]
    assert meta["records"] == 120 and meta["record_errors"] == 1 and meta["record_error_ids"] == [failed_id]
    assert meta["queries"] == 2 * 119
    assert (meta["input_tokens"], meta["output_tokens"], meta["token_source"]) == (6_100, 2_400, "manifest")

    # The prompts Bedrock got are the local generator's prompt text, one record per document.
    sent = {r["recordId"]: r["modelInput"] for r in map(json.loads, read_object(s3, INPUT_KEY).splitlines())}
    assert list(sent) == [d["id"] for d in documents]
    for document in documents[:5]:
        assert sent[document["id"]]["system"] == SYSTEM_PROMPT
        assert sent[document["id"]]["messages"][0]["content"][0]["text"] == build_query_prompt(document)
        assert sent[document["id"]]["max_tokens"] == max_answer_tokens(1)

    # Downstream reads the same files as after the local generator.
    parsed = {p.record_id: p for p in map(parse_output_record, output_records(s3))}
    assert parsed[failed_id].error.startswith("400") and parsed[failed_id].queries == []
    some_id = documents[3]["id"]
    assert [(q.type, str(q)) for q in parsed[some_id].queries] == [
        ("factoid", f"fact in {some_id}"), ("conceptual", f"idea of {some_id}")]
    manifest = json.loads(read_object(s3, f"{current_version(s3)}/manifest.json.out"))
    assert manifest["errorRecordCount"] == 1 and manifest["successRecordCount"] == 119
    jobs = json.loads(read_object(s3, f"{current_version(s3)}/jobs.json"))  # the version records its jobs
    assert jobs["job_arns"] == [ARN] and jobs["statuses"] == {ARN: "Completed"}
    assert json.loads(read_object(s3, STATE)) == jobs

    # The ARN was announced as an observation and every status change was logged.
    observations = instance.fetch_observations(AssetKey("bedrock_batch_outputs"), limit=5).records
    assert [o.asset_observation.metadata["job_arn"].value for o in observations] == [ARN]
    messages = [e.message for e in instance.all_logs(result.run_id)]
    statuses = [s for m in messages for s in ("Submitted", "InProgress", "Completed") if m.endswith(f": {s}")]
    assert statuses == ["Submitted", "InProgress", "Completed"]


def test_a_restarted_run_reattaches_instead_of_creating_the_job_again(s3, bedrock_stubs, tmp_path):
    documents = put_corpus(s3, 100)
    bedrock, stub = bedrock_stubs["bedrock"]
    names = created_job_names(bedrock)
    stub.add_response("create_model_invocation_job", {"jobArn": ARN})
    stub.add_client_error("get_model_invocation_job", service_error_code="InternalServerException",
                          service_message="internal error", http_status_code=500)
    with stub:
        first = run(tmp_path, "first-machine", raise_on_error=False)
        stub.assert_no_pending_responses()
    assert not first.success and len(names) == 1
    # The run died, but the ARN reached S3 the moment the job existed, in the state kept outside the versions;
    # nothing of the failed run became current.
    assert json.loads(read_object(s3, STATE))["job_arns"] == [ARN]
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{ARTIFACTS}/CURRENT")

    write_bedrock_outputs(s3, BUCKET, INPUT_KEY, f"{WORK}/output/{JOB_ID}/", answer=answer)  # the job went on
    for status in ("InProgress", "Completed"):  # no create queued: a second job would fail the run
        stub.add_response("get_model_invocation_job",
                          job_description(ARN, status, name=names[0], output_uri=f"s3://{BUCKET}/{WORK}/output/"),
                          expected_params={"jobIdentifier": ARN})
    with stub:
        second = run(tmp_path, "second-machine")
        stub.assert_no_pending_responses()
    meta = metadata(second)
    assert meta["job_arns"] == [ARN] and meta["records"] == 100 and meta["record_errors"] == 0
    assert sorted(r["recordId"] for r in output_records(s3)) == sorted(d["id"] for d in documents)

    # New settings (here a new idempotency salt) mean new requests: the old job is neither re-attached nor mixed in.
    new_arn = job_arn("0salted0job0")
    stub.add_response("create_model_invocation_job", {"jobArn": new_arn})
    stub.add_response("get_model_invocation_job", job_description(new_arn, "Completed", name="ftq-salted",
                                                                  output_uri=f"s3://{BUCKET}/{WORK}/output/"))
    bedrock.meta.events.register("after-call.bedrock.CreateModelInvocationJob", lambda **_: write_bedrock_outputs(
        s3, BUCKET, INPUT_KEY, f"{WORK}/output/0salted0job0/", answer=answer))
    with stub:
        third = run(tmp_path, "second-machine", query_generator=generator(idempotency_salt="retry-2"))
        stub.assert_no_pending_responses()
    assert metadata(third)["job_arns"] == [new_arn] and len(names) == 2 and names[1] != names[0]
    assert json.loads(read_object(s3, STATE))["job_arns"] == [new_arn]
    assert json.loads(read_object(s3, f"{current_version(s3)}/jobs.json"))["job_arns"] == [new_arn]


def test_a_small_corpus_goes_through_converse(s3, bedrock_stubs, tmp_path):
    documents = put_corpus(s3, 5)
    runtime, stub = bedrock_stubs["bedrock-runtime"]
    _, control_stub = bedrock_stubs["bedrock"]  # nothing queued: no batch job may be created
    for n, document in enumerate(documents):
        expected = {"modelId": CLAUDE, "system": [{"text": SYSTEM_PROMPT}],
                    "messages": [{"role": "user", "content": [{"text": build_query_prompt(document)}]}],
                    "inferenceConfig": {"maxTokens": max_answer_tokens(1), "temperature": 0.3}}
        if n == 2:
            stub.add_client_error("converse", service_error_code="ValidationException",
                                  service_message="Input is too long", http_status_code=400,
                                  expected_params=expected)
        else:
            stub.add_response("converse", converse_answer(answer_text(document["id"]), 50 + n, 20),
                              expected_params=expected)
    with stub, control_stub:
        result = run(tmp_path, "cache")
        stub.assert_no_pending_responses()
    meta = metadata(result)
    assert meta["mode"] == "on_demand" and meta["jobs"] == 0
    assert meta["record_errors"] == 1 and meta["record_error_ids"] == [documents[2]["id"]]
    assert (meta["input_tokens"], meta["output_tokens"]) == (50 + 51 + 53 + 54, 4 * 20)
    parsed = [parse_output_record(r) for r in output_records(s3)]
    assert [p.record_id for p in parsed] == [d["id"] for d in documents]
    assert [str(q) for q in parsed[4].queries] == [f"fact in {documents[4]['id']}", f"idea of {documents[4]['id']}"]


def test_max_documents_generates_for_the_first_sampled_documents_only(s3, bedrock_stubs, tmp_path):
    documents = put_corpus(s3, 5)
    runtime, stub = bedrock_stubs["bedrock-runtime"]
    for document in documents[:2]:  # a call for any other document would find no queued answer and fail
        stub.add_response("converse", converse_answer(answer_text(document["id"]), 50, 20),
                          expected_params={"modelId": CLAUDE, "system": [{"text": SYSTEM_PROMPT}],
                                           "messages": [{"role": "user",
                                                         "content": [{"text": build_query_prompt(document)}]}],
                                           "inferenceConfig": {"maxTokens": max_answer_tokens(1), "temperature": 0.3}})
    with stub:
        run(tmp_path, "cache", run_config={"ops": {"bedrock_batch_outputs": {"config": {"max_documents": 2}}}})
        stub.assert_no_pending_responses()
    assert [parse_output_record(r).record_id for r in output_records(s3)] == [d["id"] for d in documents[:2]]


def test_bedrock_backend_refuses_local_storage_and_a_missing_role(tmp_path):
    with pytest.raises(Exception, match="needs S3 storage"):
        run(tmp_path, "cache", root=str(tmp_path / "local"))
    with pytest.raises(ValueError, match="FINETUNE_BEDROCK_ROLE_ARN"):
        generator(role_arn="").bedrock_job_options(ArtifactStorage(root=ROOT))
    with pytest.raises(ValueError, match="cannot tell the request format"):
        generator(model_id="meta.llama3-1-70b-instruct-v1:0").bedrock_job_options(ArtifactStorage(root=ROOT))

