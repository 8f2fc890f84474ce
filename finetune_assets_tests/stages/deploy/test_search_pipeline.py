"""Which search the deploy stage delivers, from the held-out figures and the registration."""
import pytest

from finetune_assets.core.retrieval.fusion import FusionSetting
from finetune_assets.stages.deploy.search_pipeline import choose_search, fusion_setting, how_to


def report(bm25, tuned, hybrid_tuned):
    return {"judged_queries": 40, "results": {"bm25": {"ndcg@10": bm25}, "tuned": {"ndcg@10": tuned},
                                              "hybrid_tuned": {"ndcg@10": hybrid_tuned}}}


@pytest.mark.parametrize("figures, mode", [
    ((0.50, 0.60, 0.70), "hybrid"),
    ((0.50, 0.70, 0.60), "model"),
    ((0.80, 0.70, 0.75), "bm25"),
    ((0.50, 0.70, 0.70), "hybrid"),  # a tie prefers the hybrid query
])
def test_the_best_held_out_search_is_delivered(figures, mode):
    chosen, system, reason = choose_search(report(*figures), {"model_id": "m1", "system": "tuned"})
    assert (chosen, system) == (mode, "tuned") and "40 queries" in reason


def test_a_failed_gate_always_gives_bm25_and_says_fallback():
    chosen, _, reason = choose_search(report(0.5, 0.9, 0.95), {"model_id": None, "fallback": True,
                                                              "note": "gate failed"}, wanted="hybrid")
    assert chosen == "bm25" and reason.startswith("fallback: gate failed")


def test_the_setting_forces_a_search():
    assert choose_search(report(0.9, 0.5, 0.5), {"model_id": "m"}, wanted="hybrid")[0] == "hybrid"


def test_report_entries_become_settings():
    entry = {"setting": {"technique": "l2", "combination": "harmonic_mean", "weights": [0.3, 0.7]}}
    assert fusion_setting(entry) == FusionSetting("l2", "harmonic_mean", 0.7)
    assert fusion_setting({"setting": {"technique": "rrf", "rank_constant": 60}}) == FusionSetting("rrf")


def test_instructions_name_the_pipeline_only_when_there_is_one():
    assert "PUT /_search/pipeline/p1" in how_to("p1", "hybrid", "docs")
    assert "no search pipeline is needed" in how_to("p1", "bm25", "docs")
