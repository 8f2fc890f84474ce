"""The training entry point (`python -m finetune_assets.training`) with model_type sparse and inference_free,
run as a subprocess: standalone, and under Dagster Pipes (the way the trained_model asset runs it).

No `from __future__ import annotations`: Dagster reads the asset's context annotation at definition time."""
import json
import os
import sys
from pathlib import Path

from dagster import AssetExecutionContext, PipesSubprocessClient, asset, materialize

from finetune_assets.core.jsonl import write_json, write_jsonl
from finetune_assets_tests.unit.test_sparse_training import tiny_rows

COMMAND = [sys.executable, "-m", "finetune_assets.training"]
ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def inputs(tmp_path: Path, model_type: str) -> list[str]:
    write_jsonl(tmp_path / "train" / "train.jsonl", tiny_rows(negatives=True))
    write_json(tmp_path / "hp.json", {"model_type": model_type, "batch_size": "8", "max_seq_length": "32",
                                      "num_negatives": "1", "logging_steps": "1"})
    return ["--train-dir", str(tmp_path / "train"), "--model-dir", str(tmp_path / "model"),
            "--hyperparameters", str(tmp_path / "hp.json")]


def test_standalone_sparse_run_writes_a_splade_model(tmp_path):
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")} | ENV
    done = subprocess.run([*COMMAND, *inputs(tmp_path, "sparse")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sparse model; FLOPS regularisers: query 5e-05, document 3e-05" in done.stdout
    summary = json.loads(done.stderr.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["rows"] == 16 and summary["model_type"] == "sparse"
    assert summary["hyperparameters"]["base_model"] == "local:splade-tiny"
    log = json.loads((tmp_path / "model" / "training_log.json").read_text())
    assert [entry["step"] for entry in log["loss_history"]] == [1, 2]
    modules = json.loads((tmp_path / "model" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "SpladePooling"]


def test_inference_free_run_reports_through_dagster_pipes(tmp_path):
    arguments = inputs(tmp_path, "inference_free")

    @asset
    def inference_free_model(context: AssetExecutionContext, pipes: PipesSubprocessClient):
        return pipes.run(command=[*COMMAND, *arguments], context=context, env=ENV).get_materialize_result()

    result = materialize([inference_free_model], resources={"pipes": PipesSubprocessClient()})
    assert result.success
    [materialization] = result.asset_materializations_for_node("inference_free_model")
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    assert metadata["steps"] == 2 and metadata["training_rows"] == 16
    assert metadata["final_loss"] > 0 and metadata["samples_per_second"] > 0
    assert (metadata["device"], metadata["precision"]) == ("cpu", "fp32")
    router = json.loads((tmp_path / "model" / "router_config.json").read_text())
    assert router["structure"] == {"query": ["query_0_SparseStaticEmbedding"],
                                   "document": ["document_0_Transformer", "document_1_SpladePooling"]}
