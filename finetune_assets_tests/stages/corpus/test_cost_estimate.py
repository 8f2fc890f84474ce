"""cost_estimate in a real Dagster run (it stops the run before Bedrock when over budget) and the estimate CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from finetune_assets.core.cost.smart_defaults import batch_kl_lookup
from finetune_assets.core.jsonl import read_json
from finetune_assets_tests.conftest import write_tiny_corpus

INDEX = "tiny-cost"
SELECTION = ["raw_corpus", "cost_estimate", "bedrock_batch_outputs"]


def run(tmp_path, selection, cost_config: dict):
    from finetune_assets.definitions import all_assets, defs
    from finetune_assets.resources.storage import ArtifactStorage

    write_tiny_corpus(tmp_path / "corpora" / INDEX)
    resources = {**defs.resources, "storage": ArtifactStorage(root=str(tmp_path))}
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("index", [INDEX])
        return materialize(all_assets, selection=selection, partition_key=INDEX, resources=resources,
                           instance=instance, raise_on_error=False,
                           run_config={"ops": {"raw_corpus": {"config": {"max_documents": 0}},
                                               "cost_estimate": {"config": cost_config}}})


def test_over_budget_stops_the_run_before_bedrock(tmp_path):
    result = run(tmp_path, SELECTION, {"max_cost_usd": 0.0001, "enforce_for": ["bedrock", "training"]})
    assert not result.success
    succeeded = {event.step_key for event in result.get_step_success_events()}
    assert succeeded == {"raw_corpus"}  # neither the estimate nor anything downstream of it
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "cost_estimate"
    message = failure.step_failure_data.user_failure_data.description
    assert "exceeds max_cost_usd 0.0001 USD" in message and "biggest line item: SageMaker training" in message
    # The failed step published nothing; its estimate is in the version folder the message names.
    assert not (tmp_path / "artifacts" / INDEX / "cost_estimate" / "current").exists()
    unpublished = message.rsplit("Estimate: ", 1)[1]
    assert unpublished.startswith(str(tmp_path / "artifacts" / INDEX / "cost_estimate"))
    estimate = read_json(Path(unpublished).with_name("estimate.json"))
    assert estimate["exceeds_max_cost"] is True and estimate["enforced_for"] == ["bedrock", "training"]
    assert f"estimated AWS spend {estimate['enforced_usd']:,.2f} USD (bedrock + training)" in message
    assert not (tmp_path / "artifacts" / INDEX / "bedrock_batch_outputs").exists()


def test_a_sample_too_large_for_the_free_memory_stops_the_run_before_bedrock(tmp_path, monkeypatch):
    import importlib

    stage = importlib.import_module("finetune_assets.stages.corpus.cost_estimate")  # the module, not the asset
    monkeypatch.setattr(stage, "free_memory_mib", lambda: 512.0)  # this machine cannot shrink; its report can
    result = run(tmp_path, SELECTION, {})
    assert not result.success
    assert {event.step_key for event in result.get_step_success_events()} == {"raw_corpus"}
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.user_failure_data.description
    assert failure.step_key == "cost_estimate" and "0.5 GiB free" in message and "Nothing was run" in message
    assert "larger machine" in message  # the stages' own memory does not fit, whatever the sample
    assert not (tmp_path / "artifacts" / INDEX / "bedrock_batch_outputs").exists()


def test_local_backends_show_the_aws_estimate_without_enforcing_it(tmp_path):
    result = run(tmp_path, ["raw_corpus", "cost_estimate"], {"max_cost_usd": 0.0001})  # enforce_for: auto
    assert result.success
    metadata = result.asset_materializations_for_node("cost_estimate")[0].metadata
    assert metadata["total_usd"].value > 0 and metadata["enforced_usd"].value == 0
    assert metadata["bedrock_mode"].value == "on_demand"  # ~25 documents: below Bedrock's batch minimum of 100
    sampled = result.asset_materializations_for_node("raw_corpus")[0].metadata["documents_sampled"].value
    assert metadata["bedrock_records"].value == sampled
    markdown = (tmp_path / "artifacts" / INDEX / "cost_estimate" / "current" / "estimate.md").read_text()
    assert markdown.startswith("### What the AWS path would cost") and "not enforced" in markdown
    assert "(on-demand)" in markdown and markdown == metadata["estimate"].value
    # The memory check: the peak of the stages that run here, for this sample, against what is free.
    assert 0 < metadata["peak_memory_gib"].value < metadata["free_memory_gib"].value
    assert f"GiB at the peak ({metadata['peak_memory_stage'].value}) for {sampled} sampled documents" in markdown
    # The training length is shown before anything trains: a tiny sample's rows run out before the table's steps.
    table_steps = batch_kl_lookup("dense").max_steps
    assert metadata["training_steps_set_by"].value == "rows" and 0 < metadata["training_steps"].value < table_steps
    assert f"training: {metadata['training_steps'].value} steps of 32 rows, set by the epochs" in markdown


def test_unknown_cost_group_is_refused(tmp_path):
    result = run(tmp_path, ["raw_corpus", "cost_estimate"], {"enforce_for": ["sagemaker"]})
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "unknown cost group 'sagemaker'" in failure.step_failure_data.error.to_string()


def estimate_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finetune_assets.cli", "estimate", *args],
                          capture_output=True, text=True, timeout=300, check=False)


def test_cli_prints_the_estimate_and_the_batch_plan(tmp_path):
    corpus, docs = write_tiny_corpus(tmp_path / "corpus")
    completed = estimate_cli(str(corpus), "--instance-type", "ml.g6.xlarge", "--json", str(tmp_path / "e.json"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = completed.stdout
    assert "What the AWS path would cost" in out and "SageMaker training ml.g6.xlarge" in out
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["documents"] >= len(docs) and saved["total_usd"] > 0  # the corpus reader may keep title-only records
    assert f"Bedrock on_demand: {saved['documents']} records in 0 batch job(s)" in out
    assert saved["bedrock_batch_plan"]["mode"] == "on_demand"
    assert f"**{saved['total_usd']:,.2f}**" in out
    assert f"for {saved['documents']} sampled documents;" in out and "GiB free" in out  # the memory check


@pytest.mark.parametrize("args, expected", [
    (["--bedrock-model", "mistral.mistral-large-2402-v1:0"], "mistral.mistral-large-2402-v1:0"),
    (["--instance-type", "ml.z1.tiny"], "ml.z1.tiny"),
])
def test_cli_names_what_is_missing_from_the_price_table(tmp_path, args, expected):
    corpus, _ = write_tiny_corpus(tmp_path / "corpus")
    completed = estimate_cli(str(corpus), *args)
    assert completed.returncode == 2
    assert expected in completed.stderr and "prices.toml" in completed.stderr


def test_cli_names_a_missing_corpus(tmp_path):
    completed = estimate_cli(str(tmp_path / "nowhere"))
    assert completed.returncode == 2 and "nowhere" in completed.stderr


def test_a_training_step_too_large_for_the_free_memory_is_named_before_anything_trains(tmp_path, monkeypatch):
    import importlib

    stage = importlib.import_module("finetune_assets.stages.corpus.cost_estimate")
    monkeypatch.setattr(stage, "free_memory_mib", lambda: 7168.0)  # the sample fits; the dense default step does not
    result = run(tmp_path, ["raw_corpus", "cost_estimate"], {})
    assert result.success  # a warning: shorter documents than the measured paragraphs take less
    markdown = result.asset_materializations_for_node("cost_estimate")[0].metadata["estimate"].value
    assert "trained_model's training step of local:bge-small-en took about 7.1 GiB" in markdown
    assert "set base_model local:all-MiniLM-L6-v2 (at most about 5.6 GiB" in markdown
