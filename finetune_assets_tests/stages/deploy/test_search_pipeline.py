"""Which search the deploy stage delivers, from the held-out figures and the registration."""
import pytest

from finetune_assets.core.retrieval.fusion import WITHOUT_RRF, FusionSetting
from finetune_assets.stages.deploy.search_pipeline import (
    choose_search,
    how_to,
    ingest_body,
    report_row,
    setting_for_version,
)


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


def test_a_failed_gate_with_the_base_model_registered_chooses_among_the_base_searches():
    figures = {"bm25": 0.55, "base": 0.60, "hybrid_base": 0.70, "tuned": 0.40, "hybrid_tuned": 0.90}
    held_out = {"judged_queries": 12, "results": {row: {"ndcg@10": value} for row, value in figures.items()}}
    chosen, system, reason = choose_search(held_out, {"model_id": "m2", "system": "base", "fallback": True})
    assert (chosen, system) == ("hybrid", "base") and reason.startswith("fallback: ") and "hybrid 0.7000" in reason
    held_out["results"]["bm25"]["ndcg@10"] = 0.75
    assert choose_search(held_out, {"model_id": "m2", "system": "base", "fallback": True})[0] == "bm25"


def test_the_setting_forces_a_search():
    assert choose_search(report(0.9, 0.5, 0.5), {"model_id": "m"}, wanted="hybrid")[0] == "hybrid"


def test_report_entries_become_settings():
    entry = {"setting": {"technique": "l2", "combination": "harmonic_mean", "weights": [0.3, 0.7]}}
    assert FusionSetting.from_dict(entry["setting"]) == FusionSetting("l2", "harmonic_mean", 0.7)
    assert FusionSetting.from_dict({"technique": "rrf", "rank_constant": 60}) == FusionSetting("rrf")
    weighted = {"setting": {"technique": "rrf", "rank_constant": 60, "weights": [0.4, 0.6]}}
    assert FusionSetting.from_dict(weighted["setting"]) == FusionSetting("rrf", model_weight=0.6)


@pytest.mark.parametrize("version, kept", [((3, 1, 0), True), ((3, 3, 0), True), ((3, 0, 0), False),
                                           ((2, 19, 1), False), (None, False)])
def test_weighted_rrf_is_kept_only_where_the_cluster_applies_weights(version, kept):
    weighted = FusionSetting("rrf", model_weight=0.7)
    setting, warning = setting_for_version(weighted, version)
    assert (setting == weighted) == kept and (warning == "") == kept
    if not kept:
        assert setting == FusionSetting("rrf") and "applies weights from 3.1" in warning
    for other in (FusionSetting("rrf"), FusionSetting("min_max", "arithmetic_mean", 0.7)):
        assert setting_for_version(other, version) == (other, "")


def test_weighted_rrf_before_2_19_steps_down_twice_to_the_normalization_processor():
    setting, warning = setting_for_version(FusionSetting("rrf", model_weight=0.7), (2, 17, 1))
    assert setting == WITHOUT_RRF
    assert "applies weights from 3.1" in warning and "arrived in 2.19" in warning and "2.17.1" in warning


@pytest.mark.parametrize("version, kept", [((3, 0, 0), True), ((3, 1, 0), True), ((2, 19, 1), False),
                                           (None, True)])
def test_z_score_becomes_min_max_on_a_cluster_that_would_refuse_it(version, kept):
    z_score = FusionSetting("z_score", "arithmetic_mean", 0.7)
    setting, warning = setting_for_version(z_score, version)
    assert (setting == z_score) == kept and (warning == "") == kept
    if not kept:  # an unreported version keeps it: the cluster's refusal is loud, unlike ignored RRF weights
        assert setting == FusionSetting("min_max", "arithmetic_mean", 0.7) and "z_score from 3.0" in warning


@pytest.mark.parametrize("version, kept", [((2, 19, 0), True), ((3, 1, 0), True), ((2, 17, 1), False), (None, True)])
def test_rrf_becomes_the_normalization_processor_before_2_19(version, kept):
    setting, warning = setting_for_version(FusionSetting("rrf"), version)
    assert (setting == FusionSetting("rrf")) == kept and (warning == "") == kept
    if not kept:
        assert setting == WITHOUT_RRF and "arrived in 2.19" in warning and "2.17.1" in warning
    assert setting_for_version(FusionSetting("min_max", "arithmetic_mean", 0.7), (2, 17, 1))[1] == ""


def test_instructions_say_which_settings_need_opensearch_3():
    assert "OpenSearch 3.1+" in how_to("p1", "hybrid", "docs", setting=FusionSetting("rrf", model_weight=0.6))
    assert "OpenSearch 3.0+" in how_to("p1", "hybrid", "docs", setting=FusionSetting("z_score"))
    for plain in (None, FusionSetting("rrf"), FusionSetting("l2", "geometric_mean", 0.3)):
        assert "OpenSearch 3" not in how_to("p1", "hybrid", "docs", setting=plain)


def test_instructions_name_the_pipeline_only_when_there_is_one():
    assert "PUT /_search/pipeline/p1" in how_to("p1", "hybrid", "docs")
    assert "no search pipeline is needed" in how_to("p1", "bm25", "docs")


def test_the_ingest_pipeline_prunes_sparse_documents_as_they_were_measured():
    sparse = ingest_body("sparse", "m1", "docs", text_field="body", vector_field="body_sparse", prune_ratio=0.1)
    assert sparse["processors"] == [{"sparse_encoding": {"model_id": "m1", "field_map": {"body": "body_sparse"},
                                                         "prune_type": "max_ratio", "prune_ratio": 0.1}}]
    # inference_free's documents go through its SPARSE_ENCODING model too; a dense model gets text_embedding
    assert "sparse_encoding" in ingest_body("inference_free", "m2", "docs", prune_ratio=0.1)["processors"][0]
    dense = ingest_body("dense", "m3", "docs", vector_field="embedding")
    assert dense["processors"] == [{"text_embedding": {"model_id": "m3", "field_map": {"text": "embedding"}}}]
    assert "prune" not in str(ingest_body("sparse", "m1", "docs", prune_ratio=0.0))
    with pytest.raises(ValueError, match="sparse models only"):
        ingest_body("dense", "m3", "docs", prune_ratio=0.1)
    guide = how_to("p1", "model", "docs", "sparse", "sparse", 0.1)
    assert "PUT /_ingest/pipeline/p1-ingest" in guide and "rank_features" in guide and "0.1 of its largest" in guide
    assert "knn_vector" in how_to("p1", "hybrid", "docs") and "prune" not in how_to("p1", "hybrid", "docs")


@pytest.mark.parametrize(("mode", "system", "row"), [("hybrid", "tuned", "hybrid_tuned"), ("hybrid", "base", "hybrid_base"),
                                                     ("model", "tuned", "tuned"), ("bm25", "", "bm25")])
def test_each_search_mode_is_scored_by_its_report_row(mode, system, row):
    assert report_row(mode, system) == row
