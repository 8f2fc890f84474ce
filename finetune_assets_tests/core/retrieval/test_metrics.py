import math

import pytest

from finetune_assets.core.retrieval.metrics import evaluate_run, per_query


def test_metrics_match_hand_computed_values():
    run = {"q1": ["d3", "d1", "d2"], "q2": ["d9", "d8"]}
    qrels = {"q1": {"d1": 1, "d2": 2}, "q2": {"d7": 1}}
    scores = evaluate_run(run, qrels, ["ndcg@10", "mrr@10", "map@100", "recall@1", "recall@5", "precision@1", "precision@5"])
    dcg = 1 / math.log2(3) + 3 / math.log2(4)
    idcg = 3 / math.log2(2) + 1 / math.log2(3)
    assert scores["ndcg@10"] == pytest.approx((dcg / idcg + 0) / 2)
    assert scores["mrr@10"] == pytest.approx((1 / 2 + 0) / 2)
    assert scores["map@100"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 0) / 2)
    assert scores["recall@1"] == 0
    assert scores["recall@5"] == pytest.approx((1 + 0) / 2)
    assert scores["precision@1"] == 0
    assert scores["precision@5"] == pytest.approx((2 / 5 + 0) / 2)


def test_missing_query_in_run_scores_zero_and_unjudged_queries_are_ignored():
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 0}}
    scores = evaluate_run({"q1": ["d1"]}, qrels, ["ndcg@10"])
    assert scores["ndcg@10"] == pytest.approx(0.5)
    assert per_query({"q1": ["d1"]}, qrels) == {"q1": 1.0, "q2": 0.0}


def test_perfect_ranking_is_one_and_errors_are_clear():
    assert evaluate_run({"q": ["a", "b"]}, {"q": {"a": 2, "b": 1}}, ["ndcg@10"])["ndcg@10"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no query has a relevant document"):
        evaluate_run({}, {"q": {"a": 0}})
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_run({"q": ["a"]}, {"q": {"a": 1}}, ["bpref@10"])
