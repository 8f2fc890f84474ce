"""mined_negatives materialized alone with the real base model: round trip, two candidate sources, row format."""
import pytest
from dagster import DagsterInstance, PipesSubprocessClient, materialize

from finetune_assets.core.data.demo_corpus import python_docs_documents
from finetune_assets.core.data.pairs import document_text
from finetune_assets.core.jsonl import read_json, read_jsonl, write_jsonl
from finetune_assets.core.teachers.teacher_top_k import TEACHER_TOP_K, TeacherTopK, reached_rows
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.sagemaker_pipes import SageMakerTrainingResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.training.mined_negatives import mined_negatives
from finetune_assets.stages.training.trained_model import mined_negative_count, trained_model

QUERIES = {
    "argparse.ArgumentParser": "object that parses command line strings into python objects",
    "argparse.HelpFormatter": "formatter for generating usage messages and help strings",
    "base64.a85decode": "decode an ascii85 encoded bytes object",
    "base64.b16decode": "decode base16 encoded bytes",
    "base64.b32decode": "decode a base32 encoded string",
    "argparse.Action": "how command line strings are converted to python objects by an action",
    "argparse.RawTextHelpFormatter": "help formatter that keeps the formatting of help text",
    # A hallucinated query: it describes the base64 documents, not its own source document.
    "argparse.FileType": "decode base32hex and base16 encoded bytes",
}


def _materialize(tmp_path, config: dict, span_rows: int = 0, expect_success: bool = True,
                 training: dict | None = None):
    """mined_negatives on 14 Python docs (and trained_model after it with `training` as its config)."""
    documents = [{"id": d["id"], "title": d["title"], "text": d["text"]} for d in python_docs_documents()[:14]]
    assert set(QUERIES) <= {d["id"] for d in documents}
    by_id = {d["id"]: d for d in documents}
    pairs = [{"query": q, "positive": document_text(by_id[doc_id]), "doc_id": doc_id, "query_type": "factoid"}
             for doc_id, q in QUERIES.items()]
    # Candidates are the documents of training pairs plus these, as training_pairs leaves them.
    pairs += [{"query": f"what does {d['title']} do", "positive": document_text(d), "doc_id": d["id"],
               "query_type": "conceptual"} for d in documents if d["id"] not in QUERIES]
    # Span queries: a sentence of the document, its source masked for the teacher (span_queries.py).
    pairs += [{"query": d["text"].split(". ")[0], "positive": document_text(d), "doc_id": d["id"],
               "query_type": "span", "exclude_source": True} for d in documents[:span_rows]]
    storage = ArtifactStorage(root=str(tmp_path))
    for asset, name, rows in (("raw_corpus", "documents.jsonl", documents), ("training_pairs", "train.jsonl", pairs)):
        folder = storage.artifact_dir("docs", asset)
        write_jsonl(folder / name, rows)
        storage.publish("docs", asset, folder)
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("index", ["docs"])
        ops = {"mined_negatives": {"config": config}}
        if training is not None:
            ops["trained_model"] = {"config": training}
        result = materialize([mined_negatives] if training is None else [mined_negatives, trained_model],
                             partition_key="docs", instance=instance,
                             resources={"storage": storage, "sagemaker_training": SageMakerTrainingResource(),
                                        "pipes_subprocess_client": PipesSubprocessClient(),
                                        "base_model": BaseModelResource(max_seq_length=128, batch_size=16)},
                             run_config={"ops": ops}, raise_on_error=expect_success)
    if not expect_success:
        assert not result.success
        return result, [], pairs
    assert result.success
    rows = list(read_jsonl(storage.fetch("docs", "mined_negatives") / "train.jsonl"))
    return result.asset_materializations_for_node("mined_negatives")[0].metadata, rows, pairs


@pytest.mark.slow
def test_hybrid_teacher_scores_every_negative_with_the_guards_off_through_dagster_config(tmp_path):
    metadata, rows, pairs = _materialize(tmp_path, {
        "num_negatives": 2, "range_min": 0, "relative_margin": None, "teacher_margin": None,
        "teacher": "hybrid", "negative_sources": ["dense", "bm25"], "teacher_companion": ""})
    assert metadata["teacher"].value == "hybrid (BM25 0.5 + base model 0.5, z-score)"
    assert "teacher_companion_seconds" not in metadata
    assert metadata["teacher_pairs_scored"].value == 0  # all scored inside mining, none left over
    assert len(rows) == len(pairs)
    assert all(isinstance(r[k], float) for r in rows
               for k in ("teacher_positive_score", "teacher_negative_1_score", "teacher_negative_2_score"))
    assert not [k for k in metadata["removed_by_guard"].value if not k.endswith("/positive")]
    # The hybrid sees the query's own words: the source document outscores both negatives for most queries.
    above = sum(r["teacher_positive_score"] > max(r["teacher_negative_1_score"], r["teacher_negative_2_score"])
                for r in rows)
    assert above >= len(rows) * 0.6


@pytest.mark.slow
def test_round_trip_drops_a_query_about_other_documents_and_negatives_record_their_source(tmp_path):
    metadata, rows, pairs = _materialize(tmp_path, {"num_negatives": 2, "range_min": 1,
                                                     "experimental": {"roundtrip_top_k": 3},
                                                     "negative_sources": ["dense", "bm25"]})
    dropped = {r["doc_id"] for r in rows} ^ {p["doc_id"] for p in pairs}
    assert "argparse.FileType" in dropped
    assert metadata["roundtrip_queries_dropped"].value == len(pairs) - len(rows) == len(dropped)
    assert "argparse.FileType" in metadata["roundtrip_dropped_examples"].value
    assert metadata["rows"].value == len(rows)
    assert {k.split("/")[0] for k in metadata["removed_by_guard"].value} <= {"dense", "bm25"}
    assert sum(metadata["negatives_by_source"].value.values()) == 2 * len(rows)
    assert len({tuple(sorted(r)) for r in rows}) == 1
    assert {r[f"negative_{k}_source"] for r in rows for k in (1, 2)} <= {"dense", "bm25", "random"}
    assert all(r["doc_id"] not in (r["negative_1_id"], r["negative_2_id"]) for r in rows)
    assert mined_negative_count(tmp_path / "artifacts" / "docs" / "mined_negatives" / "current" / "train.jsonl") == 2


@pytest.mark.slow
def test_hybrid_teacher_writes_a_score_matrix_that_masks_span_sources_and_trains_batch_kl(tmp_path):
    import json
    import subprocess
    import sys

    import numpy as np

    from finetune_assets.core.jsonl import write_json

    metadata, rows, pairs = _materialize(tmp_path, {"num_negatives": 0, "teacher": "hybrid"},
                                         span_rows=2)
    folder = tmp_path / "artifacts" / "docs" / "mined_negatives" / "current"
    documents = list(read_jsonl(folder / "documents.jsonl"))
    store = TeacherTopK.load(folder, len(documents))
    assert isinstance(store.indices, np.memmap) and store.rows == len(rows) == metadata["teacher_rows"].value
    assert store.documents == len(documents) == metadata["teacher_documents"].value
    assert store.k == min(TEACHER_TOP_K, len(documents)) == metadata["teacher_top_k"].value
    # By default all-MiniLM-L6-v2 and SPLADE-tiny join BM25 and the dense base model (bge-small-en) in the teacher.
    assert metadata["teacher"].value == ("hybrid (BM25 0.2 + base model 0.3 + local:all-MiniLM-L6-v2 0.3 + "
                                         "local:splade-tiny 0.2, z-score)")
    assert metadata["teacher_companion_seconds"].value > 0
    column = {d["id"]: i for i, d in enumerate(documents)}
    spans = [n for n, r in enumerate(rows) if r.get("exclude_source")]
    assert len(spans) == 2 == metadata["span_queries"].value
    for n, row in enumerate(rows):
        if n in spans:
            assert store.masked(n).tolist() == [column[row["doc_id"]]]
        else:
            assert store.masked(n).size == 0
    # A generated query's own document is its teacher's favourite for most queries (the query's words are in it).
    generated = [n for n in range(len(rows)) if n not in spans]
    top = sum(int(store.candidates(n, 1)[0]) == column[rows[n]["doc_id"]] for n in generated)
    assert top >= 0.6 * len(generated)
    # The training entry point distils those top documents (sparse model: dot product + FLOPS regularisers).
    write_json(tmp_path / "hp.json", {"model_type": "sparse", "loss": "batch_kl", "batch_size": "4",
                                      "max_seq_length": "64", "logging_steps": "1", "candidates_per_query": "2"})
    done = subprocess.run([sys.executable, "-m", "finetune_assets.training", "--train-dir", str(folder),
                           "--model-dir", str(tmp_path / "model"), "--hyperparameters", str(tmp_path / "hp.json")],
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stderr.strip().splitlines()[-1])
    assert summary["steps"] == -(-len(rows) // 4) and summary["final_loss"] > 0
    assert (tmp_path / "model" / "modules.json").exists()
    # The FLOPS term is logged beside the loss it is part of.
    history = json.loads((tmp_path / "model" / "training_log.json").read_text())["loss_history"]
    assert len(history) == summary["steps"]  # logging_steps 1: one entry a step
    assert all(0 < entry["regularizer"] < entry["loss"] for entry in history)


def test_only_the_rows_training_reads_are_mined_and_scored(tmp_path):
    metadata, rows, pairs = _materialize(tmp_path, {"max_rows": 9, "teacher_top_k": 5}, span_rows=10)
    folder = tmp_path / "artifacts" / "docs" / "mined_negatives" / "current"
    documents = list(read_jsonl(folder / "documents.jsonl"))
    store = TeacherTopK.load(folder, len(documents))
    # 9 of the pairs, drawn by the seeded shuffle, in file order; K = 5 documents each.
    kept = reached_rows(len(pairs), 9)
    assert [r["query"] for r in rows] == [pairs[i]["query"] for i in kept]
    assert store.rows == 9 == metadata["rows"].value == metadata["teacher_rows"].value
    assert metadata["training_pairs"].value == len(pairs) > 9 and store.k == 5 == metadata["teacher_top_k"].value
    assert read_json(folder / "counts.json") == {"rows": 9, "training_pairs": len(pairs)}  # what trained_model warns on
    assert all(row.get("negative_1") for row in rows)  # mined too
    # The candidates are still every training pair's document, and a span row masks its own source.
    assert len(documents) == len({p["doc_id"] for p in pairs})
    column = {d["id"]: i for i, d in enumerate(documents)}
    kinds = [bool(row.get("exclude_source")) for row in rows]
    assert any(kinds) and not all(kinds)
    for i, row in enumerate(rows):
        assert store.masked(i).tolist() == ([column[row["doc_id"]]] if kinds[i] else [])


@pytest.mark.slow
def test_a_training_budget_sets_the_rows_mined_and_the_steps_trained(tmp_path):
    # At 0.1 rows/s a step of 4 rows takes 40 s, so 1.4 minutes hold 2 steps: 8 of the 12 pairs are mined.
    training = {"training_budget_minutes": 1.4, "training_rows_per_second": 0.1, "batch_size": 4,
                "max_seq_length": 64, "candidates_per_query": 2}
    _, rows, pairs = _materialize(tmp_path, {"teacher_top_k": 5}, span_rows=4, training=training)
    assert len(rows) == 8 < len(pairs)
    folder = tmp_path / "artifacts" / "docs" / "trained_model" / "current"
    assert read_json(folder / "hyperparameters.json")["max_steps"] == 2
    assert read_json(folder / "model" / "training_log.json")["steps"] == 2


def test_by_default_the_hybrid_teacher_mines_what_the_runs_batch_kl_training_reads():
    from finetune_assets.core.cost.smart_defaults import batch_kl_lookup
    from finetune_assets.stages.training.trained_model import TrainedModelConfig, batch_kl_rows_read

    local = SageMakerTrainingResource()

    def rows(model_type, available, **training):
        return batch_kl_rows_read(TrainedModelConfig(**training), BaseModelResource(model_type=model_type), available,
                                  local)

    entry = batch_kl_lookup("sparse")
    assert rows("sparse", 100_000) == entry.max_steps * entry.batch_size > 0  # the table's steps
    assert rows("sparse", 1_000) == 1_000  # fewer pairs than those steps read: every one
    assert rows("inference_free", 100_000) == 0 == rows("dense", 0)  # batch_kl does not train it: every pair
    assert rows("dense", 100_000, max_steps=10, batch_size=8) == 80  # the run's own trained_model settings
    # A budget replaces the table's steps: 10 min at 20 rows/s = 12,000 rows, or 2 epochs of fewer pairs.
    assert rows("dense", 100_000, training_budget_minutes=10, training_rows_per_second=20, batch_size=32) == 12_000
    assert rows("dense", 5_000, training_budget_minutes=10, training_rows_per_second=20) == 5_000


@pytest.mark.slow
def test_teacher_weights_set_each_signal_and_need_a_companion(tmp_path):
    metadata, _, _ = _materialize(tmp_path / "set", {"num_negatives": 0, "teacher_weights": [0.1, 0.2, 0.3, 0.4]})
    assert metadata["teacher"].value == ("hybrid (BM25 0.1 + base model 0.2 + local:all-MiniLM-L6-v2 0.3 + "
                                         "local:splade-tiny 0.4, z-score)")
    result, _, _ = _materialize(tmp_path / "short", {"num_negatives": 0, "teacher_weights": [0.2, 0.2, 0.6]},
                                expect_success=False)
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "teacher_weights are 4 weights" in failure.step_failure_data.error.cause.message
    result, _, _ = _materialize(tmp_path / "alone", {"num_negatives": 0, "teacher_weights": [0.5, 0.5, 0.0],
                                                     "teacher_companion": ""}, expect_success=False)
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "teacher_companion is empty" in failure.step_failure_data.error.cause.message
    assert not (tmp_path / "alone" / "artifacts" / "docs" / "mined_negatives").exists()  # failed before mining
