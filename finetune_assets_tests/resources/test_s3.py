"""S3 through boto3 against a real moto server over HTTP: the corpus sensor and the storage resource."""
import json

import boto3
import pytest
from dagster import DagsterInstance, build_sensor_context

from finetune_assets.definitions import defs
from finetune_assets.resources.storage import CURRENT_KEY, ArtifactStorage
from finetune_assets.stages.corpus.sensors import s3_corpus_sensor

# pytest fixtures, imported "as" themselves so linters see them used
from finetune_assets_tests.fakes.moto_server import moto_aws as moto_aws
from finetune_assets_tests.fakes.moto_server import moto_server as moto_server

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
    prefix = f"runs/artifacts/wiki/training_pairs/{folder.name}"
    assert writer.publish("wiki", "training_pairs", folder) == f"s3://{BUCKET}/{prefix}"
    head = s3.head_object(Bucket=BUCKET, Key=f"{prefix}/train.jsonl")
    assert head["ServerSideEncryption"] == "AES256"
    pointer = s3.get_object(Bucket=BUCKET, Key=f"runs/artifacts/wiki/training_pairs/{CURRENT_KEY}")
    assert pointer["Body"].read().decode().strip() == folder.name and pointer["ServerSideEncryption"] == "AES256"
    reader = ArtifactStorage(root=f"s3://{BUCKET}/runs", cache_dir=str(tmp_path / "reader"))
    fetched = reader.fetch("wiki", "training_pairs")
    assert fetched.name == folder.name
    assert (fetched / "train.jsonl").read_text() == (folder / "train.jsonl").read_text()
    assert (fetched / "nested" / "part 1.bin").read_bytes() == b"\x00" * 10
    assert reader.uri("wiki", "training_pairs", "train.jsonl") == f"s3://{BUCKET}/{prefix}/train.jsonl"
    with pytest.raises(FileNotFoundError, match="materialize 'trained_model'"):
        reader.fetch("wiki", "trained_model")


def test_s3_versions_are_pruned_and_objects_stored_before_versioning_are_still_read(moto_aws, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="runs/artifacts/wiki/raw_corpus/documents.jsonl", Body=b'{"id": "old"}\n')
    reader = ArtifactStorage(root=f"s3://{BUCKET}/runs", cache_dir=str(tmp_path / "reader"), keep_previous=1)
    assert (reader.fetch("wiki", "raw_corpus") / "documents.jsonl").read_text() == '{"id": "old"}\n'
    writer = ArtifactStorage(root=f"s3://{BUCKET}/runs", cache_dir=str(tmp_path / "writer"), keep_previous=1)
    versions = []
    for number in range(3):
        folder = writer.artifact_dir("wiki", "raw_corpus")
        (folder / "documents.jsonl").write_text(f'{{"id": "{number}"}}\n')
        writer.publish("wiki", "raw_corpus", folder)
        versions.append(folder.name)
        fetched = reader.fetch("wiki", "raw_corpus")  # a reader on another machine follows the pointer
        assert fetched.name == folder.name and (fetched / "documents.jsonl").read_text() == f'{{"id": "{number}"}}\n'
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/artifacts/wiki/raw_corpus/")["Contents"]}
    kept = {key.split("/")[4] for key in keys if key.count("/") > 4}
    assert kept == set(versions[1:])  # the current version and one previous; the unversioned object went too
    assert f"runs/artifacts/wiki/raw_corpus/{CURRENT_KEY}" in keys and len(keys) == 2 * 2 + 1
    cached = {p.name for p in (tmp_path / "reader").rglob("*") if p.parent.name == "raw_corpus" and p.is_dir()}
    assert cached == set(versions[1:])  # the reader's cache follows the same rule


def current_prefix(s3, asset: str) -> str:
    """Key prefix of the version of `asset` (partition tiny) that its CURRENT pointer names."""
    pointer = s3.get_object(Bucket=BUCKET, Key=f"runs/artifacts/tiny/{asset}/{CURRENT_KEY}")
    return f"runs/artifacts/tiny/{asset}/{pointer['Body'].read().decode().strip()}/"


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
    prefix = current_prefix(s3, "bedrock_batch_outputs")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
    assert {prefix + "documents.jsonl.out", prefix + "manifest.json.out"} <= keys
    assert s3.head_object(Bucket=BUCKET, Key=prefix + "documents.jsonl.out")["ServerSideEncryption"] == "AES256"
    body = s3.get_object(Bucket=BUCKET, Key=prefix + "documents.jsonl.out")["Body"].read().decode()
    records = [json.loads(line) for line in body.splitlines()]
    sampled = {json.loads(line)["id"] for line in s3.get_object(
        Bucket=BUCKET, Key=current_prefix(s3, "raw_corpus") + "documents.jsonl")["Body"].read().decode().splitlines()}
    assert len(records) == 6 and {r["recordId"] for r in records} == sampled
    assert all({"recordId", "modelInput", "modelOutput"} <= set(r) for r in records)
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=prefix + "manifest.json.out")["Body"].read())
    assert manifest["totalRecordCount"] == 6
    pairs_body = s3.get_object(Bucket=BUCKET, Key=current_prefix(s3, "training_pairs") + "train.jsonl")["Body"].read()
    pairs = [json.loads(line) for line in pairs_body.decode().splitlines()]
    assert pairs and {p["doc_id"] for p in pairs} <= sampled
    assert all(p["query"].strip() for p in pairs)
