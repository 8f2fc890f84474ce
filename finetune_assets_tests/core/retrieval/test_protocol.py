"""The evaluation protocol: only development collections may inform a choice of settings."""
import json

import pytest

from finetune_assets.core.retrieval.protocol import collection_name, require_development, role


def test_collection_names_and_roles_come_from_the_folder():
    assert collection_name("../shared/ir-data/cacm/") == "cacm"
    assert role("/x/ir-data/Cranfield") == "development"
    assert role("../shared/ir-data/med") == "check" and role("scifact") == "check"


@pytest.mark.parametrize("collection", ["med", "../shared/ir-data/lisa", "scifact"])
def test_choosing_on_a_check_collection_is_refused(collection):
    with pytest.raises(ValueError, match="may read only the development collections"):
        require_development(collection, "the smart-defaults generator")


def test_development_collections_are_allowed():
    assert require_development("../shared/ir-data/cranfield", "teacher_signals") == "cranfield"


def _run(bm25, base, tuned, gain, cpu):
    return {"judged_queries": 30, "documents": 1033, "cpu_minutes": {"pipeline_total": cpu},
            "tuned_minus_base_ndcg@10": {"mean": gain, "ci95": [gain - 0.01, gain + 0.01]},
            "results": {"bm25": {"ndcg@10": bm25}, "base": {"ndcg@10": base}, "tuned": {"ndcg@10": tuned}}}


def test_the_collections_table_averages_seeds_and_marks_check_collections():
    from benchmarks.collections import markdown, summarise

    row = summarise("med", {0: _run(0.6, 0.5, 0.54, 0.04, 10.0), 1: _run(0.6, 0.5, 0.52, 0.02, 12.0)})
    assert row["role"] == "check" and row["seeds"] == [0, 1]
    assert row["ndcg@10_mean"]["tuned"] == pytest.approx(0.53) and row["gain_mean"] == pytest.approx(0.03)
    assert "hybrid_tuned" not in row["ndcg@10_mean"]  # only systems every seed reported
    table = markdown([row])
    assert "| med | check | 30 |" in table and "+0.0400 (+0.0300..+0.0500)" in table and "| 11.0 |" in table
    assert row["delivered"] == {}  # runs from before search_pipeline's delivery was recorded


def test_the_collections_table_shows_what_search_pipeline_delivered_per_seed():
    from benchmarks.collections import markdown, summarise

    runs = {0: _run(0.6, 0.5, 0.54, 0.04, 10.0), 1: _run(0.6, 0.5, 0.52, 0.02, 12.0)}
    runs[0]["delivered"] = {"row": "hybrid_tuned", "ndcg@10": 0.58}
    runs[1]["delivered"] = {"row": "tuned", "ndcg@10": 0.52}
    row = summarise("lisa", runs)
    assert row["delivered"]["ndcg@10_mean"] == pytest.approx(0.55)
    assert "| 0.5500 (hybrid_tuned, tuned) |" in markdown([row])


def test_the_fusion_sweep_refuses_a_check_collection(tmp_path, capsys):
    import json

    from benchmarks.fusion_sweep import main

    bench = tmp_path / "lisa-sparse.json"
    bench.write_text(json.dumps({"collection": "../shared/ir-data/lisa", "work_dir": str(tmp_path),
                                 "settings": {"model_type": "sparse", "base_model": "local:splade-tiny"}}))
    with pytest.raises(SystemExit) as stopped:
        main([str(bench), "--out", str(tmp_path / "sweep.json")])
    assert stopped.value.code == 2 and "'lisa'" in capsys.readouterr().err
    assert not (tmp_path / "sweep.json").exists()


def test_the_pruning_benchmark_refuses_a_check_collection_and_a_dense_run(tmp_path, capsys):
    import json

    from benchmarks.sparse_pruning import main

    for name, model_type, reason in (("med", "sparse", "'med'"), ("cacm", "dense", "a dense run")):
        bench = tmp_path / f"{name}.json"
        bench.write_text(json.dumps({"collection": f"../shared/ir-data/{name}", "work_dir": str(tmp_path),
                                     "settings": {"model_type": model_type, "base_model": ""}}))
        with pytest.raises(SystemExit) as stopped:
            main([str(bench), "--out", str(tmp_path / "pruning.json")])
        assert stopped.value.code == 2 and reason in capsys.readouterr().err
    assert not (tmp_path / "pruning.json").exists()
    with pytest.raises(SystemExit) as stopped:  # reporting a run as delivered still needs a sparse run
        main([str(tmp_path / "cacm.json"), "--as-delivered", "--out", str(tmp_path / "pruning.json")])
    assert stopped.value.code == 2 and "a dense run" in capsys.readouterr().err


def test_the_pruning_table_shows_each_ratio_and_the_change_from_unpruned():
    from benchmarks.sparse_pruning import table

    rows = [{"system": "tuned", "ratio": 0.0, "ndcg@10": 0.38, "recall@100": 0.76, "flops": 13.56,
             "avg_active_dims_document": 182.2},
            {"system": "tuned", "ratio": 0.1, "ndcg@10": 0.3771, "recall@100": 0.7608, "flops": 10.45,
             "avg_active_dims_document": 135.0, "minus_unpruned_ndcg@10": {"mean": -0.0027, "ci95": [-0.0062, 0.0003]}}]
    lines = table([{"collection": "cranfield", "judged_queries": 225, "rows": rows}]).splitlines()
    assert lines[2] == "| cranfield (225) | tuned | 0.0 | 0.3800 | 0.7600 | 182.2 | 13.56 |  |"
    assert lines[3].endswith("| 10.45 | -0.0027 (-0.0062..+0.0003) |")


def test_the_three_way_probe_refuses_a_check_collection_and_fuses_as_opensearch_does(tmp_path, capsys):
    import random

    from benchmarks.three_way_hybrid import main, rrf
    from finetune_assets.core.retrieval.fusion import RRF, FusionSetting, fuse

    report = tmp_path / "med.json"
    report.write_text(json.dumps({"collection": "../shared/ir-data/med", "settings": {"model_type": "dense"},
                                  "work_dir": str(tmp_path)}))
    with pytest.raises(ValueError, match="may read only the development collections"):
        main([str(report), "--out", str(tmp_path / "out.json")])
    rng = random.Random(3)
    docs = [f"d{i}" for i in range(150)]
    first, second = ({"q": [(d, 1.0 - n / 200) for n, d in enumerate(rng.sample(docs, 120))]} for _ in range(2))
    # two sub-queries by RRF at equal weights: the same ranking as the two-list fusion every report uses
    assert rrf([first, second])["q"] == [d for d, _ in fuse(first["q"], second["q"], FusionSetting(RRF))][:100]
    last = first["q"][40][0]  # a document in the middle of the first sub-query's results
    third = {"q": [(last, 1.0)]}  # a third sub-query that returns it first moves it up
    assert rrf([first, second, third])["q"].index(last) < rrf([first, second])["q"].index(last)
    # the rank constant decides between a document one sub-query ranks first and one both rank fifth
    one, other = ({"q": [(d, 1.0 / n) for n, d in enumerate(ids, start=1)]} for ids in
                  (["a", "x1", "x2", "x3", "b"], ["x4", "x5", "x6", "x7", "b"]))
    assert rrf([one, other], rank_constant=1)["q"].index("a") < rrf([one, other], rank_constant=1)["q"].index("b")
    assert rrf([one, other])["q"].index("b") < rrf([one, other])["q"].index("a")
    with pytest.raises(SystemExit):
        main([str(report), "--out", str(tmp_path / "out.json"), "--rank-constants", "0"])


def _choice_run(tmp_path, collection: str, synthetic: dict | None, real: dict, *, in_json: bool = True):
    """A benchmark JSON for benchmarks.search_choice; without `in_json` the synthetic figures sit in its work dir's
    evaluation report, published as the pipeline publishes it (none at all when `synthetic` is None)."""
    import json

    from finetune_assets.resources.storage import ArtifactStorage

    work = tmp_path / f"work-{collection}"
    bench = {"collection": f"../shared/ir-data/{collection}", "judged_queries": 50, "work_dir": str(work),
             "settings": {"model_type": "dense"}, "results": {row: {"ndcg@10": v} for row, v in real.items()}}
    if synthetic is not None and in_json:
        bench["delivered"] = {"held_out_synthetic": {"queries": 80, "ndcg@10": synthetic}}
    elif synthetic is not None:
        storage = ArtifactStorage(root=str(work / "storage"))
        version = storage.artifact_dir(collection, "evaluation_report")
        (version / "report.json").write_text(json.dumps(
            {"judged_queries": 85, "results": {row: {"ndcg@10": v} for row, v in synthetic.items()}}))
        storage.publish(collection, "evaluation_report", version)
    path = tmp_path / f"{collection}.json"
    path.write_text(json.dumps(bench))
    return path


def test_the_search_choice_scores_todays_rule_and_margin_rules_on_real_queries(tmp_path):
    import json

    from benchmarks.search_choice import main

    # Synthetic queries lead the hybrid query by more where the real ones want the model alone, as on Cranfield.
    first = _choice_run(tmp_path, "cranfield", {"bm25": 0.63, "tuned": 0.57, "hybrid_tuned": 0.65},
                        {"bm25": 0.35, "tuned": 0.41, "hybrid_tuned": 0.40}, in_json=False)
    second = _choice_run(tmp_path, "cacm", {"bm25": 0.62, "tuned": 0.60, "hybrid_tuned": 0.64},
                         {"bm25": 0.50, "tuned": 0.51, "hybrid_tuned": 0.57})
    assert main([str(first), str(second), "--out", str(tmp_path / "choice.json")]) == 0
    runs = json.loads((tmp_path / "choice.json").read_text())["runs"]
    assert [run["held_out_queries"] for run in runs] == [85, 80]
    cranfield, cacm = (run["rules"] for run in runs)
    assert cranfield["today"] == {"search": "hybrid", "real": 0.40} and cacm["today"]["search"] == "hybrid"
    # A lead of 0.08 on Cranfield and 0.04 on CACM: a margin of 0.06 turns each to the wrong search.
    assert cranfield["hybrid if it leads the model by >= 0.06"] == {"search": "hybrid", "real": 0.40}
    assert cacm["hybrid if it leads the model by >= 0.06"] == {"search": "model", "real": 0.51}
    assert cranfield["hybrid if it leads the model by >= 0.1"]["search"] == "model"
    assert cacm["always bm25"] == {"search": "bm25", "real": 0.50}
    table = (tmp_path / "choice.md").read_text()
    assert "| today | hybrid 0.4000 | hybrid 0.5700 | 0.4850 | 0.0050 |" in table


def test_the_search_choice_refuses_a_check_collection(tmp_path, capsys):
    from benchmarks.search_choice import main

    run = _choice_run(tmp_path, "med", {"bm25": 0.6, "tuned": 0.6, "hybrid_tuned": 0.6},
                      {"bm25": 0.7, "tuned": 0.8, "hybrid_tuned": 0.8})
    with pytest.raises(SystemExit) as stopped:
        main([str(run), "--out", str(tmp_path / "choice.json")])
    assert stopped.value.code == 2 and "'med'" in capsys.readouterr().err
    assert not (tmp_path / "choice.json").exists()


def test_the_search_choice_names_a_run_without_held_out_figures(tmp_path, capsys):
    from benchmarks.search_choice import main

    run = _choice_run(tmp_path, "cacm", None, {"bm25": 0.5, "tuned": 0.5, "hybrid_tuned": 0.5})
    with pytest.raises(SystemExit) as stopped:
        main([str(run), "--out", str(tmp_path / "choice.json")])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and "../shared/ir-data/cacm: the benchmark JSON has no held-out synthetic" in error
    assert not (tmp_path / "choice.json").exists()


def _sweep_run(collection: str, rrf: dict, z_score: dict) -> dict:
    """A fusion sweep's figures for one run: BM25 + each system query by query, by RRF and by the z_score rule."""
    from finetune_assets.core.retrieval.fusion import SELECTION_RULES

    def rules(system: str) -> dict:
        by_rule = {rule: rrf for rule in SELECTION_RULES} | {"z_score": z_score}
        return {rule: {"chosen": rule, "real": sum(v.values()) / len(v), "per_query": v}
                for rule, v in by_rule.items()}

    return {"collection": collection, "model_type": "sparse", "judged_queries": len(rrf),
            "single": {"bm25": 0.3, "base": 0.3, "tuned": 0.3}, "rule": "rrf",
            "hybrid_tuned_minus": {}, "systems": {system: {"rules": rules(system), "candidates": [],
                                                           "best_on_real": {"setting": "rrf", "real": 0.5}}
                                                  for system in ("base", "tuned")}}


def test_the_fusion_sweep_pools_seeds_query_by_query_before_the_interval():
    from benchmarks.fusion_sweep import markdown, rule_minus_rrf

    # Two seeds on one collection: z_score is +0.2 on q1 in the first and -0.1 on q1 in the second, so +0.05 a query
    # on average over q1 and q2; a second collection is kept apart.
    first = _sweep_run("cranfield", {"q1": 0.5, "q2": 0.5}, {"q1": 0.7, "q2": 0.5})
    second = _sweep_run("cranfield", {"q1": 0.5, "q2": 0.5}, {"q1": 0.4, "q2": 0.5})
    other = _sweep_run("cacm", {"q9": 0.2}, {"q9": 0.1})
    mean, low, high = rule_minus_rrf([first, second], "tuned", "z_score")
    assert mean == pytest.approx(0.025) and low <= mean <= high
    assert rule_minus_rrf([other], "tuned", "z_score")[0] == pytest.approx(-0.1)
    assert rule_minus_rrf([first, second], "tuned", "rrf") == (0.0, 0.0, 0.0)
    table = markdown([first, second, other])
    assert "| cranfield sparse | 2 | BM25 + tuned | " in table and "| cacm sparse | 1 | BM25 + tuned | " in table
    assert "+0.0250 (" in table and "-0.1000 (-0.1000..-0.1000)" in table
