"""The benchmark's own plumbing: reading a BEIR folder and reusing an earlier run's queries."""
import json

import pytest

from finetune_assets.benchmark import REUSABLE_ASSETS, _reuse_queries, partition_name, read_beir
from finetune_assets.resources.storage import ArtifactStorage


def write_beir(folder):
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in [
        {"_id": "1", "title": "Wings", "text": "Lift on a wing."}, {"_id": 2, "title": "Only a title", "text": ""}]))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": 7, "text": "what lifts a wing"}))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n7\t1\t2\n7\t2\t0\n")


def test_read_beir_keeps_ids_as_strings_and_graded_judgements(tmp_path):
    write_beir(tmp_path / "My Collection")
    corpus, queries, qrels = read_beir(tmp_path / "My Collection")
    assert [d["_id"] for d in corpus] == ["1", 2]
    assert queries == {"7": "what lifts a wing"}
    assert qrels == {"7": {"1": 2, "2": 0}}
    assert partition_name(tmp_path / "My Collection") == "my-collection"


def test_reuse_queries_copies_the_generated_queries_and_names_what_is_missing(tmp_path):
    earlier = ArtifactStorage(root=str(tmp_path / "earlier" / "storage"))
    for asset in REUSABLE_ASSETS:
        (earlier.artifact_dir("cacm", asset) / "marker.txt").write_text(asset)
    later = ArtifactStorage(root=str(tmp_path / "later" / "storage"))
    _reuse_queries(tmp_path / "earlier", later, "cacm")
    for asset in REUSABLE_ASSETS:
        assert (later.fetch("cacm", asset) / "marker.txt").read_text() == asset
    assert not (tmp_path / "later" / "storage" / "artifacts" / "cacm" / "raw_corpus").exists()  # drawn again
    with pytest.raises(FileNotFoundError, match=r"artifacts/cranfield/bedrock_batch_outputs is missing"):
        _reuse_queries(tmp_path / "earlier", later, "cranfield")


def test_cpu_clock_splits_cpu_time_between_spans():
    import time

    from finetune_assets.benchmark import CpuClock, _process_cpu_seconds

    with CpuClock(interval=0.05) as clock:
        idle_start = time.time()
        time.sleep(0.4)
        busy_start = idle_end = time.time()
        target = _process_cpu_seconds() + 0.4
        while _process_cpu_seconds() < target:  # busy until 0.4 CPU seconds are spent, however contended
            sum(range(1000))
        busy_end = time.time()
        time.sleep(0.1)
    assert clock.between(busy_start, busy_end) >= 0.3
    assert clock.between(idle_start, idle_end) < 0.15
    assert clock.between(busy_end, idle_start) == 0.0  # a reversed span is empty, not negative


@pytest.mark.slow
def test_queries_only_stops_after_generation_and_leaves_a_work_dir_to_reuse(tmp_path):
    from finetune_assets.benchmark import format_table, run_benchmark

    write_beir(tmp_path / "tiny")
    report = run_benchmark(tmp_path / "tiny", tmp_path / "out.json", max_docs=2, work_dir=tmp_path / "work",
                           queries_only=True)
    assert "results" not in report and json.loads((tmp_path / "out.json").read_text())["work_dir"] == str(
        tmp_path / "work")
    assert set(report["timings_s"]) >= {"raw_corpus", "bedrock_batch_outputs", "pipeline_total"}
    artifacts = tmp_path / "work" / "storage" / "artifacts" / "tiny"
    assert (artifacts / "bedrock_batch_outputs" / "documents.jsonl.out").is_file()
    assert not (artifacts / "training_pairs").exists()
    assert "--reuse-queries" in format_table(report)
    with pytest.raises(ValueError, match="pass one of them"):
        run_benchmark(tmp_path / "tiny", tmp_path / "again.json", queries_only=True, reuse_queries=tmp_path / "work")
