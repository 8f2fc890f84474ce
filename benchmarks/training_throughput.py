"""Training throughput: the Dagster Pipes path vs a bare sentence-transformers script, on the same rows.

    .venv/bin/python benchmarks/training_throughput.py TRAIN_JSONL --out FILE.json [--repeats 2] [--rows 480]

Both train all-MiniLM-L6-v2 with MultipleNegativesRankingLoss and the same hyperparameters. The Pipes
path materializes the `trained_model` asset (PipesSubprocessClient -> python -m finetune_assets.training);
the bare path runs a plain script with no project code. Runs alternate (bare, pipes, bare, pipes, ...)
so drift in machine load hits both; medians and the ratio pipes/bare are reported.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE_SCRIPT = r'''
import json, sys, time
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.base.sampler import BatchSamplers
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
rows_file, model_path, out_dir, batch_size, max_len = sys.argv[1:6]
rows = [json.loads(l) for l in open(rows_file)]
cols = ["query", "positive"] + sorted((k for k in rows[0] if k.startswith("negative_") and k[9:].isdigit()), key=lambda k: int(k[9:]))
model = SentenceTransformer(model_path)
model.max_seq_length = int(max_len)
args = SentenceTransformerTrainingArguments(output_dir=out_dir, num_train_epochs=1, per_device_train_batch_size=int(batch_size),
    learning_rate=2e-5, warmup_steps=0.1, batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no",
    report_to="none", seed=0, logging_steps=5)
trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict({c: [r[c] for r in rows] for c in cols}),
    loss=MultipleNegativesRankingLoss(model))
start = time.perf_counter()
trainer.train()
print(json.dumps({"train_seconds": time.perf_counter() - start, "rows": len(rows)}))
'''


def run_bare(rows_file: Path, batch_size: int, max_len: int) -> dict:
    from finetune_assets.core.offline_models import minilm_path

    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        output = subprocess.run([sys.executable, "-c", BARE_SCRIPT, str(rows_file), str(minilm_path()), work,
                                 str(batch_size), str(max_len)], check=True, capture_output=True, text=True)
        wall = time.perf_counter() - started
    result = json.loads(output.stdout.strip().splitlines()[-1])
    return {"samples_per_second": result["rows"] / result["train_seconds"], "train_seconds": result["train_seconds"],
            "wall_seconds": wall}


def run_pipes(rows_file: Path, batch_size: int, max_len: int) -> dict:
    from dagster import DagsterInstance, materialize

    from finetune_assets.definitions import defs, trained_model
    from finetune_assets.resources.base_model import BaseModelResource
    from finetune_assets.resources.storage import ArtifactStorage

    with tempfile.TemporaryDirectory() as work:
        storage = ArtifactStorage(root=work)
        folder = storage.artifact_dir("bench", "mined_negatives")
        shutil.copy(rows_file, folder / "train.jsonl")
        storage.publish("bench", "mined_negatives", folder)
        resources = {**defs.resources, "storage": storage, "base_model": BaseModelResource(max_seq_length=max_len)}
        started = time.perf_counter()
        with DagsterInstance.ephemeral() as instance:
            instance.add_dynamic_partitions("index", ["bench"])
            result = materialize([trained_model], partition_key="bench", resources=resources, instance=instance,
                                 run_config={"ops": {"trained_model": {"config": {"batch_size": batch_size}}}})
        wall = time.perf_counter() - started
    metadata = result.asset_materializations_for_node("trained_model")[0].metadata
    return {"samples_per_second": metadata["samples_per_second"].value,
            "train_seconds": metadata["train_seconds"].value, "wall_seconds": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_jsonl", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rows", type=int, default=480)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-length", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        rows_file = Path(work) / "train.jsonl"
        lines = args.train_jsonl.read_text(encoding="utf-8").splitlines()[: args.rows]
        rows_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        runs = {"bare": [], "pipes": []}
        for repeat in range(args.repeats):
            for name, runner in (("bare", run_bare), ("pipes", run_pipes)):
                runs[name].append(runner(rows_file, args.batch_size, args.max_seq_length))
                print(f"repeat {repeat + 1} {name}: {runs[name][-1]}", flush=True)
    medians = {name: {k: statistics.median(r[k] for r in values) for k in values[0]} for name, values in runs.items()}
    report = {
        "rows": len(lines), "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
        "repeats": args.repeats, "runs": runs, "medians": medians,
        "ratio_pipes_over_bare_samples_per_second":
            medians["pipes"]["samples_per_second"] / medians["bare"]["samples_per_second"],
        "machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{'path':<6} {'samples/s':>10} {'train s':>8} {'wall s':>8}")
    for name, values in medians.items():
        print(f"{name:<6} {values['samples_per_second']:>10.2f} {values['train_seconds']:>8.1f} {values['wall_seconds']:>8.1f}")
    print(f"ratio pipes/bare (samples/s): {report['ratio_pipes_over_bare_samples_per_second']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
