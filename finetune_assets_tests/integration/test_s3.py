"""S3 through boto3 against a real moto server over HTTP: the corpus sensor and the storage resource."""
import json

import boto3
import pytest
from dagster import DagsterInstance, build_sensor_context

from finetune_assets.definitions import defs
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.corpus.sensors import s3_corpus_sensor
from finetune_assets_tests.moto_server import moto_aws, moto_server  # noqa: F401  (pytest fixtures)

BUCKET = "corpora-bucket"


def _evaluate(instance, cursor):
    context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    result = s3_corpus_sensor(context)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_sensor_requests_runs_for_new_and_changed_corpora_only(moto_aws, monkeypatch, capfd):
    monkeypatch.setenv("FINETUNE_S3_BUCKET", BUCKET)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for key in ["corpora/wiki/a.jsonl", "corpora/manuals/guide part 1.txt", "corpora/검색-docs/b.jsonl",
                "corpora/Bad_Index/c.jsonl"]:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b'{"_id": "1", "text": "hello"}\n')
    with DagsterInstance.ephemeral() as instance:
        first = _evaluate(instance, None)
        assert sorted(r.partition_key for r in first.run_requests) == ["manuals", "wiki", "검색-docs"]
        assert sorted(instance.get_dynamic_partitions("index")) == ["manuals", "wiki", "검색-docs"]
        logged = capfd.readouterr().err
        assert "skipping s3://corpora-bucket/corpora/Bad_Index/" in logged and "upper-case" in logged
        # A restart re-reads the stored cursor: nothing changed, so nothing is requested.
        assert _evaluate(instance, first.cursor).run_requests == []
        s3.put_object(Bucket=BUCKET, Key="corpora/wiki/a.jsonl", Body=b'{"_id": "1", "text": "changed"}\n')
        second = _evaluate(instance, first.cursor)
        assert [r.partition_key for r in second.run_requests] == ["wiki"]
        assert second.run_requests[0].run_key != next(r.run_key for r in first.run_requests if r.partition_key == "wiki")
        third = _evaluate(instance, second.cursor)
    requested = first.run_requests + second.run_requests + third.run_requests
    assert len(requested) == 4 and len({r.run_key for r in requested}) == 4


def test_sensor_skips_without_a_bucket(monkeypatch):
    monkeypatch.delenv("FINETUNE_S3_BUCKET", raising=False)
    with DagsterInstance.ephemeral() as instance:
        result = s3_corpus_sensor(build_sensor_context(instance=instance, definitions=defs))
    assert "FINETUNE_S3_BUCKET" in result.skip_message


def test_storage_round_trips_artifacts_through_s3_with_encryption(moto_aws, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    writer = ArtifactStorage(root=f"s3://{BUCKET}/runs", cache_dir=str(tmp_path / "writer"))
    folder = writer.artifact_dir("wiki", "training_pairs")
    (folder / "train.jsonl").write_text(json.dumps({"query": "q", "positive": "p"}) + "\n")
    (folder / "nested").mkdir()
    (folder / "nested" / "part 1.bin").write_bytes(b"\x00" * 10)
    assert writer.publish("wiki", "training_pairs") == f"s3://{BUCKET}/runs/artifacts/wiki/training_pairs"
    head = s3.head_object(Bucket=BUCKET, Key="runs/artifacts/wiki/training_pairs/train.jsonl")
    assert head["ServerSideEncryption"] == "AES256"
    reader = ArtifactStorage(root=f"s3://{BUCKET}/runs", cache_dir=str(tmp_path / "reader"))
    fetched = reader.fetch("wiki", "training_pairs")
    assert (fetched / "train.jsonl").read_text() == (folder / "train.jsonl").read_text()
    assert (fetched / "nested" / "part 1.bin").read_bytes() == b"\x00" * 10
    try:
        reader.fetch("wiki", "trained_model")
    except FileNotFoundError as error:
        assert "materialize 'trained_model'" in str(error)
    else:
        raise AssertionError("a missing artifact must raise")


@pytest.mark.slow
def test_local_generator_writes_bedrock_layout_to_s3_and_pairs_read_it(moto_aws, tmp_path):
    """The embedded generator's output lands in S3 exactly where and how Bedrock batch writes it, so the same
    downstream code (training_pairs) reads it back from S3."""
    from dagster import materialize

    from finetune_assets.definitions import all_assets
    from finetune_assets_tests.conftest import write_tiny_corpus

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    corpus_file, docs = write_tiny_corpus(tmp_path / "corpus", documents=8)
    s3.upload_file(str(corpus_file), BUCKET, "runs/corpora/tiny/docs.jsonl")
    storage = ArtifactStorage(root=f"s3://{BUCKET}/runs", cache_dir=str(tmp_path / "cache"))
    selected = [a for a in all_assets if a.key.path[-1] in {"raw_corpus", "cost_estimate", "bedrock_batch_outputs",
                                                              "training_pairs"}]
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("index", ["tiny"])
        result = materialize(selected, partition_key="tiny", instance=instance,
                             resources={**defs.resources, "storage": storage},
                             run_config={"ops": {"raw_corpus": {"config": {"max_documents": 6}},
                                                 "training_pairs": {"config": {"held_out_fraction": 0.34}}}})
    assert result.success
    prefix = "runs/artifacts/tiny/bedrock_batch_outputs/"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
    assert {prefix + "documents.jsonl.out", prefix + "manifest.json.out"} <= keys
    assert s3.head_object(Bucket=BUCKET, Key=prefix + "documents.jsonl.out")["ServerSideEncryption"] == "AES256"
    body = s3.get_object(Bucket=BUCKET, Key=prefix + "documents.jsonl.out")["Body"].read().decode()
    records = [json.loads(line) for line in body.splitlines()]
    sampled = {json.loads(line)["id"] for line in s3.get_object(
        Bucket=BUCKET, Key="runs/artifacts/tiny/raw_corpus/documents.jsonl")["Body"].read().decode().splitlines()}
    assert len(records) == 6 and {r["recordId"] for r in records} == sampled
    assert all({"recordId", "modelInput", "modelOutput"} <= set(r) for r in records)
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=prefix + "manifest.json.out")["Body"].read())
    assert manifest["totalRecordCount"] == 6
    pairs_body = s3.get_object(Bucket=BUCKET, Key="runs/artifacts/tiny/training_pairs/train.jsonl")["Body"].read()
    pairs = [json.loads(line) for line in pairs_body.decode().splitlines()]
    assert pairs and {p["doc_id"] for p in pairs} <= sampled
    assert all(p["query"].strip() for p in pairs)
