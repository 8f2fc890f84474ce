"""The benchmark's own plumbing: reading a BEIR folder and reusing an earlier run's queries."""
import json

import pytest

from finetune_assets import cli
from finetune_assets.benchmark import QRELS_FORMATS, REUSABLE_ASSETS, _reuse_queries, partition_name, read_beir
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


def test_qrels_in_trec_and_headerless_beir_format(tmp_path):
    write_beir(tmp_path / "trec")
    (tmp_path / "trec" / "qrels" / "test.tsv").write_text("7 0 1 2\n7 0 2 0\n\n8\tQ0\t1\t1\n")
    assert read_beir(tmp_path / "trec")[2] == {"7": {"1": 2, "2": 0}, "8": {"1": 1}}
    (tmp_path / "trec" / "qrels" / "test.tsv").write_text("7\t1\t2\n7\tdoc two\t1.0\n")
    assert read_beir(tmp_path / "trec")[2] == {"7": {"1": 2, "doc two": 1}}


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = cli.main(["benchmark", *map(str, argv)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.err.strip()


def test_cli_bad_benchmark_input_is_one_line_and_exit_2(tmp_path, capsys):
    folder = tmp_path / "beir"
    write_beir(folder)
    out = tmp_path / "out.json"
    qrels = folder / "qrels" / "test.tsv"
    qrels.unlink()
    assert run_cli(capsys, folder, "--out", out) == (
        2, f"finetune-assets benchmark: {folder} has no qrels/test.tsv; a BEIR folder holds corpus.jsonl, "
           f"queries.jsonl, qrels/test.tsv")
    assert run_cli(capsys, tmp_path / "nowhere", "--out", out)[1].endswith("nowhere is not a folder; a BEIR "
                                                                           "folder holds corpus.jsonl, queries.jsonl, "
                                                                           "qrels/test.tsv")
    qrels.write_text("7 0 1 2\n7 0 2 high\n")
    assert run_cli(capsys, folder, "--out", out) == (
        2, f"finetune-assets benchmark: {qrels}:2: relevance 'high' is not an integer; expected {QRELS_FORMATS}")
    qrels.write_text("7 1\n")
    assert run_cli(capsys, folder, "--out", out) == (
        2, f"finetune-assets benchmark: {qrels}:1: 2 column(s); expected {QRELS_FORMATS}")
    qrels.write_text("query-id\tcorpus-id\tscore\n7\t1\t2\n")
    (folder / "corpus.jsonl").write_text('{"_id": "1", "text": "Lift on a wing."}\n{"_id": "2", "title": "no text"}\n')
    assert run_cli(capsys, folder, "--out", out) == (
        2, f"finetune-assets benchmark: {folder / 'corpus.jsonl'}:2: field 'text' is missing or not a string "
           f"(record '_id' '2')")
    write_beir(tmp_path / "good")
    assert run_cli(capsys, tmp_path / "good", "--out", tmp_path) == (
        2, f"finetune-assets benchmark: --out {tmp_path} is a folder; give the JSON file to write, e.g. "
           f"{tmp_path / 'benchmark.json'}")
    assert run_cli(capsys, tmp_path / "good", "--out", out, "--config-json", "{ops: 1}") == (
        2, "finetune-assets benchmark: --config-json is not valid JSON (Expecting property name enclosed in double "
           "quotes at column 2)")
    assert not out.exists()


def test_reuse_queries_copies_the_generated_queries_and_names_what_is_missing(tmp_path):
    earlier = ArtifactStorage(root=str(tmp_path / "earlier" / "storage"))
    for asset in REUSABLE_ASSETS:
        folder = earlier.artifact_dir("cacm", asset)
        (folder / "marker.txt").write_text(asset)
        earlier.publish("cacm", asset, folder)
        (earlier.artifact_dir("cacm", asset) / "marker.txt").write_text("a later run that failed")
    later = ArtifactStorage(root=str(tmp_path / "later" / "storage"))
    _reuse_queries(tmp_path / "earlier", later, "cacm")
    for asset in REUSABLE_ASSETS:
        assert (later.fetch("cacm", asset) / "marker.txt").read_text() == asset  # the current version's
        assert sorted(p.name for p in later.fetch("cacm", asset).iterdir()) == [".published.json", "marker.txt"]
    assert not (tmp_path / "later" / "storage" / "artifacts" / "cacm" / "raw_corpus").exists()  # drawn again
    with pytest.raises(FileNotFoundError, match=r"artifacts/cranfield/bedrock_batch_outputs is missing"):
        _reuse_queries(tmp_path / "earlier", later, "cranfield")


def test_reuse_queries_reads_a_work_dir_from_before_versioned_storage(tmp_path):
    for asset in REUSABLE_ASSETS:  # files directly in the asset folder, as older runs left them
        folder = tmp_path / "earlier" / "storage" / "artifacts" / "cacm" / asset
        folder.mkdir(parents=True)
        (folder / "documents.jsonl.out").write_text('{"recordId": "1"}\n')
    later = ArtifactStorage(root=str(tmp_path / "later" / "storage"))
    _reuse_queries(tmp_path / "earlier", later, "cacm")
    for asset in REUSABLE_ASSETS:
        assert (later.fetch("cacm", asset) / "documents.jsonl.out").read_text() == '{"recordId": "1"}\n'


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
    assert (artifacts / "bedrock_batch_outputs" / "current" / "documents.jsonl.out").is_file()
    assert not (artifacts / "training_pairs").exists()
    assert "--reuse-queries" in format_table(report)
    with pytest.raises(ValueError, match="pass one of them"):
        run_benchmark(tmp_path / "tiny", tmp_path / "again.json", queries_only=True, reuse_queries=tmp_path / "work")


def test_the_table_shows_what_the_hybrid_query_adds_with_its_interval():
    from finetune_assets.benchmark import format_table

    systems = {"bm25": 0.50, "base": 0.41, "tuned": 0.44, "hybrid_base": 0.515, "hybrid_tuned": 0.518}
    report = {"collection": "cacm", "judged_queries": 52, "documents": 3204,
              "results": {s: {"ndcg@10": v, "mrr@10": v, "recall@100": v} for s, v in systems.items()},
              "tuned_minus_base_ndcg@10": {"mean": 0.03, "ci95": [-0.01, 0.07]},
              "hybrid_tuned_minus_hybrid_base_ndcg@10": {"mean": 0.003, "ci95": [-0.02, 0.025]},
              "timings_s": {"pipeline_total": 1.0}}
    table = format_table(report).splitlines()
    assert "hybrid_tuned - hybrid_base nDCG@10: +0.0030 (95% CI -0.0200 .. +0.0250)" in table
    assert not any(line.startswith("hybrid_tuned - bm25") for line in table)  # only the gains the run reported


def test_delivered_figures_score_the_delivered_search_against_the_best_row():
    from finetune_assets.benchmark import BenchmarkRunError, delivered_figures, format_table
    from finetune_assets.core.retrieval.evaluation import Comparison

    per_query = {"bm25": [0.2, 0.4, 0.3], "tuned": [0.6, 0.5, 0.4], "hybrid_tuned": [0.5, 0.5, 0.3]}
    comparison = Comparison(
        judged_queries=3, documents=10,
        results={name: {"ndcg@10": sum(v) / 3} for name, v in per_query.items()},
        ndcg_per_query={name: {f"q{i}": x for i, x in enumerate(v)} for name, v in per_query.items()})
    search = {"mode": "hybrid", "system": "tuned", "reason": "best held-out nDCG@10"}
    by_type = {"factoid": {"queries": 40, "bm25": 0.7, "tuned": 0.5, "hybrid_tuned": 0.68}}
    held_out = {"judged_queries": 80, "results": {"bm25": {"ndcg@10": 0.61234}, "tuned": {"ndcg@10": 0.5},
                                                  "hybrid_tuned": {"ndcg@10": 0.65}},
                "ndcg@10_by_query_type": by_type}
    figures = delivered_figures(comparison, search, held_out)
    assert figures["row"] == "hybrid_tuned" and figures["best_row"] == "tuned"
    assert figures["ndcg@10"] == pytest.approx(0.4333, abs=1e-4)
    assert figures["minus_best_ndcg@10"]["mean"] == pytest.approx(-0.0667, abs=1e-4)
    low, high = figures["minus_best_ndcg@10"]["ci95"]
    assert low <= -0.0667 <= high <= 0
    assert figures["held_out_synthetic"] == {"queries": 80, "by_query_type": by_type,
                                             "ndcg@10": {"bm25": 0.6123, "tuned": 0.5, "hybrid_tuned": 0.65}}
    best = delivered_figures(comparison, {**search, "mode": "model"}, held_out)
    assert best["row"] == "tuned" and "minus_best_ndcg@10" not in best
    comparison.results["hybrid_tuned"]["ndcg@10"] = comparison.results["tuned"]["ndcg@10"]
    tied = delivered_figures(comparison, search, held_out)
    assert tied["best_row"] == "hybrid_tuned" and "minus_best_ndcg@10" not in tied  # a tie is no shortfall
    report = {"collection": "cranfield", "judged_queries": 3, "documents": 10, "delivered": figures,
              "results": {n: {"ndcg@10": v["ndcg@10"], "mrr@10": 0, "recall@100": 0}
                          for n, v in comparison.results.items()},
              "tuned_minus_base_ndcg@10": {"mean": 0.0, "ci95": [0.0, 0.0]}, "timings_s": {"pipeline_total": 1.0}}
    table = format_table(report)
    assert "delivered by search_pipeline: hybrid_tuned 0.4333 (-0.0667 against the best row, tuned, 95% CI" in table
    assert "chosen on 80 held-out synthetic queries: bm25 0.6123, tuned 0.5000, hybrid_tuned 0.6500" in table
    with pytest.raises(BenchmarkRunError, match="delivered 'hybrid_base', which the real-query evaluation did not"):
        delivered_figures(comparison, {**search, "system": "base"}, held_out)


def test_the_table_shows_the_pruned_sparsity_beside_the_unpruned_flops():
    from finetune_assets.benchmark import format_table

    report = {"collection": "cranfield", "judged_queries": 225, "documents": 1400,
              "results": {s: {"ndcg@10": 0.35, "mrr@10": 0.5, "recall@100": 0.7} for s in ("bm25", "base", "tuned")},
              "tuned_minus_base_ndcg@10": {"mean": 0.03, "ci95": [0.01, 0.05]}, "timings_s": {"pipeline_total": 1.0},
              "sparsity": {"base": {"avg_active_dims_query": 58.1, "avg_active_dims_document": 230.3, "flops": 12.2},
                           "tuned": {"avg_active_dims_query": 51.7, "avg_active_dims_document": 99.7, "flops": 7.53,
                                     "document_prune_ratio": 0.2, "avg_active_dims_document_unpruned": 182.2,
                                     "flops_unpruned": 13.56}}}
    lines = format_table(report).splitlines()
    assert "base sparsity: 58.1 active dims per query, 230.3 per document, FLOPS 12.200" in lines
    assert ("tuned sparsity: 51.7 active dims per query, 99.7 per document, FLOPS 7.530 (documents pruned at "
            "max_ratio 0.2; unpruned FLOPS 13.560)") in lines


def write_docs_collection(folder):
    """24 real documents; every fourth one's title is a query judged relevant to it. Returns (documents, judged)."""
    from finetune_assets.core.data.demo_corpus import python_docs_documents

    (folder / "qrels").mkdir(parents=True)
    docs = python_docs_documents()[:24]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": d["id"], "title": d["title"],
                                                               "text": d["text"]}) for d in docs))
    judged = docs[::4]  # each query is a document's title, judged relevant to that document
    (folder / "queries.jsonl").write_text("\n".join(json.dumps({"_id": f"q{n}", "text": d["title"]})
                                                    for n, d in enumerate(judged)))
    (folder / "qrels" / "test.tsv").write_text("".join(f"q{n}\t{d['id']}\t1\n" for n, d in enumerate(judged)))
    return docs, judged


@pytest.mark.slow
def test_a_benchmark_run_scores_every_row_and_the_search_it_delivered(tmp_path):
    """The whole graph on a small BEIR folder (real documents, queries judged against them), then the real-query
    evaluation: every system and hybrid row, and the search that search_pipeline delivered, scored."""
    from finetune_assets.benchmark import format_table, run_benchmark
    from finetune_assets_tests.conftest import RUN_CONFIG

    folder = tmp_path / "docs-collection"
    docs, judged = write_docs_collection(folder)
    report = run_benchmark(folder, tmp_path / "out.json", max_docs=10, corpus_docs=0, work_dir=tmp_path / "work",
                           run_config={"ops": RUN_CONFIG["ops"]}, base_model="local:all-MiniLM-L6-v2")

    assert report["judged_queries"] == len(judged) and report["documents"] == len(docs)
    assert report["settings"]["base_model"] == "local:all-MiniLM-L6-v2"
    assert set(report["results"]) == {"bm25", "base", "tuned", "hybrid_base", "hybrid_tuned"}
    search = json.loads(next((tmp_path / "work").glob("storage/artifacts/*/search_pipeline/current/search.json"))
                        .read_text())
    delivered = report["delivered"]
    assert delivered["search"] == search["mode"] and delivered["reason"] == search["reason"]
    assert delivered["ndcg@10"] == report["results"][delivered["row"]]["ndcg@10"]
    best_row = delivered["best_row"]
    assert report["results"][best_row]["ndcg@10"] == max(values["ndcg@10"] for values in report["results"].values())
    if "minus_best_ndcg@10" in delivered:
        assert best_row != delivered["row"] and delivered["minus_best_ndcg@10"]["mean"] <= 0
    else:
        assert best_row == delivered["row"]
    report_file = next((tmp_path / "work").glob("storage/artifacts/*/evaluation_report/current/report.json"))
    held_out = json.loads(report_file.read_text())
    assert delivered["held_out_synthetic"] == {
        "queries": held_out["judged_queries"],
        "ndcg@10": {name: round(values["ndcg@10"], 4) for name, values in held_out["results"].items()},
        "by_query_type": held_out["ndcg@10_by_query_type"]}
    assert set(delivered["held_out_synthetic"]["ndcg@10"]) == set(report["results"])
    assert json.loads((tmp_path / "out.json").read_text())["delivered"] == delivered
    table = format_table(report)
    assert f"delivered by search_pipeline: {delivered['row']}" in table
    assert f"chosen on {held_out['judged_queries']} held-out synthetic queries: bm25 " in table


@pytest.mark.slow
def test_a_sparse_run_goes_through_the_whole_graph_and_delivers_a_neural_sparse_hybrid_query(tmp_path):
    """The sparse type through the whole graph: evaluation_report fuses each hybrid row by the rule (RRF at equal
    weights), the benchmark scores the real queries with that same setting, and search_pipeline writes a
    neural_sparse sub-query and the score-ranker-processor."""
    from finetune_assets.benchmark import run_benchmark
    from finetune_assets.core.retrieval.fusion import RRF, FusionSetting
    from finetune_assets_tests.conftest import RUN_CONFIG

    folder = tmp_path / "docs-collection"
    write_docs_collection(folder)
    ops = {**RUN_CONFIG["ops"], "search_pipeline": {"config": {"search": "hybrid"}}}
    report = run_benchmark(folder, tmp_path / "out.json", max_docs=10, corpus_docs=0, model_type="sparse",
                           work_dir=tmp_path / "work", run_config={"ops": ops})
    held_out = json.loads(next((tmp_path / "work").glob(
        "storage/artifacts/*/evaluation_report/current/report.json")).read_text())
    assert held_out["model_type"] == "sparse" and report["settings"]["model_type"] == "sparse"
    for row in ("hybrid_base", "hybrid_tuned"):  # the real queries are fused by the setting chosen on synthetic ones
        choice = held_out["hybrid"][row]["choice"]
        assert choice["rule"] == "rrf" and choice["chosen"] == FusionSetting(RRF).to_dict()
        assert report["hybrid"][row]["setting"] == choice["chosen"]
    assert report["sparsity"]["tuned"]["flops"] > 0 and report["sparsity"]["base"]["flops"] > 0
    search_dir = next((tmp_path / "work").glob("storage/artifacts/*/search_pipeline/current"))
    assert json.loads((search_dir / "search.json").read_text())["mode"] == "hybrid"
    processor = json.loads((search_dir / "search_pipeline.json").read_text())["phase_results_processors"][0]
    assert processor["score-ranker-processor"]["combination"]["technique"] == RRF
    sub_queries = json.loads((search_dir / "query.json").read_text())["query"]["hybrid"]["queries"]
    assert "neural_sparse" in sub_queries[1] and "match" in sub_queries[0]
