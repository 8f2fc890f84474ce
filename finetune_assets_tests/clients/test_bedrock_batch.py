"""Bedrock batch inference client: the Bedrock API through botocore's Stubber, S3 through a real moto server.

moto does not implement Bedrock batch inference, so CreateModelInvocationJob / GetModelInvocationJob /
ListModelInvocationJobs / Converse are stubbed with ``botocore.stub.Stubber``, which validates every request and
every canned response against the real service model. Patterns the Stubber does not check (job name,
clientRequestToken, S3 URIs) are checked here against the same service model. S3 (inputs, Bedrock-layout outputs,
manifest) runs over HTTP against ``moto_server``.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import botocore.session
import pytest

from finetune_assets.clients.bedrock.aws import make_client
from finetune_assets.clients.bedrock.client import BedrockBatchClient
from finetune_assets.clients.bedrock.errors import BedrockBatchJobFailed, BedrockBatchTimeout, UnsupportedModelError
from finetune_assets.clients.bedrock.model_bodies import build_model_input, model_family
from finetune_assets.clients.bedrock.planning import estimate_batch_plan, plan_parts
from finetune_assets.clients.bedrock.settings import (
    BatchJobOptions,
    BatchQuotas,
    ConverseRetry,
    GenerationSettings,
    PollSettings,
)
from finetune_assets_tests.fakes.bedrock_stubs import (
    BASE_URI,
    BUCKET,
    CLAUDE,
    INDEX,
    NOVA,
    REGION,
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

OPTIONS = BatchJobOptions(role_arn=ROLE)
SYSTEM = "You write search queries that a user would type to find the given passage."
BEDROCK_MODEL = botocore.session.get_session().get_service_model("bedrock")


def documents(count: int, *, start: int = 0) -> list[dict]:
    return [{"id": f"doc-{n}", "title": f"Title {n}", "text": f"Passage number {n} about topic {n % 7}."}
            for n in range(start, start + count)]


def prompt(document) -> tuple[str, str]:
    return SYSTEM, f"Passage: {document['text']}\nWrite 3 short search queries, one per line."


class Recorder:
    """Injectable sleep + clock: sleeping advances the clock; an optional hook runs on each sleep."""

    def __init__(self, hook=None):
        self.now, self.sleeps, self.hook = 0.0, [], hook

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.hook is not None:
            self.hook(len(self.sleeps))

    def clock(self) -> float:
        return self.now


def matches_service_model(shape: str, value: str) -> bool:
    metadata = BEDROCK_MODEL.shape_for(shape).metadata
    return (metadata.get("min", 0) <= len(value) <= metadata.get("max", 10**9)
            and re.fullmatch(metadata["pattern"], value) is not None)


# --------------------------------------------------------------------------------------------------------------
# request bodies and model families
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_id, family", [
    ("anthropic.claude-3-haiku-20240307-v1:0", "anthropic_claude"),
    ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "anthropic_claude"),
    ("eu.anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic_claude"),
    ("arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0", "anthropic_claude"),
    ("amazon.nova-micro-v1:0", "amazon_nova"),
    ("us.amazon.nova-pro-v1:0", "amazon_nova"),
    ("global.amazon.nova-2-lite-v1:0", "amazon_nova"),
])
def test_model_family_from_model_and_profile_ids(model_id, family):
    assert model_family(model_id) == family


@pytest.mark.parametrize("model_id", ["meta.llama3-1-70b-instruct-v1:0", "amazon.titan-embed-text-v2:0",
                                      "amazon.nova-canvas-v1:0",
                                      "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/x1"])
def test_unsupported_models_are_refused(model_id):
    with pytest.raises(UnsupportedModelError):
        model_family(model_id)


def test_request_bodies_follow_the_documented_formats():
    settings = GenerationSettings(max_tokens=300, temperature=0.5)
    claude = build_model_input("anthropic_claude", SYSTEM, "Passage: x", settings, CLAUDE)
    assert claude == {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 300, "system": SYSTEM,
                      "messages": [{"role": "user", "content": [{"type": "text", "text": "Passage: x"}]}],
                      "temperature": 0.5}
    nova = build_model_input("amazon_nova", SYSTEM, "Passage: x", settings, NOVA)
    assert nova == {"schemaVersion": "messages-v1", "system": [{"text": SYSTEM}],
                    "messages": [{"role": "user", "content": [{"text": "Passage: x"}]}],
                    "inferenceConfig": {"maxTokens": 300, "temperature": 0.5}}
    nova2 = build_model_input("amazon_nova", None, "Passage: x", settings, "global.amazon.nova-2-lite-v1:0")
    assert "schemaVersion" not in nova2 and "system" not in nova2


# --------------------------------------------------------------------------------------------------------------
# prepare: JSONL, idempotency tokens, names, splitting
# --------------------------------------------------------------------------------------------------------------
def test_prepare_writes_records_with_deterministic_valid_names_and_tokens(tmp_path):
    client = BedrockBatchClient()
    docs = documents(150)
    first = client.prepare(docs, index=INDEX, s3_base_uri=BASE_URI, model_id=CLAUDE, prompt_fn=prompt,
                           workdir=tmp_path / "a")
    again = client.prepare(list(reversed(list(reversed(docs)))), index=INDEX, s3_base_uri=BASE_URI, model_id=CLAUDE,
                           prompt_fn=prompt, workdir=tmp_path / "b")
    other_settings = client.prepare(docs, index=INDEX, s3_base_uri=BASE_URI, model_id=CLAUDE, prompt_fn=prompt,
                                    settings=GenerationSettings(max_tokens=256), workdir=tmp_path / "c")
    other_corpus = client.prepare(docs[:-1] + documents(1, start=999), index=INDEX, s3_base_uri=BASE_URI,
                                  model_id=CLAUDE, prompt_fn=prompt, workdir=tmp_path / "d")
    salted = client.prepare(docs, index=INDEX, s3_base_uri=BASE_URI, model_id=CLAUDE, prompt_fn=prompt,
                            idempotency_salt="rerun-2", workdir=tmp_path / "e")

    assert first.mode == "batch" and len(first.specs) == 1
    spec = first.specs[0]
    assert spec.input_uri == f"{BASE_URI}/{INDEX}/bedrock_batch_outputs/input/part-00000.jsonl"
    assert spec.output_uri == f"{BASE_URI}/{INDEX}/bedrock_batch_outputs/output/"
    assert spec.client_request_token == again.specs[0].client_request_token
    assert spec.job_name == again.specs[0].job_name
    tokens = {p.specs[0].client_request_token for p in (first, other_settings, other_corpus, salted)}
    names = {p.specs[0].job_name for p in (first, other_settings, other_corpus, salted)}
    assert len(tokens) == 4 and len(names) == 4
    for plan in (first, other_settings, other_corpus, salted):
        assert matches_service_model("ModelInvocationIdempotencyToken", plan.specs[0].client_request_token)
        assert matches_service_model("ModelInvocationJobName", plan.specs[0].job_name)
        assert matches_service_model("S3Uri", plan.specs[0].input_uri)
        assert matches_service_model("S3Uri", plan.specs[0].output_uri)

    lines = spec.local_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == spec.record_count == 150
    assert spec.byte_count == spec.local_path.stat().st_size
    records = [json.loads(line) for line in lines]
    assert [r["recordId"] for r in records] == [d["id"] for d in docs]
    assert set(records[0]) == {"recordId", "modelInput"}
    assert records[0]["modelInput"]["anthropic_version"] == "bedrock-2023-05-31"
    assert records[7]["modelInput"]["messages"][0]["content"][0]["text"].startswith("Passage: Passage number 7")


def test_prepare_refuses_duplicate_ids_and_bad_index_names(tmp_path):
    client = BedrockBatchClient()
    with pytest.raises(ValueError, match="duplicate document id"):
        client.prepare(documents(120) + documents(1), index=INDEX, s3_base_uri=BASE_URI, model_id=CLAUDE,
                       prompt_fn=prompt, workdir=tmp_path / "dup")
    with pytest.raises(ValueError, match="S3Uri"):
        client.prepare(documents(120), index="weird=index", s3_base_uri=BASE_URI, model_id=CLAUDE, prompt_fn=prompt,
                       workdir=tmp_path / "bad")


def test_25000_documents_split_into_jobs_within_quotas(tmp_path):
    docs = documents(25_000)
    client = BedrockBatchClient()
    plan = client.prepare(docs, index=INDEX, s3_base_uri=BASE_URI, model_id=NOVA, prompt_fn=prompt,
                          workdir=tmp_path / "default")
    quotas = client.quotas
    assert [s.record_count for s in plan.specs] == [25_000]  # one job: the default limit is 50,000 per job
    assert plan.specs[0].byte_count < quotas.max_file_bytes

    small = BatchQuotas(max_records_per_job=10_000, max_records_per_file=10_000)
    split = BedrockBatchClient(quotas=small).prepare(docs, index=INDEX, s3_base_uri=BASE_URI, model_id=NOVA,
                                                     prompt_fn=prompt, workdir=tmp_path / "small")
    assert [s.record_count for s in split.specs] == [8_334, 8_334, 8_332]
    assert [s.input_uri.rsplit("/", 1)[-1] for s in split.specs] == [
        "part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    assert len({s.client_request_token for s in split.specs}) == 3
    ids = []
    for spec in split.specs:
        assert small.min_records_per_job <= spec.record_count <= small.records_per_part
        lines = spec.local_path.read_bytes().splitlines()
        assert len(lines) == spec.record_count
        ids.extend(json.loads(line)["recordId"] for line in lines)
    assert ids == [d["id"] for d in docs]

    # The cost estimate uses the same splitting rules.
    assert estimate_batch_plan(25_000, 2_000)["records_per_job"] == [25_000]
    big_documents = estimate_batch_plan(25_000, 60_000)  # ~1.6 GB of input: over the 1 GB per-file limit
    assert big_documents["num_jobs"] == 2
    assert big_documents["estimated_record_bytes"] * max(big_documents["records_per_job"]) <= quotas.max_file_bytes
    assert estimate_batch_plan(120_000, 1_000)["records_per_job"] == [40_000, 40_000, 40_000]
    assert estimate_batch_plan(50, 1_000)["mode"] == "on_demand"
    assert estimate_batch_plan(0, 1_000)["num_jobs"] == 0


def test_plan_parts_balances_and_keeps_every_part_above_the_minimum():
    quotas = BatchQuotas(min_records_per_job=10, max_records_per_job=1_000, max_records_per_file=1_000,
                         max_file_bytes=1_000)
    # byte-limited: 10-byte records, at most 100 per file; 250 records -> 3 balanced parts
    assert plan_parts([10] * 250, quotas) == [(0, 84), (84, 168), (168, 250)]
    # the first part is cut early by bytes, which leaves a 4-record tail: it is topped up to the minimum
    assert plan_parts([9] * 120 + [1] * 110, quotas) == [(0, 111), (111, 220), (220, 230)]
    strict = BatchQuotas(min_records_per_job=100, max_records_per_job=1_000, max_records_per_file=1_000,
                         max_file_bytes=1_000)
    with pytest.raises(ValueError, match="batch minimum"):
        plan_parts([10] * 99, strict)
    with pytest.raises(ValueError, match="cannot split"):
        plan_parts([5] * 199 + [900], strict)  # the 900-byte record fits with too few others
    with pytest.raises(ValueError, match="input file limit"):
        plan_parts([10] * 150 + [1_001], strict)


# --------------------------------------------------------------------------------------------------------------
# CreateModelInvocationJob and status sequences (Stubber)
# --------------------------------------------------------------------------------------------------------------
def test_create_job_request_validated_by_the_service_model(moto_aws, tmp_path):
    s3 = make_client("s3", region_name=REGION)  # AWS_ENDPOINT_URL points at moto
    s3.create_bucket(Bucket=BUCKET)
    bedrock, stub = stubbed("bedrock")
    timer = Recorder()
    client = BedrockBatchClient(bedrock=bedrock, s3=s3, sleep=timer.sleep, clock=timer.clock,
                                poll=PollSettings(initial_interval_s=30, backoff=2.0, max_interval_s=100))
    options = BatchJobOptions(role_arn=ROLE, timeout_hours=48, vpc_subnet_ids=("subnet-0abc",),
                              vpc_security_group_ids=("sg-0abc",),
                              output_kms_key_id="arn:aws:kms:us-east-1:123456789012:key/"
                                                "1234abcd-12ab-34cd-56ef-1234567890ab")
    plan = client.prepare(documents(120), index=INDEX, s3_base_uri=BASE_URI, model_id=CLAUDE, prompt_fn=prompt,
                          workdir=tmp_path)
    spec = plan.specs[0]
    arn = job_arn()
    stub.add_response("create_model_invocation_job", {"jobArn": arn}, expected_params={
        "jobName": spec.job_name,
        "roleArn": ROLE,
        "clientRequestToken": spec.client_request_token,
        "modelId": CLAUDE,
        "inputDataConfig": {"s3InputDataConfig": {"s3InputFormat": "JSONL", "s3Uri": spec.input_uri}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": spec.output_uri,
                                                    "s3EncryptionKeyId": options.output_kms_key_id}},
        "timeoutDurationInHours": 48,
        "vpcConfig": {"subnetIds": ["subnet-0abc"], "securityGroupIds": ["sg-0abc"]},
    })
    for status in ("Submitted", "Validating", "Scheduled", "InProgress", "InProgress", "Completed"):
        stub.add_response("get_model_invocation_job", job_description(arn, status, name=spec.job_name),
                          expected_params={"jobIdentifier": arn})
    events = []
    with stub:
        finished = client.run_jobs(plan, options, on_job_created=lambda a: events.append(("created", a)),
                                   on_status=lambda a, status, _: events.append(("status", status)))
        stub.assert_no_pending_responses()
    assert events[0] == ("created", arn)  # the ARN is handed over before the first poll
    assert [e[1] for e in events[1:]] == ["Submitted", "Validating", "Scheduled", "InProgress", "Completed"]
    assert [d["status"] for d in finished] == ["Completed"]
    assert timer.sleeps == [30, 60, 100, 100, 100]  # backoff, capped

    # The input went to S3 with server-side encryption, byte for byte.
    head = s3.head_object(Bucket=BUCKET, Key=f"runs/{INDEX}/bedrock_batch_outputs/input/part-00000.jsonl")
    assert head["ServerSideEncryption"] == "AES256"
    body = s3.get_object(Bucket=BUCKET, Key=f"runs/{INDEX}/bedrock_batch_outputs/input/part-00000.jsonl")["Body"]
    assert body.read() == spec.local_path.read_bytes()


@pytest.mark.parametrize("statuses, outcome", [
    (["Submitted", "InProgress", "Completed"], "Completed"),
    (["Submitted", "InProgress", "PartiallyCompleted"], "PartiallyCompleted"),
    (["Submitted", "Validating", "Failed"], "Failed"),
    (["InProgress", "Stopping", "Stopped"], "Stopped"),
    (["Scheduled", "InProgress", "Expired"], "Expired"),
])
def test_status_sequences(statuses, outcome, caplog):
    bedrock, stub = stubbed("bedrock")
    timer = Recorder()
    client = BedrockBatchClient(bedrock=bedrock, sleep=timer.sleep, clock=timer.clock)
    arn = job_arn("zzzz00001111")
    message = {"Failed": "Input file s3://finetune-bucket/x.jsonl has a malformed record on line 3",
               "Stopped": "Stopped by user", "Expired": "Job exceeded its timeout"}.get(outcome)
    for status in statuses:
        extra = {"errorRecordCount": 4, "successRecordCount": 96} if status == "PartiallyCompleted" else {}
        stub.add_response("get_model_invocation_job",
                          job_description(arn, status, name="ftq-job-p00000",
                                          message=message if status == outcome else None, **extra),
                          expected_params={"jobIdentifier": arn})
    with stub, caplog.at_level("INFO"):
        if outcome in ("Completed", "PartiallyCompleted"):
            finished = client.wait_for_jobs([arn])
            assert finished[0]["status"] == outcome
        else:
            with pytest.raises(BedrockBatchJobFailed) as failure:
                client.wait_for_jobs([arn])
            assert failure.value.status == outcome
            assert failure.value.job_arn == arn
            assert message in str(failure.value)
            assert "idempotency_salt" in str(failure.value)
        stub.assert_no_pending_responses()
    assert len(timer.sleeps) == len(statuses) - 1
    if outcome == "PartiallyCompleted":
        assert "PartiallyCompleted" in caplog.text and "4 record(s) failed" in caplog.text


def test_polling_gives_up_after_max_wait():
    bedrock, stub = stubbed("bedrock")
    timer = Recorder()
    client = BedrockBatchClient(bedrock=bedrock, sleep=timer.sleep, clock=timer.clock,
                                poll=PollSettings(initial_interval_s=60, max_interval_s=60, max_wait_s=150))
    arn = job_arn()
    for _ in range(4):
        stub.add_response("get_model_invocation_job", job_description(arn, "InProgress"))
    with stub, pytest.raises(BedrockBatchTimeout, match="re-attach"):
        client.wait_for_jobs([arn])
    assert sum(timer.sleeps) == 150


def test_name_conflict_attaches_to_the_existing_job(tmp_path):
    bedrock, stub = stubbed("bedrock")
    s3, s3_stub = stubbed("s3")
    client = BedrockBatchClient(bedrock=bedrock, s3=s3, sleep=lambda _: None)
    plan = client.prepare(documents(100), index=INDEX, s3_base_uri=BASE_URI, model_id=CLAUDE, prompt_fn=prompt,
                          workdir=tmp_path)
    name, arn = plan.specs[0].job_name, job_arn("111122223333")
    stub.add_client_error("create_model_invocation_job", service_error_code="ConflictException",
                          service_message="A job with this name already exists", http_status_code=409)
    stub.add_response("list_model_invocation_jobs", {"invocationJobSummaries": [
        {**job_description(job_arn("999999999999"), "Completed", name=name + "x")},
        {**job_description(arn, "InProgress", name=name)}]}, expected_params={"nameContains": name, "maxResults": 100})
    stub.add_response("get_model_invocation_job", job_description(arn, "Completed", name=name))
    created = []
    with stub:
        finished = client.run_jobs(plan, OPTIONS, on_job_created=created.append, uploaded=True)
        stub.assert_no_pending_responses()
    assert created == [arn] and finished[0]["jobArn"] == arn


# --------------------------------------------------------------------------------------------------------------
# the whole flow against moto S3: upload, Bedrock-layout outputs with errors, manifest tokens
# --------------------------------------------------------------------------------------------------------------
def test_generate_reads_every_good_record_and_counts_errors(moto_aws, caplog):
    s3 = make_client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    bedrock, stub = stubbed("bedrock")
    docs = documents(120)
    arn = job_arn("a1b2c3d4e5f6")
    output_prefix = f"runs/{INDEX}/bedrock_batch_outputs/output/a1b2c3d4e5f6/"
    errors = {"doc-17": {"errorCode": 400, "errorMessage": "Input is too long for requested model."},
              "doc-64": {"errorCode": 500, "errorMessage": "Internal error while processing the record."}}

    def bedrock_writes_outputs(sleep_number: int) -> None:
        """What Bedrock does while the job runs: <output uri>/<job id>/<input file>.out plus the manifest."""
        if sleep_number == 1:
            write_bedrock_outputs(s3, BUCKET, f"runs/{INDEX}/bedrock_batch_outputs/input/part-00000.jsonl",
                                  output_prefix, errors=errors, manifest_tokens=(4_900, 1_500))

    timer = Recorder(hook=bedrock_writes_outputs)
    client = BedrockBatchClient(bedrock=bedrock, s3=s3, sleep=timer.sleep, clock=timer.clock)
    stub.add_response("create_model_invocation_job", {"jobArn": arn})
    for status in ("InProgress", "Completed"):
        stub.add_response("get_model_invocation_job", job_description(
            arn, status, name="ftq-job", errorRecordCount=2, successRecordCount=118, totalRecordCount=120))
    recorded = []
    with stub, caplog.at_level("INFO"):
        result = client.generate(docs, index=INDEX, s3_base_uri=BASE_URI, model_id=CLAUDE, prompt_fn=prompt,
                                 options=OPTIONS, on_job_created=recorded.append)
        stub.assert_no_pending_responses()

    assert recorded == [arn] and result.job_arns == [arn]
    assert result.mode == "batch"
    good = list(result.good_records())
    assert sorted(r["recordId"] for r in good) == sorted(d["id"] for d in docs if d["id"] not in errors)
    assert all(r["modelOutput"]["content"][0]["text"].startswith("query one") for r in good)
    assert result.error_count == 2
    assert sorted(e["recordId"] for e in result.error_samples) == ["doc-17", "doc-64"]
    assert {e["errorCode"] for e in result.error_samples} == {400, 500}
    assert len(result.records) == 120 and result.missing_record_ids == []
    assert all("modelInput" not in r for r in result.records)  # dropped unless include_model_input=True
    assert (result.input_tokens, result.output_tokens, result.token_source) == (4_900, 1_500, "manifest")
    assert result.manifests[arn]["errorRecordCount"] == 2
    assert result.summary()["record_errors"] == 2
    assert "2 record error(s)" in caplog.text
    assert "Passage number" not in caplog.text  # no document text in the logs


def test_tokens_come_from_usage_fields_when_the_manifest_is_missing(moto_aws):
    s3 = make_client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    arn = job_arn("0000aaaabbbb")
    prefix = f"runs/{INDEX}/bedrock_batch_outputs/output/0000aaaabbbb/"
    records = [claude_output(f"doc-{n}", n) for n in range(3)] + ["not json at all"]
    s3.put_object(Bucket=BUCKET, Key=prefix + "sub/part-00000.jsonl.out",
                  Body="\n".join(r if isinstance(r, str) else json.dumps(r) for r in records).encode())
    client = BedrockBatchClient(s3=s3)
    result = client.read_job_outputs([job_description(arn, "Completed")],
                                     expected_record_ids=["doc-0", "doc-1", "doc-2", "doc-3"])
    assert [r["recordId"] for r in result.records] == ["doc-0", "doc-1", "doc-2"]
    assert result.malformed_lines == 1 and result.missing_record_ids == ["doc-3"]
    assert (result.input_tokens, result.output_tokens, result.token_source) == (120, 36, "records")


# --------------------------------------------------------------------------------------------------------------
# re-attach
# --------------------------------------------------------------------------------------------------------------
def test_reattach_with_known_arn_creates_no_job(moto_aws):
    s3 = make_client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET)
    docs = documents(120)
    bedrock, stub = stubbed("bedrock")
    client = BedrockBatchClient(bedrock=bedrock, s3=s3, sleep=lambda _: None)
    name = client.prepare(docs, index=INDEX, s3_base_uri=BASE_URI, model_id=CLAUDE, prompt_fn=prompt).specs[0].job_name
    arn = job_arn("feedbeef0001")
    prefix = f"runs/{INDEX}/bedrock_batch_outputs/output/feedbeef0001/"
    s3.put_object(Bucket=BUCKET, Key=prefix + "part-00000.jsonl.out",
                  Body="\n".join(json.dumps(claude_output(d["id"], n)) for n, d in enumerate(docs)).encode())
    stub.add_response("get_model_invocation_job", job_description(arn, "InProgress", name=name),
                      expected_params={"jobIdentifier": arn})
    stub.add_response("get_model_invocation_job", job_description(arn, "Completed", name=name),
                      expected_params={"jobIdentifier": arn})
    created = []
    with stub:  # no create_model_invocation_job is queued: a create call would fail the test
        result = client.generate(docs, index=INDEX, s3_base_uri=BASE_URI, model_id=CLAUDE, prompt_fn=prompt,
                                 options=OPTIONS, existing_job_arns=[arn], on_job_created=created.append)
        stub.assert_no_pending_responses()
    assert created == []
    assert result.job_arns == [arn] and len(result.records) == 120 and result.error_count == 0
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"runs/{INDEX}/bedrock_batch_outputs/input/")
    assert listed.get("KeyCount", 0) == 0  # nothing re-uploaded


def test_reattach_creates_only_the_missing_parts(tmp_path):
    quotas = BatchQuotas(min_records_per_job=100, max_records_per_job=200, max_records_per_file=200)
    bedrock, stub = stubbed("bedrock")
    s3, s3_stub = stubbed("s3")
    client = BedrockBatchClient(bedrock=bedrock, s3=s3, quotas=quotas, sleep=lambda _: None)
    plan = client.prepare(documents(300), index=INDEX, s3_base_uri=BASE_URI, model_id=NOVA, prompt_fn=prompt,
                          workdir=tmp_path)
    assert [s.record_count for s in plan.specs] == [150, 150]
    first, second = job_arn("aaaaaaaaaaa0"), job_arn("aaaaaaaaaaa1")
    stub.add_response("get_model_invocation_job", job_description(first, "InProgress", name=plan.specs[0].job_name))
    stub.add_response("create_model_invocation_job", {"jobArn": second}, expected_params={
        "jobName": plan.specs[1].job_name, "roleArn": ROLE, "clientRequestToken": plan.specs[1].client_request_token,
        "modelId": NOVA,
        "inputDataConfig": {"s3InputDataConfig": {"s3InputFormat": "JSONL", "s3Uri": plan.specs[1].input_uri}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": plan.specs[1].output_uri}}})
    stub.add_response("get_model_invocation_job", job_description(second, "Completed", name=plan.specs[1].job_name))
    stub.add_response("get_model_invocation_job", job_description(first, "Completed", name=plan.specs[0].job_name))
    created = []
    with stub:
        finished = client.run_jobs(plan, OPTIONS, existing_job_arns=[first], on_job_created=created.append,
                                   uploaded=True)
        stub.assert_no_pending_responses()
    assert created == [second]
    assert [d["jobArn"] for d in finished] == [first, second]


# --------------------------------------------------------------------------------------------------------------
# below the batch minimum: Converse with throttling retries
# --------------------------------------------------------------------------------------------------------------
def test_small_corpus_uses_converse_and_retries_throttling(monkeypatch, caplog):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-SECRET-VALUE")
    runtime, runtime_stub = stubbed("bedrock-runtime")
    bedrock, bedrock_stub = stubbed("bedrock")
    s3, s3_stub = stubbed("s3")
    timer = Recorder()
    client = BedrockBatchClient(bedrock=bedrock, bedrock_runtime=runtime, s3=s3, sleep=timer.sleep,
                                clock=timer.clock, converse_retry=ConverseRetry(max_attempts=4, base_delay_s=2))
    docs = documents(3)
    settings = GenerationSettings(max_tokens=200, temperature=0.3)

    def expected(doc):
        system, user = prompt(doc)
        return {"modelId": CLAUDE, "messages": [{"role": "user", "content": [{"text": user}]}],
                "inferenceConfig": {"maxTokens": 200, "temperature": 0.3}, "system": [{"text": system}]}

    runtime_stub.add_client_error("converse", service_error_code="ThrottlingException",
                                  service_message="Too many requests", http_status_code=429,
                                  expected_params=expected(docs[0]))
    runtime_stub.add_response("converse", converse_answer("what is topic 0"), expected_params=expected(docs[0]))
    runtime_stub.add_client_error("converse", service_error_code="ValidationException",
                                  service_message="Input is too long", http_status_code=400,
                                  expected_params=expected(docs[1]))
    runtime_stub.add_response("converse", converse_answer("topic 2 passage"), expected_params=expected(docs[2]))
    with runtime_stub, bedrock_stub, s3_stub, caplog.at_level("DEBUG"):  # no batch or S3 call is queued
        result = client.generate(docs, index=INDEX, s3_base_uri=BASE_URI, model_id=CLAUDE, prompt_fn=prompt,
                                 options=OPTIONS, settings=settings)
        runtime_stub.assert_no_pending_responses()
    assert result.mode == "on_demand" and result.job_arns == []
    assert len(timer.sleeps) == 1 and 0 <= timer.sleeps[0] <= 2  # one backoff, full jitter below base delay
    assert [r["recordId"] for r in result.records] == ["doc-0", "doc-1", "doc-2"]
    assert result.records[0]["modelOutput"]["content"] == [{"type": "text", "text": "what is topic 0"}]
    assert result.records[0]["modelOutput"]["usage"] == {"input_tokens": 30, "output_tokens": 9}
    assert result.records[1]["error"]["errorCode"] == 400 and "too long" in result.records[1]["error"]["errorMessage"]
    assert result.error_count == 1
    assert (result.input_tokens, result.output_tokens) == (60, 18)
    assert "wJalrXUtnFEMI-SECRET-VALUE" not in caplog.text and "Passage number" not in caplog.text


@pytest.mark.parametrize("code", ["ServiceUnavailableException", "ModelNotReadyException"])
def test_converse_retries_unavailable_models(code):
    runtime, stub = stubbed("bedrock-runtime")
    timer = Recorder()
    client = BedrockBatchClient(bedrock_runtime=runtime, sleep=timer.sleep, clock=timer.clock)
    stub.add_client_error("converse", service_error_code=code, http_status_code=503)
    stub.add_client_error("converse", service_error_code=code, http_status_code=503)
    stub.add_response("converse", converse_answer("ok"))
    with stub:
        result = client.converse_records(documents(1), model_id=NOVA, prompt_fn=prompt)
    assert len(timer.sleeps) == 2 and result.error_count == 0
    assert result.records[0]["modelOutput"]["output"]["message"]["content"] == [{"text": "ok"}]


# --------------------------------------------------------------------------------------------------------------
# clients and imports
# --------------------------------------------------------------------------------------------------------------
def test_clients_use_standard_retry_mode():
    for service in ("bedrock", "bedrock-runtime", "s3"):
        assert make_client(service, region_name=REGION).meta.config.retries["mode"] == "standard"
    client = BedrockBatchClient(region_name=REGION)
    for lazy in (client.bedrock, client.runtime, client.s3):
        assert lazy.meta.config.retries["mode"] == "standard"


def test_clients_package_does_not_import_dagster():
    code = ("import sys, finetune_assets.clients.bedrock.client as m; "
            "assert 'dagster' not in sys.modules, 'dagster imported'; print('ok')")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr


def test_no_more_jobs_in_flight_than_the_concurrency_quota(tmp_path):
    quotas = BatchQuotas(min_records_per_job=100, max_records_per_job=200, max_records_per_file=200,
                         max_concurrent_jobs=1)
    bedrock, stub = stubbed("bedrock")
    s3, _ = stubbed("s3")
    client = BedrockBatchClient(bedrock=bedrock, s3=s3, quotas=quotas, sleep=lambda _: None)
    plan = client.prepare(documents(300), index=INDEX, s3_base_uri=BASE_URI, model_id=CLAUDE, prompt_fn=prompt,
                          workdir=tmp_path)
    first, second = job_arn("bbbbbbbbbbb0"), job_arn("bbbbbbbbbbb1")
    # Stubber answers in order: the second create may only come after the first job has ended.
    stub.add_response("create_model_invocation_job", {"jobArn": first})
    stub.add_response("get_model_invocation_job", job_description(first, "InProgress"))
    stub.add_response("get_model_invocation_job", job_description(first, "Completed"))
    stub.add_response("create_model_invocation_job", {"jobArn": second})
    stub.add_response("get_model_invocation_job", job_description(second, "Completed"))
    with stub:
        finished = client.run_jobs(plan, OPTIONS, uploaded=True)
        stub.assert_no_pending_responses()
    assert [d["jobArn"] for d in finished] == [first, second]
