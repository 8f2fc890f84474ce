"""First test: the whole code location loads, with every asset, check, job and resource."""
from dagster import AssetKey

from finetune_assets.definitions import defs
from finetune_assets.partitions import index_partitions

STAGES = ["raw_corpus", "bedrock_batch_outputs", "training_pairs", "mined_negatives", "trained_model",
          "evaluation_report", "model_package", "registered_model_id"]


def test_definitions_load_with_lineage():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert set(STAGES) <= keys
    for upstream, downstream in zip(STAGES, STAGES[1:]):
        if downstream in ("evaluation_report", "registered_model_id"):
            continue  # they depend on several stages, checked below
        assert AssetKey(upstream) in graph.get(AssetKey(downstream)).parent_keys
    assert AssetKey("trained_model") in graph.get(AssetKey("evaluation_report")).parent_keys
    assert {AssetKey("model_package"), AssetKey("evaluation_report")} <= graph.get(AssetKey("registered_model_id")).parent_keys
    for key in STAGES:
        assert graph.get(AssetKey(key)).partitions_def == index_partitions


def test_quality_gate_is_blocking_and_job_exists():
    check_specs = {spec.name: spec for spec in defs.resolve_asset_graph().asset_check_keys}
    assert "tuned_not_worse_than_base" in check_specs
    gate = next(c for c in defs.asset_checks if "tuned_not_worse_than_base" in {k.name for k in c.check_keys})
    assert all(spec.blocking for spec in gate.check_specs)
    assert defs.resolve_job_def("finetune").partitions_def == index_partitions
