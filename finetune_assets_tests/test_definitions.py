"""First test: the whole code location loads, with every asset, check, job and resource."""
from dagster import AssetKey

from finetune_assets.definitions import defs
from finetune_assets.partitions import index_partitions

STAGES = ["raw_corpus", "cost_estimate", "bedrock_batch_outputs", "training_pairs", "mined_negatives", "trained_model",
          "evaluation_report", "model_package", "model_endpoint", "registered_model_id", "search_pipeline"]

LINEAGE = {
    "raw_corpus": [],
    "cost_estimate": ["raw_corpus"],
    "bedrock_batch_outputs": ["raw_corpus", "cost_estimate"],
    "training_pairs": ["raw_corpus", "bedrock_batch_outputs"],
    "mined_negatives": ["raw_corpus", "training_pairs"],
    "trained_model": ["mined_negatives"],
    "evaluation_report": ["raw_corpus", "training_pairs", "mined_negatives", "trained_model"],
    "model_package": ["trained_model", "evaluation_report", "raw_corpus"],
    "model_endpoint": ["trained_model", "evaluation_report", "raw_corpus"],
    "registered_model_id": ["model_package", "model_endpoint", "evaluation_report"],
    "search_pipeline": ["evaluation_report", "registered_model_id"],
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
    # Not blocking: a failed gate must still let the deploy stage deliver its stated fallback.
    assert not any(spec.blocking for spec in gate.check_specs)
    assert defs.resolve_job_def("finetune").partitions_def == index_partitions


def _load_in_subprocess(mode: str, probe: str = "", **variables: str):
    import subprocess
    import sys

    probe = "from finetune_assets.definitions import defs; r = defs.resources; " + (probe or (
        "print(r['query_generator'].backend, r['sagemaker_training'].default_backend, "
        "r['sagemaker_endpoint'].default_deployment)"))
    env = {**__import__("os").environ, "FINETUNE_MODE": mode, **variables}
    for name in ("FINETUNE_QUERY_GENERATOR", "FINETUNE_MODEL_TYPE", "FINETUNE_BASE_MODEL"):
        if name not in variables:
            env.pop(name, None)
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)


def test_finetune_mode_switches_every_backend_default():
    assert _load_in_subprocess("aws").stdout.split() == ["bedrock", "sagemaker", "serverless"]
    assert _load_in_subprocess("local").stdout.split() == ["smollm2", "local", "none"]
    wrong = _load_in_subprocess("cloud")
    assert wrong.returncode != 0 and "FINETUNE_MODE must be 'local' or 'aws', not 'cloud'" in wrong.stderr


def test_the_base_model_can_be_chosen_by_environment_variable():
    probe = "print(r['base_model'].model_type, r['base_model'].model_name)"
    assert _load_in_subprocess("local", probe).stdout.split() == ["dense", "local:bge-small-en"]
    chosen = _load_in_subprocess("local", probe, FINETUNE_BASE_MODEL="local:all-MiniLM-L6-v2")
    assert chosen.stdout.split() == ["dense", "local:all-MiniLM-L6-v2"]
