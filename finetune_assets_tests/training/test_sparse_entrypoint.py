"""The training entry point (`python -m finetune_assets.training`) with model_type sparse and inference_free,
run as a subprocess: standalone, and under Dagster Pipes (the way the trained_model asset runs it).

No `from __future__ import annotations`: Dagster reads the asset's context annotation at definition time."""
import json
import os
import sys
from pathlib import Path

import torch
from dagster import AssetExecutionContext, PipesSubprocessClient, asset, materialize

from finetune_assets.core.jsonl import write_json, write_jsonl
from finetune_assets_tests.core.training.test_sparse_training import tiny_rows

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


def test_a_soup_of_two_seeds_saves_the_average_of_the_two_models(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from finetune_assets.training.entrypoint import main

    for name in [n for n in os.environ if n.startswith("DAGSTER_PIPES")]:
        monkeypatch.delenv(name)
    arguments = inputs(tmp_path, "sparse")
    hyperparameters = json.loads((tmp_path / "hp.json").read_text())
    folders = {}
    for name, extra in {"seed0": {"seed": "0"}, "seed1": {"seed": "1"}, "soup": {"soup_size": "2"}}.items():
        write_json(tmp_path / f"{name}.json", {**hyperparameters, **extra})
        folders[name] = tmp_path / name
        assert main([*arguments[:2], "--model-dir", str(folders[name]),
                     "--hyperparameters", str(tmp_path / f"{name}.json")]) == 0
    weights = {name: load_file(str(folder / "model.safetensors")) for name, folder in folders.items()}
    moved = 0
    for tensor, value in weights["soup"].items():
        if value.is_floating_point():
            expected = (weights["seed0"][tensor] + weights["seed1"][tensor]) / 2
            assert torch.allclose(value, expected, atol=1e-6), tensor
            moved += not torch.equal(weights["seed0"][tensor], weights["seed1"][tensor])
    assert moved > 0  # the two seeds trained apart, so the average is not either of them
    log = json.loads((folders["soup"] / "training_log.json").read_text())
    assert [(h["member_seed"], h["step"]) for h in log["loss_history"]] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert log["steps"] == 4
