"""The whole graph for one small partition, through the dagster CLI and a real instance on disk."""
from __future__ import annotations

import json
import logging
import subprocess

import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from finetune_assets.core.jsonl import read_json, read_jsonl
from finetune_assets_tests.conftest import DAGSTER, INDEX, RUN_CONFIG, dagster_env
from finetune_assets_tests.test_definitions import STAGES


@pytest.mark.slow
def test_cli_validates_definitions(dagster_home, tmp_path):
    completed = subprocess.run([DAGSTER, "definitions", "validate", "-m", "finetune_assets.definitions"],
                               env=dagster_env(dagster_home, tmp_path), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Validation successful" in completed.stdout + completed.stderr


@pytest.mark.slow
def test_cli_rejects_unknown_partition(dagster_home, tmp_path):
    completed = subprocess.run([DAGSTER, "asset", "materialize", "-m", "finetune_assets.definitions",
                                "--select", "raw_corpus", "--partition", "never-added"],
                               env=dagster_env(dagster_home, tmp_path), capture_output=True, text=True, timeout=300)
    assert completed.returncode != 0
    assert "never-added" in completed.stdout + completed.stderr


@pytest.mark.slow
def test_every_asset_materialized_for_the_partition(pipeline_run):
    completed = pipeline_run["completed"]
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-6000:]
    with DagsterInstance.from_config(str(pipeline_run["home"])) as instance:
        for stage in STAGES:
            event = instance.get_latest_materialization_event(AssetKey(stage))
            assert event is not None, f"{stage} was not materialized"
            assert event.dagster_event.partition == INDEX
        metadata = {stage: instance.get_latest_materialization_event(AssetKey(stage)).asset_materialization.metadata
                    for stage in STAGES}
    corpus = metadata["raw_corpus"]
    assert corpus["records_read"].value == len(pipeline_run["valid_docs"]) + 4
    assert corpus["quarantined"].value == 4
    assert corpus["documents_sampled"].value == len(pipeline_run["valid_docs"])
    assert metadata["bedrock_batch_outputs"]["records"].value == len(pipeline_run["valid_docs"])
    assert metadata["training_pairs"]["train_pairs"].value >= 4
    training = metadata["trained_model"]
    assert training["steps"].value >= 1 and training["samples_per_second"].value > 0  # reported through Pipes
    assert "data:image/png;base64," in training["loss_curve"].value
    # The default loss distils the hybrid teacher's matrix, which mined_negatives wrote for every training query
    hyperparameters = training["hyperparameters"].value
    assert hyperparameters["loss"] == "batch_kl"
    rows = metadata["mined_negatives"]["rows"].value
    assert metadata["mined_negatives"]["teacher_rows"].value == rows
    assert "local:splade-tiny" in metadata["mined_negatives"]["teacher"].value  # the automatic third signal
    assert metadata["training_pairs"]["span_pairs"].value > 0
    # epochs and batch_size were set in the run config; the others came from the batch_kl defaults
    assert training["smart_defaults"].value["filled"] == {"learning_rate": hyperparameters["learning_rate"],
                                                          "max_steps": hyperparameters["max_steps"],
                                                          "max_seq_length": hyperparameters["train_max_seq_length"],
                                                          "candidates_per_query": hyperparameters["candidates_per_query"]}
    assert training["hyperparameters"].value["epochs"] == 1 and training["hyperparameters"].value["batch_size"] == 4
    assert metadata["bedrock_batch_outputs"]["smart_defaults"].value["filled"] == {"queries_per_type": 1}
    assert "| tuned |" in metadata["evaluation_report"]["report"].value
    # the base model ranked the training documents with the embeddings mined_negatives computed for its teacher
    assert metadata["evaluation_report"]["base_embeddings_reused"].value == \
        metadata["mined_negatives"]["candidate_documents"].value
    assert metadata["registered_model_id"]["registered"].value is False


@pytest.mark.slow
def test_artifacts_are_complete_and_bad_records_are_quarantined_by_line(pipeline_run):
    assert pipeline_run["completed"].returncode == 0
    artifacts = pipeline_run["storage"] / "artifacts" / INDEX
    current = {asset: artifacts / asset / "current" for asset in STAGES}  # each asset's current version
    quarantine = list(read_jsonl(current["raw_corpus"] / "quarantine.jsonl"))
    by_line = {q["line"]: q["reason"] for q in quarantine}
    assert set(by_line) == {4, 5, 6, len(pipeline_run["valid_docs"]) + 4}
    assert "JSON" in by_line[4] and "text" in by_line[5] and "UTF-8" in by_line[6]
    assert "duplicate id" in by_line[len(pipeline_run["valid_docs"]) + 4]
    for record in read_jsonl(current["bedrock_batch_outputs"] / "documents.jsonl.out"):
        assert {"recordId", "modelInput", "modelOutput"} <= set(record)
    report = read_json(current["evaluation_report"] / "report.json")
    assert set(report["results"]) == {"bm25", "base", "tuned", "hybrid_base", "hybrid_tuned"}
    # the saved base-model rows evaluation_report reuses are what the base model gives those documents now
    from finetune_assets.core.retrieval.retrieval import encode
    from finetune_assets.resources.base_model import BaseModelResource

    saved = np.load(current["mined_negatives"] / "base_document_embeddings.npy")
    texts = [d["text"] for d in read_jsonl(current["mined_negatives"] / "documents.jsonl")]
    base = BaseModelResource(**RUN_CONFIG["resources"]["base_model"]["config"]).load()
    np.testing.assert_allclose(saved, encode(base, texts), atol=1e-5)
    assert report["recommended"] in report["results"]
    by_type = report["ndcg@10_by_query_type"]  # every held-out query in one group, every system in each group
    assert by_type and sum(group["queries"] for group in by_type.values()) == report["judged_queries"]
    assert all(set(group) == {"queries", *report["results"]} for group in by_type.values())
    for name in ("hybrid_base", "hybrid_tuned"):  # RRF by the default rule, every candidate's figure recorded
        choice = report["hybrid"][name]["choice"]
        assert len(choice["candidates"]) == 56 and choice["rule"] == "rrf"
        assert choice["chosen"] == {"technique": "rrf", "rank_constant": 60} == report["hybrid"][name]["setting"]
        chosen = next(c["ndcg@10"] for c in choice["candidates"] if c["setting"] == choice["chosen_name"])
        assert choice["score"] == pytest.approx(chosen, abs=1e-6)
    search = read_json(current["search_pipeline"] / "search.json")
    assert search["mode"] in ("hybrid", "model", "bm25") and search["cluster"].startswith("not applied")
    assert (current["search_pipeline"] / "query.json").exists() and (current["search_pipeline"] / "apply.md").exists()
    assert {"ndcg@10", "mrr@10", "map@100", "recall@100", "precision@10"} <= set(report["results"]["tuned"])
    assert (current["evaluation_report"] / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert (current["trained_model"] / "model" / "model.safetensors").exists()
    registration = read_json(current["registered_model_id"] / "registration.json")
    assert registration["model_id"] is None and "nothing was registered" in registration["note"]


@pytest.mark.slow
def test_failed_quality_gate_falls_back_to_bm25_and_says_so(pipeline_run):
    """An impossible tolerance makes the gate fail: nothing is registered, and the deploy stage delivers plain BM25
    search, stated as a fallback in the metadata and the files."""
    assert pipeline_run["completed"].returncode == 0
    from finetune_assets.definitions import all_assets, defs
    from finetune_assets.resources.storage import ArtifactStorage
    from finetune_assets.stages.evaluation.evaluation_report import tuned_not_worse_than_base

    resources = {**defs.resources, "storage": ArtifactStorage(root=str(pipeline_run["storage"]))}
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("index", [INDEX])
        result = materialize(
            [*all_assets, tuned_not_worse_than_base],
            selection=["evaluation_report", "registered_model_id", "search_pipeline"],
            partition_key=INDEX, resources=resources, instance=instance, raise_on_error=False,
            run_config={"ops": {"evaluation_report": {"config": {"tolerance": -1.0}}},
                        "resources": {"base_model": {"config": {"max_seq_length": 128}}}},
        )
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 1 and evaluations[0].passed is False
    assert "FAILS" in evaluations[0].description
    registered = result.asset_materializations_for_node("registered_model_id")[0].metadata
    assert registered["fallback"].value is True and registered["registered"].value is False
    search = result.asset_materializations_for_node("search_pipeline")[0].metadata
    assert search["mode"].value == "bm25" and search["fallback"].value is True
    folder = pipeline_run["storage"] / "artifacts" / INDEX / "search_pipeline" / "current"
    assert read_json(folder / "query.json")["query"] == {"match": {"text": {"query": "{{query_text}}"}}}
    assert not (folder / "search_pipeline.json").exists()
    registration = read_json(pipeline_run["storage"] / "artifacts" / INDEX / "registered_model_id" / "current"
                             / "registration.json")
    assert registration["model_id"] is None and registration["fallback"] is True
    # Put back a report with the default tolerance: the tests after this one share the pipeline's artifacts.
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("index", [INDEX])
        restored = materialize(all_assets, selection=["evaluation_report"], partition_key=INDEX, resources=resources,
                               instance=instance, run_config={"ops": {"evaluation_report": RUN_CONFIG["ops"][
                                   "evaluation_report"]}, "resources": RUN_CONFIG["resources"]})
    assert restored.success


@pytest.mark.slow
def test_hybrid_search_pipeline_against_the_contract(pipeline_run):
    """With a cluster and a registered model, search_pipeline creates the pipeline once (a re-run changes nothing)
    and proves it with one hybrid query through a scratch copy."""
    assert pipeline_run["completed"].returncode == 0
    from finetune_assets.definitions import all_assets, defs
    from finetune_assets.resources.opensearch import OpenSearchResource
    from finetune_assets.resources.storage import ArtifactStorage
    from finetune_assets_tests.fakes.ml_commons_fake import DEV_SETTINGS, running_fake

    name = f"finetune-assets-{INDEX}"
    with running_fake(settings=DEV_SETTINGS, deploy_polls=1) as cluster, DagsterInstance.ephemeral() as instance:
        resources = {**defs.resources, "storage": ArtifactStorage(root=str(pipeline_run["storage"])),
                     "opensearch": OpenSearchResource(url=cluster.url)}
        instance.add_dynamic_partitions("index", [INDEX])
        config = {"ops": {"search_pipeline": {"config": {"search": "hybrid"}}}}
        runs = [materialize(all_assets, selection=["registered_model_id", "search_pipeline"], partition_key=INDEX,
                            resources=resources, instance=instance, run_config=config) for _ in range(2)]
        puts = cluster.calls(f"PUT /_search/pipeline/{name}")
        hybrid_searches = [r for r in cluster.requests if r.method == "POST" and r.path.endswith("/_search")
                           and "hybrid" in (r.json or {}).get("query", {})]
        stored = cluster.search_pipelines[name]
        leftovers = [p for p in cluster.search_pipelines if p != name]
    first, second = (run.asset_materializations_for_node("search_pipeline")[0].metadata for run in runs)
    assert first["mode"].value == "hybrid" and first["cluster"].value == "created"
    assert second["cluster"].value == "unchanged" and len(puts) == 1
    assert first["verification_top_hits"].value["hybrid"].startswith("doc-")
    assert len(hybrid_searches) == 2 and all(r.params.get("search_pipeline") for r in hybrid_searches)
    assert leftovers == []  # the scratch pipelines are deleted
    folder = pipeline_run["storage"] / "artifacts" / INDEX / "search_pipeline" / "current"
    assert read_json(folder / "search_pipeline.json") == stored
    query = read_json(folder / "query.json")["query"]["hybrid"]["queries"]
    assert query[0] == {"match": {"text": {"query": "{{query_text}}"}}} and "neural" in query[1]
    processor = read_json(folder / "ingest_pipeline.json")["processors"][0]  # a dense model: no pruning
    assert processor["text_embedding"]["field_map"] == {"text": "embedding"} and "prune_type" not in str(processor)


@pytest.mark.slow
def test_sparse_documents_are_pruned_in_the_cluster_and_an_older_cluster_is_told(pipeline_run, tmp_path):
    """search_pipeline's cluster check indexes through the ingest processor it delivers, at the prune ratio
    evaluation_report chose: the scratch documents are pruned (max_ratio), and a cluster before 2.19 gets an
    unpruned ingest pipeline with a warning. (Wiring only: a copy of the dense run's artifacts whose report says
    0.2, with a sparse base_model resource; the fake writes any deployed model's sparse field from its words.)"""
    assert pipeline_run["completed"].returncode == 0
    import shutil

    from finetune_assets.definitions import all_assets, defs
    from finetune_assets.resources.base_model import BaseModelResource
    from finetune_assets.resources.opensearch import OpenSearchResource
    from finetune_assets.resources.storage import ArtifactStorage
    from finetune_assets_tests.fakes.ml_commons_fake import DEV_SETTINGS, running_fake

    storage = tmp_path / "storage"
    shutil.copytree(pipeline_run["storage"], storage, symlinks=True)
    report_file = storage / "artifacts" / INDEX / "evaluation_report" / "current" / "report.json"
    report_file.write_text(json.dumps({**read_json(report_file), "document_prune_ratio": 0.2}))
    folder = storage / "artifacts" / INDEX / "search_pipeline" / "current"
    outcomes = []
    for pruning in (True, False):
        with running_fake(settings=DEV_SETTINGS, deploy_polls=1, pruning=pruning) as cluster, \
                DagsterInstance.ephemeral() as instance:
            resources = {**defs.resources, "storage": ArtifactStorage(root=str(storage)),
                         "opensearch": OpenSearchResource(url=cluster.url),
                         "base_model": BaseModelResource(model_type="sparse")}
            instance.add_dynamic_partitions("index", [INDEX])
            run = materialize(all_assets, selection=["registered_model_id", "search_pipeline"],
                              partition_key=INDEX, resources=resources, instance=instance,
                              run_config={"ops": {"search_pipeline": {"config": {"search": "hybrid"}}}})
            ingest_puts = [r.json for r in cluster.requests if r.method == "PUT"
                           and r.path.startswith("/_ingest/pipeline/finetune-assets-verify")]
            warnings = [e.user_message for e in instance.all_logs(run.run_id) if e.level >= logging.WARNING]
        outcomes.append((ingest_puts, warnings, read_json(folder / "ingest_pipeline.json"),
                         read_json(folder / "search.json")))
    (puts, _, delivered, search), (old_puts, old_log, old_delivered, old_search) = outcomes
    assert [p["processors"][0]["sparse_encoding"].get("prune_ratio") for p in puts[-1:]] == [0.2]
    assert delivered["processors"][0]["sparse_encoding"]["prune_type"] == "max_ratio"
    assert search["document_prune_ratio"] == 0.2
    # before 2.19: refused once with pruning, then indexed without it; the delivered body is the one that works
    assert [("prune_ratio" in str(p)) for p in old_puts[-2:]] == [True, False]
    assert "prune_type" not in str(old_delivered) and old_search["document_prune_ratio"] == 0.0
    assert any("prune_type needs OpenSearch 2.19" in m for m in old_log)
    assert not any("prune" in m for m in outcomes[0][1])  # a 2.19 cluster: no warning about pruning
    # An inference-free registration: documents are indexed by the document model, queries use the tokenizer model.
    registration_file = storage / "artifacts" / INDEX / "registered_model_id" / "current" / "registration.json"
    registration = read_json(registration_file)
    registration_file.write_text(json.dumps({**registration, "query_model_id": "tokenizer-model"}))
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("index", [INDEX])
        materialize(all_assets, selection=["search_pipeline"], partition_key=INDEX, instance=instance,
                    resources={**defs.resources, "storage": ArtifactStorage(root=str(storage)),
                               "base_model": BaseModelResource(model_type="inference_free")},
                    run_config={"ops": {"search_pipeline": {"config": {"search": "hybrid"}}}})
    processor = read_json(folder / "ingest_pipeline.json")["processors"][0]["sparse_encoding"]
    assert processor["model_id"] == registration["model_id"] and processor["prune_ratio"] == 0.2
    neural_sparse = read_json(folder / "query.json")["query"]["hybrid"]["queries"][1]["neural_sparse"]
    assert neural_sparse["sparse"]["model_id"] == "tokenizer-model"


@pytest.mark.slow
def test_a_cluster_before_2_19_gets_the_normalization_processor_instead_of_rrf(pipeline_run):
    """RRF needs the score-ranker-processor (OpenSearch 2.19+): an older cluster gets WITHOUT_RRF, files agree."""
    assert pipeline_run["completed"].returncode == 0
    from finetune_assets.core.retrieval.fusion import WITHOUT_RRF
    from finetune_assets.definitions import all_assets, defs
    from finetune_assets.resources.opensearch import OpenSearchResource
    from finetune_assets.resources.storage import ArtifactStorage
    from finetune_assets_tests.fakes.ml_commons_fake import DEV_SETTINGS, running_fake

    report = read_json(pipeline_run["storage"] / "artifacts" / INDEX / "evaluation_report" / "current" / "report.json")
    assert report["hybrid"]["hybrid_tuned"]["setting"]["technique"] == "rrf"
    with running_fake(settings=DEV_SETTINGS, deploy_polls=1, score_ranker=False, version="2.17.1") as cluster, \
            DagsterInstance.ephemeral() as instance:
        resources = {**defs.resources, "storage": ArtifactStorage(root=str(pipeline_run["storage"])),
                     "opensearch": OpenSearchResource(url=cluster.url)}
        instance.add_dynamic_partitions("index", [INDEX])
        run = materialize(all_assets, selection=["registered_model_id", "search_pipeline"], partition_key=INDEX,
                          resources=resources, instance=instance,
                          run_config={"ops": {"search_pipeline": {"config": {"search": "hybrid"}}}})
        stored = cluster.search_pipelines[f"finetune-assets-{INDEX}"]
    metadata = run.asset_materializations_for_node("search_pipeline")[0].metadata
    assert metadata["fusion"].value == WITHOUT_RRF.name and metadata["cluster"].value == "created"
    assert stored == WITHOUT_RRF.pipeline_body(stored["description"])
    folder = pipeline_run["storage"] / "artifacts" / INDEX / "search_pipeline" / "current"
    assert read_json(folder / "search_pipeline.json") == stored
    assert read_json(folder / "search.json")["setting"] == WITHOUT_RRF.to_dict()


@pytest.mark.slow
def test_registration_against_the_ml_commons_contract(pipeline_run):
    """With a cluster configured, registered_model_id uploads the package, deploys it and checks a neural query."""
    assert pipeline_run["completed"].returncode == 0
    from finetune_assets.definitions import all_assets, defs
    from finetune_assets.resources.opensearch import OpenSearchResource
    from finetune_assets.resources.storage import ArtifactStorage
    from finetune_assets_tests.fakes.ml_commons_fake import DEV_SETTINGS, running_fake

    with running_fake(settings=DEV_SETTINGS, deploy_polls=1) as cluster, DagsterInstance.ephemeral() as instance:
        resources = {**defs.resources, "storage": ArtifactStorage(root=str(pipeline_run["storage"])),
                     "opensearch": OpenSearchResource(url=cluster.url)}
        instance.add_dynamic_partitions("index", [INDEX])
        runs = [materialize(all_assets, selection=["registered_model_id"], partition_key=INDEX,
                            resources=resources, instance=instance) for _ in range(2)]
        uploads = cluster.calls("upload_chunk")
        searches = [r for r in cluster.requests if r.method == "POST" and r.path.endswith("/_search")
                    and "neural" in json.dumps(r.json or {})]
        deleted = cluster.calls("DELETE /")
    first, second = (run.asset_materializations_for_node("registered_model_id")[0].metadata for run in runs)
    assert first["registered"].value is True and first["model_id"].value
    assert second["model_id"].value == first["model_id"].value and second["reused_existing_model"].value is True
    package = read_json(pipeline_run["storage"] / "artifacts" / INDEX / "model_package" / "current" / "ml_commons_register.json")
    assert len(uploads) == package["total_chunks"]  # uploaded once: the re-run reused the deployed model
    assert len(searches) == 2 and all(s.json["query"]["neural"] for s in searches)  # one verification per run
    assert any("_ingest/pipeline" in call for call in deleted)  # the scratch pipeline and index are removed
