"""First test: the whole code location loads, with every asset, check, job and resource."""
from dagster import AssetKey

from finetune_assets.definitions import defs
from finetune_assets.partitions import index_partitions

STAGES = ["raw_corpus", "bedrock_batch_outputs", "training_pairs", "mined_negatives", "trained_model",
          "evaluation_report", "model_package", "registered_model_id"]

LINEAGE = {
    "raw_corpus": [],
    "bedrock_batch_outputs": ["raw_corpus"],
    "training_pairs": ["raw_corpus", "bedrock_batch_outputs"],
    "mined_negatives": ["raw_corpus", "training_pairs"],
    "trained_model": ["mined_negatives"],
    "evaluation_report": ["raw_corpus", "training_pairs", "trained_model"],
    "model_package": ["trained_model"],
    "registered_model_id": ["model_package", "evaluation_report"],
}


def test_definitions_load_with_lineage():
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert set(STAGES) <= keys
    for downstream, upstreams in LINEAGE.items():
        assert graph.get(AssetKey(downstream)).parent_keys == {AssetKey(u) for u in upstreams}, downstream
    for key in STAGES:
        assert graph.get(AssetKey(key)).partitions_def == index_partitions


def test_quality_gate_is_blocking_and_job_exists():
    check_names = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert {"tuned_not_worse_than_base", "few_records_quarantined", "held_out_documents_unseen"} <= check_names
    gate = next(c for c in defs.asset_checks if "tuned_not_worse_than_base" in {k.name for k in c.check_keys})
    assert all(spec.blocking for spec in gate.check_specs)
    assert defs.resolve_job_def("finetune").partitions_def == index_partitions
