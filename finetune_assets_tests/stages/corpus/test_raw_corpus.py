"""raw_corpus and its check materialized in process: the quarantined share, and duplicates in an index dump."""
from __future__ import annotations

import json

from dagster import DagsterInstance, materialize
from opensearchpy import OpenSearch

from finetune_assets.core.jsonl import read_jsonl
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.opensearch import OpenSearchResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.corpus.raw_corpus import few_records_quarantined, raw_corpus
from finetune_assets_tests.fakes.osmem_server import (
    bulk_index,
    osmem,  # noqa: F401  (pytest fixture)
)


def run_raw_corpus(tmp_path, index: str, config: dict, url: str = ""):
    storage = ArtifactStorage(root=str(tmp_path / "storage"))
    resources = {"storage": storage, "base_model": BaseModelResource(), "opensearch": OpenSearchResource(url=url)}
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("index", [index])
        result = materialize([raw_corpus, few_records_quarantined], partition_key=index, resources=resources,
                             instance=instance, run_config={"ops": {"raw_corpus": {"config": config}}})
    return result, storage.fetch(index, "raw_corpus")


def test_quarantined_share_counts_every_record_read_not_the_sample(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"_id": f"d{i}", "text": f"Document {i} on boundary layers."}) for i in range(20)]
    corpus.write_text("\n".join([*lines[:7], "{broken json", *lines[7:]]) + "\n")
    result, folder = run_raw_corpus(tmp_path, "share-docs", {"source": str(corpus), "max_documents": 2})
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed, evaluation.description
    assert evaluation.description == "1 of 21 records read were quarantined (4.8%); 2 documents sampled"
    assert evaluation.metadata["records_read"].value == 21
    assert sum(1 for _ in read_jsonl(folder / "documents.jsonl")) == 2


def test_duplicates_in_an_index_are_resolved_like_file_duplicates(osmem, tmp_path):  # noqa: F811
    index = "dup-docs"
    bulk_index(OpenSearch(osmem.url), index, [
        {"_id": "a", "text": "Same text here."}, {"_id": "b", "text": "same   TEXT here."},
        {"_id": "c", "text": "A different document."}])
    result, folder = run_raw_corpus(tmp_path, index, {"from_opensearch": True, "max_documents": 0}, osmem.url)
    assert sorted(d["id"] for d in read_jsonl(folder / "documents.jsonl")) == ["b", "c"]
    (entry,) = read_jsonl(folder / "quarantine.jsonl")
    assert entry["reason"] == "duplicate text of document 'b' (kept _id 'b': longer text, 17 vs 15 chars)"
    assert json.loads(entry["raw"]) == {"id": "a", "text": "Same text here.", "title": ""}
    metadata = result.asset_materializations_for_node("raw_corpus")[0].metadata
    assert (metadata["duplicate_texts"].value, metadata["records_read"].value) == (1, 3)
