"""The deploy stage after a failed quality gate: the base model's search when it beats BM25 on the held-out
queries (packaged, registered and fused as the tuned model would have been), plain BM25 otherwise; both stated as a
fallback."""
import json
import shutil
import zipfile

import pytest
from dagster import DagsterInstance, materialize

from finetune_assets.core.jsonl import read_json, write_json, write_jsonl
from finetune_assets.core.offline_models import MINILM_MODEL, minilm_path, splade_tiny_path
from finetune_assets.definitions import defs
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.opensearch import OpenSearchResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.deploy import model_package, registered_model_id, search_pipeline
from finetune_assets.stages.deploy.model_package import PACKAGE_FILE
from finetune_assets_tests.fakes.ml_commons_fake import DEV_SETTINGS, running_fake

INDEX = "fallback-docs"
DOCUMENTS = [{"id": "d1", "text": "The cat sat on the mat."}, {"id": "d2", "text": "Bananas are yellow and sweet."},
             {"id": "d3", "text": "OpenSearch registers the fine-tuned embedding models."}]
RRF_SETTING = {"technique": "rrf", "rank_constant": 60}


def failed_report(bm25: float, base: float, hybrid_base: float) -> dict:
    """An evaluation report whose tuned model (0.40) fails the gate against the base model."""
    rows = {"bm25": bm25, "base": base, "tuned": 0.40, "hybrid_base": hybrid_base, "hybrid_tuned": 0.45}
    return {"results": {row: {"ndcg@10": value} for row, value in rows.items()}, "tolerance": 0.01,
            "judged_queries": 12, "document_prune_ratio": 0.0,
            "hybrid": {"hybrid_base": {"setting": RRF_SETTING}, "hybrid_tuned": {"setting": RRF_SETTING}}}


def seeded_storage(root, report: dict, tuned_model) -> ArtifactStorage:
    """What the stages before the deploy stage leave in storage."""
    storage = ArtifactStorage(root=str(root))
    for asset, write in [
        ("raw_corpus", lambda folder: write_jsonl(folder / "documents.jsonl", DOCUMENTS)),
        ("training_pairs", lambda folder: write_jsonl(folder / "held_out.jsonl", [
            {"query": "yellow bananas", "positive": DOCUMENTS[1]["text"], "doc_id": "d2"}])),
        ("trained_model", lambda folder: shutil.copytree(tuned_model, folder / "model")),
        ("evaluation_report", lambda folder: write_json(folder / "report.json", report)),
    ]:
        folder = storage.artifact_dir(INDEX, asset)
        write(folder)
        storage.publish(INDEX, asset, folder)
    return storage


def deploy(storage: ArtifactStorage, base_model: BaseModelResource, opensearch: OpenSearchResource, assets=None):
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("index", [INDEX])
        result = materialize(assets or [model_package, registered_model_id, search_pipeline], partition_key=INDEX,
                             instance=instance, resources={**defs.resources, "storage": storage,
                                                           "base_model": base_model, "opensearch": opensearch})
    return {node: result.asset_materializations_for_node(node)[0].metadata
            for node in ("model_package", "registered_model_id", "search_pipeline")
            if result.asset_materializations_for_node(node)}


@pytest.mark.slow
def test_a_failed_gate_registers_the_base_model_when_its_hybrid_search_beats_bm25(tmp_path):
    storage = seeded_storage(tmp_path / "storage", failed_report(bm25=0.55, base=0.60, hybrid_base=0.70),
                             tuned_model=minilm_path())
    base_model = BaseModelResource(model_type="dense", base_model=MINILM_MODEL, max_seq_length=128)
    with running_fake(settings=DEV_SETTINGS, deploy_polls=1) as cluster:
        metadata = deploy(storage, base_model, OpenSearchResource(url=cluster.url))
        registration = read_json(storage.fetch(INDEX, "registered_model_id") / "registration.json")
        registered = cluster.models[registration["model_id"]]
        pipelines = dict(cluster.search_pipelines)
    package = read_json(storage.fetch(INDEX, "model_package") / PACKAGE_FILE)
    assert package["system"] == "base" and package["fallback"] is True and "failed the quality gate" in package["note"]
    assert metadata["model_package"]["system"].value == "base"
    assert registered["name"] == f"finetune-assets/{INDEX}-base"  # the base model's package, not the tuned one's
    assert registration["system"] == "base" and registration["fallback"] is True
    assert metadata["registered_model_id"]["registered"].value is True
    assert metadata["registered_model_id"]["fallback"].value is True
    search = metadata["search_pipeline"]
    assert search["mode"].value == "hybrid" and search["fallback"].value is True
    assert "base model stands in" in search["reason"].value and "hybrid 0.7000" in search["reason"].value
    assert search["cluster"].value == "created" and f"finetune-assets-{INDEX}" in pipelines
    chosen = read_json(storage.fetch(INDEX, "search_pipeline") / "search.json")
    assert chosen["system"] == "base" and chosen["setting"] == RRF_SETTING


@pytest.mark.slow
def test_a_failed_gate_gives_bm25_when_no_base_search_beats_it(tmp_path):
    storage = seeded_storage(tmp_path / "storage", failed_report(bm25=0.55, base=0.45, hybrid_base=0.50),
                             tuned_model=minilm_path())
    base_model = BaseModelResource(model_type="dense", base_model=MINILM_MODEL, max_seq_length=128)
    metadata = deploy(storage, base_model, OpenSearchResource())
    package = read_json(storage.fetch(INDEX, "model_package") / PACKAGE_FILE)
    assert package["system"] == "tuned" and package["fallback"] is False  # packaged all the same, not used
    assert "packaged all the same" in metadata["model_package"]["note"].value
    registration = read_json(storage.fetch(INDEX, "registered_model_id") / "registration.json")
    assert registration["model_id"] is None and registration["fallback"] is True and registration["system"] is None
    search = metadata["search_pipeline"]
    assert search["mode"].value == "bm25" and search["fallback"].value is True
    assert not (storage.fetch(INDEX, "search_pipeline") / "search_pipeline.json").exists()


@pytest.mark.slow
def test_an_inference_free_fallback_packages_the_base_with_this_corpus_idf(tmp_path):
    """The inference-free baseline takes its query weights from the corpus: the package's query side carries them."""
    storage = seeded_storage(tmp_path / "storage", failed_report(bm25=0.55, base=0.60, hybrid_base=0.70),
                             tuned_model=splade_tiny_path())
    base_model = BaseModelResource(model_type="inference_free", max_seq_length=128)
    metadata = deploy(storage, base_model, OpenSearchResource(), assets=[model_package])["model_package"]
    assert metadata["system"].value == "base" and metadata["model_type"].value == "inference_free"
    with zipfile.ZipFile(next((storage.fetch(INDEX, "model_package") / "query").glob("*.zip"))) as package:
        idf = json.loads(package.read("idf.json"))
    assert idf["yellow"] > idf["the"]  # a word in one document weighs more than one in two
