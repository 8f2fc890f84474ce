"""Hybrid fusion reproduces OpenSearch's normalization-processor and score-ranker-processor arithmetic."""
import math

import pytest

from finetune_assets.core.retrieval.fusion import (
    MIN_MAX_FLOOR,
    RRF,
    FusionSetting,
    candidate_settings,
    choose_setting,
    combine,
    fuse,
    fuse_runs,
    normalize,
)


def test_min_max_floors_the_lowest_result_and_gives_a_lone_result_one():
    assert normalize([4.0, 3.0, 2.0], "min_max") == [1.0, 0.5, MIN_MAX_FLOOR]
    assert normalize([7.5], "min_max") == [1.0]
    assert normalize([2.0, 2.0], "min_max") == [1.0, 1.0]


def test_l2_divides_by_the_norm_of_the_subquery_results():
    assert normalize([3.0, 4.0], "l2") == pytest.approx([0.6, 0.8])


def test_z_score_uses_the_sample_deviation_of_the_subquery_results_and_floors_at_the_mean():
    deviation = math.sqrt(((5 - 2.5) ** 2 + (3 - 2.5) ** 2 + 2 * (1 - 2.5) ** 2) / 3)
    assert normalize([5.0, 3.0, 1.0, 1.0], "z_score") == pytest.approx(
        [2.5 / deviation, 0.5 / deviation, MIN_MAX_FLOOR, MIN_MAX_FLOOR])
    # neural-search's equal-to-the-mean branch: a lone result, or any result exactly at the mean, takes the raw maximum
    assert normalize([7.5], "z_score") == [7.5]
    assert normalize([4.0, 3.0, 2.0], "z_score") == [1.0, 4.0, MIN_MAX_FLOOR]


def test_z_score_combines_by_arithmetic_mean_only():
    assert FusionSetting("z_score", "arithmetic_mean", 0.6).since == (3, 0)
    with pytest.raises(ValueError, match="arithmetic_mean only"):
        FusionSetting("z_score", "harmonic_mean", 0.5)
    z_settings = [s for s in candidate_settings() if s.technique == "z_score"]
    assert [s.model_weight for s in z_settings] == [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    assert {s.combination for s in z_settings} == {"arithmetic_mean"}
    assert FusionSetting("min_max").since < FusionSetting("rrf").since < FusionSetting("rrf", model_weight=0.7).since


def test_arithmetic_mean_leaves_a_missing_subquery_out_of_the_weights():
    # A document only BM25 returned keeps its BM25 score: OpenSearch skips the absent sub-query entirely.
    assert combine([0.8, None], (0.3, 0.7), "arithmetic_mean") == pytest.approx(0.8)
    assert combine([0.8, 0.2], (0.3, 0.7), "arithmetic_mean") == pytest.approx(0.3 * 0.8 + 0.7 * 0.2)


def test_geometric_and_harmonic_means_are_weighted():
    assert combine([0.5, 0.2], (0.5, 0.5), "geometric_mean") == pytest.approx(math.sqrt(0.5 * 0.2))
    assert combine([0.5, 0.2], (0.25, 0.75), "harmonic_mean") == pytest.approx(1.0 / (0.25 / 0.5 + 0.75 / 0.2))


def test_fuse_by_hand_min_max_arithmetic():
    bm25 = [("a", 10.0), ("b", 6.0), ("c", 2.0)]
    model = [("c", 0.9), ("b", 0.8), ("d", 0.5)]
    fused = dict(fuse(bm25, model, FusionSetting("min_max", "arithmetic_mean", 0.5)))
    # bm25 normalised: a 1, b 0.5, c 0.001; model: c 1, b 0.75, d 0.001
    assert fused["a"] == pytest.approx(1.0)
    assert fused["b"] == pytest.approx((0.5 + 0.75) / 2)
    assert fused["c"] == pytest.approx((0.001 + 1.0) / 2)
    assert fused["d"] == pytest.approx(0.001)


def test_rrf_sums_reciprocal_ranks():
    fused = dict(fuse([("a", 3.0), ("b", 1.0)], [("b", 0.9), ("c", 0.1)], FusionSetting("rrf")))
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["a"] == pytest.approx(1 / 61)
    assert fused["c"] == pytest.approx(1 / 62)


def test_weighted_rrf_multiplies_each_reciprocal_rank_by_its_subquery_weight():
    bm25, model = [("a", 3.0), ("b", 1.0)], [("b", 0.9), ("c", 0.1)]
    weighted = FusionSetting("rrf", model_weight=0.7)
    fused = dict(fuse(bm25, model, weighted))
    assert fused["a"] == pytest.approx(0.3 / 61)
    assert fused["b"] == pytest.approx(0.3 / 62 + 0.7 / 61)
    assert fused["c"] == pytest.approx(0.7 / 62)
    # equal weights send none: the processor's default weight 1.0 per sub-query, so scores stay unweighted sums
    assert not FusionSetting("rrf").weighted_rrf and weighted.weighted_rrf
    lexical, semantic = {"q": [("x", 2.0), ("y", 1.0)]}, {"q": [("y", 0.9), ("x", 0.1)]}
    assert fuse_runs(lexical, semantic, FusionSetting("rrf", model_weight=0.3))["q"][0] == "x"
    assert fuse_runs(lexical, semantic, FusionSetting("rrf", model_weight=0.7))["q"][0] == "y"


def test_settings_survive_the_report_round_trip():
    for setting in candidate_settings():
        assert FusionSetting.from_dict(setting.to_dict()) == setting
    names = [s.name for s in candidate_settings()]
    assert len(names) == len(set(names))  # every candidate is told apart in the report
    assert "rrf (rank_constant 60), weights bm25 0.3 / model 0.7" in names and "rrf (rank_constant 60)" in names


def test_weights_move_the_ranking():
    bm25 = {"q": [("lexical", 9.0), ("semantic", 1.0)]}
    model = {"q": [("semantic", 0.9), ("lexical", 0.1)]}
    assert fuse_runs(bm25, model, FusionSetting("min_max", "arithmetic_mean", 0.2))["q"][0] == "lexical"
    assert fuse_runs(bm25, model, FusionSetting("min_max", "arithmetic_mean", 0.8))["q"][0] == "semantic"


def test_choose_setting_picks_the_best_and_reports_every_candidate():
    # The model finds the relevant document; BM25 puts a wrong one first: model-heavy settings must win.
    bm25 = {f"q{i}": [("wrong", 9.0), (f"rel{i}", 2.0), ("other", 1.0)] for i in range(5)}
    model = {f"q{i}": [(f"rel{i}", 0.9), ("other", 0.5), ("wrong", 0.1)] for i in range(5)}
    qrels = {f"q{i}": {f"rel{i}": 1} for i in range(5)}
    choice = choose_setting(bm25, model, qrels, rule="synthetic_best")
    assert choice.rule == "synthetic_best" and choice.to_dict()["rule"] == choice.rule
    assert choice.score == pytest.approx(1.0)
    assert fuse_runs(bm25, model, choice.setting)["q0"][0] == "rel0"
    assert len(choice.candidates) == len(candidate_settings())
    assert any(c["ndcg@10"] < 1.0 for c in choice.candidates)


def test_default_wins_a_tie():
    run = {"q": [("a", 1.0)]}
    for rule in ("synthetic_best", "synthetic_best_model_half_or_more"):
        choice = choose_setting(run, run, {"q": {"a": 1}}, rule=rule)
        assert choice.setting == FusionSetting("min_max", "arithmetic_mean", 0.5)


def test_a_rule_can_keep_the_model_at_half_the_weight_or_more():
    # BM25 finds the relevant document and the model does not: the unrestricted best leans to BM25, the
    # default rule may not go below equal weights (or RRF).
    bm25 = {f"q{i}": [(f"rel{i}", 9.0), ("wrong", 2.0), ("other", 1.0)] for i in range(5)}
    model = {f"q{i}": [("wrong", 0.9), ("other", 0.5), (f"rel{i}", 0.45)] for i in range(5)}
    qrels = {f"q{i}": {f"rel{i}": 1} for i in range(5)}
    unrestricted = choose_setting(bm25, model, qrels, rule="synthetic_best").setting
    assert unrestricted.technique != "rrf" and unrestricted.model_weight < 0.5
    chosen = choose_setting(bm25, model, qrels, rule="synthetic_best_model_half_or_more").setting
    assert chosen.technique == "rrf" or chosen.model_weight >= 0.5
    by_default = choose_setting(bm25, model, qrels)  # the default rule: RRF whatever the synthetic figures
    assert by_default.rule == "rrf" and by_default.setting == FusionSetting(RRF)
    assert by_default.score == pytest.approx(next(c["ndcg@10"] for c in by_default.candidates if c["technique"] == RRF))


def test_the_weighted_rrf_rule_ignores_the_synthetic_figures():
    from finetune_assets.core.retrieval.fusion import RRF_MODEL_WEIGHT

    bm25 = {"q1": [("lexical", 9.0), ("semantic", 1.0)]}
    model = {"q1": [("semantic", 0.9), ("lexical", 0.1)]}
    choice = choose_setting(bm25, model, {"q1": {"lexical": 1}}, rule="weighted_rrf")
    assert choice.setting == FusionSetting(RRF, model_weight=RRF_MODEL_WEIGHT) and choice.setting.weighted_rrf
    # BM25-heavy settings score best on these judgements; the rule keeps its model-leaning weights all the same
    assert choice.score < max(c["ndcg@10"] for c in choice.candidates)
    assert choose_setting(bm25, model, {"q1": {"lexical": 1}}).setting == FusionSetting(RRF)  # today's rule


def test_pipeline_bodies_follow_the_documented_processors():
    body = FusionSetting("l2", "harmonic_mean", 0.7).pipeline_body("hybrid")
    processor = body["phase_results_processors"][0]["normalization-processor"]
    assert processor["normalization"] == {"technique": "l2"}
    assert processor["combination"] == {"technique": "harmonic_mean", "parameters": {"weights": [0.3, 0.7]}}
    rrf = FusionSetting("rrf").pipeline_body("hybrid")["phase_results_processors"][0]
    assert rrf == {"score-ranker-processor": {"combination": {"technique": "rrf", "rank_constant": 60}}}
    weighted = FusionSetting("rrf", model_weight=0.6).pipeline_body("hybrid")["phase_results_processors"][0]
    assert weighted == {"score-ranker-processor": {"combination": {
        "technique": "rrf", "rank_constant": 60, "parameters": {"weights": [0.4, 0.6]}}}}


@pytest.mark.parametrize("kwargs, message", [
    ({"technique": "z"}, "fusion technique must be one of"),
    ({"technique": "min_max", "combination": "median"}, "fusion combination must be one of"),
    ({"technique": "min_max", "model_weight": 1.0}, "model_weight must be between 0 and 1"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FusionSetting(**kwargs)


def test_choosing_without_judgements_is_an_error():
    with pytest.raises(ValueError, match="needs judged queries"):
        choose_setting({}, {}, {})


@pytest.fixture(scope="module")
def python_docs():
    from finetune_assets.core.data.demo_corpus import python_docs_documents

    docs = python_docs_documents()[:40]
    queries = {f"q{i}": doc["title"] for i, doc in enumerate(docs[:12])}
    qrels = {f"q{i}": {doc["id"]: 1} for i, doc in enumerate(docs[:12])}
    return docs, queries, qrels


def test_hybrid_rows_fuse_real_bm25_and_dense_runs(python_docs):
    from sentence_transformers import SentenceTransformer

    from finetune_assets.core.offline_models import minilm_path
    from finetune_assets.core.retrieval.evaluation import compare_systems

    docs, queries, qrels = python_docs
    model = SentenceTransformer(str(minilm_path()), device="cpu")
    comparison = compare_systems([d["id"] for d in docs], [d["text"] for d in docs], queries, qrels,
                                 {"base": model}, batch_size=16)
    chosen = comparison.add_hybrid("base", qrels)
    fixed = comparison.add_hybrid("bm25", qrels, setting=FusionSetting("rrf"))  # BM25 with itself: same order
    assert chosen == "hybrid_base" and fixed == "hybrid_bm25"
    info = comparison.hybrid["hybrid_base"]
    assert len(info["choice"]["candidates"]) == len(candidate_settings())
    rrf = next(c["ndcg@10"] for c in info["choice"]["candidates"] if c["technique"] == "rrf")  # the default rule's
    assert info["setting"] == {"technique": "rrf", "rank_constant": 60} and info["choice"]["score"] == pytest.approx(rrf)
    assert comparison.results["hybrid_base"]["ndcg@10"] == pytest.approx(rrf)  # same queries here
    # The row is the chosen setting's fusion of the two scored runs, and it is in the report and the table.
    setting = FusionSetting(info["setting"]["technique"], info["setting"].get("combination", "arithmetic_mean"),
                            info["setting"].get("weights", [0.5, 0.5])[1])
    expected = fuse_runs(comparison.scored_runs["bm25"], comparison.scored_runs["base"], setting)
    assert comparison.runs["hybrid_base"] == expected
    assert comparison.runs["hybrid_bm25"] == {q: docs[:100] for q, docs in comparison.runs["bm25"].items()}
    assert "hybrid_base" in comparison.to_dict()["hybrid"] and "| hybrid_base |" in comparison.markdown()


def test_ndcg_by_group_averages_each_systems_per_query_figures_over_the_group(python_docs):
    from finetune_assets.core.retrieval.evaluation import compare_systems

    docs, queries, qrels = python_docs
    ids = sorted(qrels)
    # "base" returns each query's relevant document first for the first query only, nothing useful for the rest
    run = {q: ([next(iter(qrels[q]))] if q == ids[0] else ["nothing"]) for q in queries}
    comparison = compare_systems([d["id"] for d in docs], [d["text"] for d in docs], queries, qrels, {},
                                 precomputed={"base": (run, None)})
    groups = comparison.ndcg_by_group({"first": ids[:1], "rest": ids[1:], "unjudged": ["no-such-query"]})
    assert set(groups) == {"first", "rest"}  # a group without a judged query is left out
    assert groups["first"] == {"queries": 1, "bm25": pytest.approx(comparison.ndcg_per_query["bm25"][ids[0]], abs=1e-4),
                               "base": 1.0}
    assert groups["rest"]["queries"] == len(ids) - 1 and groups["rest"]["base"] == 0.0


def test_hybrid_rows_need_scored_runs(python_docs):
    from finetune_assets.core.retrieval.evaluation import compare_systems

    docs, queries, qrels = python_docs
    comparison = compare_systems([d["id"] for d in docs], [d["text"] for d in docs], queries, qrels, {},
                                 precomputed={"base": ({q: [docs[0]["id"]] for q in queries}, None)})
    with pytest.raises(ValueError, match="need scored runs of bm25 and base"):
        comparison.add_hybrid("base", qrels)


def test_hybrid_query_puts_bm25_first_and_the_model_subquery_by_type():
    from finetune_assets.core.retrieval.fusion import hybrid_query, lexical_query

    dense = hybrid_query("dense", "m1", text_field="body", vector_field="vec", query_text="wing flutter")
    assert dense["query"]["hybrid"]["queries"] == [
        {"match": {"body": {"query": "wing flutter"}}},
        {"neural": {"vec": {"query_text": "wing flutter", "model_id": "m1", "k": 100}}}]
    sparse = hybrid_query("inference_free", "tok1", vector_field="sparse")["query"]["hybrid"]["queries"][1]
    assert sparse == {"neural_sparse": {"sparse": {"query_text": "{{query_text}}", "model_id": "tok1"}}}
    assert lexical_query(query_text="x") == {"size": 10, "query": {"match": {"text": {"query": "x"}}}}
    with pytest.raises(ValueError, match="model_type must be"):
        hybrid_query("colbert", "m")


def test_selection_rules_pick_from_synthetic_figures():
    from finetune_assets.core.retrieval.fusion import SELECTION_RULES, select

    default = FusionSetting("min_max", "arithmetic_mean", 0.5)
    bm25_heavy = FusionSetting("l2", "arithmetic_mean", 0.2)
    model_heavy = FusionSetting("min_max", "arithmetic_mean", 0.7)
    figures = {default.name: 0.60, bm25_heavy.name: 0.65, model_heavy.name: 0.62, FusionSetting(RRF).name: 0.61}
    picks = {rule: select(figures, rule) for rule in SELECTION_RULES}
    assert picks["synthetic_best"] == bm25_heavy
    assert picks["opensearch_default"] == default
    assert picks["rrf"] == FusionSetting(RRF)
    assert picks["synthetic_best_min_max"] == model_heavy
    assert picks["synthetic_best_model_half_or_more"] == model_heavy
    assert picks["default_unless_synthetic_margin"] == bm25_heavy  # 0.05 over the default, beyond the margin
    figures[default.name] = 0.645
    assert select(figures, "default_unless_synthetic_margin") == default  # within the margin: the default stays
    with pytest.raises(ValueError, match="unknown selection rule"):
        select(figures, "best_on_real_queries")


def test_the_fixed_rules_ignore_the_synthetic_figures():
    from finetune_assets.core.retrieval.fusion import RRF_MODEL_WEIGHT, select

    favour_min_max = {s.name: 1.0 if s.technique == "min_max" else 0.0 for s in candidate_settings()}
    assert select(favour_min_max, "synthetic_best").technique == "min_max"
    assert select(favour_min_max, "rrf") == FusionSetting(RRF)
    assert select(favour_min_max, "weighted_rrf") == FusionSetting(RRF, model_weight=RRF_MODEL_WEIGHT)
    assert select(favour_min_max, "z_score") == FusionSetting("z_score", "arithmetic_mean", 0.5)
