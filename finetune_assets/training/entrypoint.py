"""Training entry point shared by the local Pipes subprocess and the SageMaker training container.

It follows SageMaker's conventions so the container needs no wrapper: inputs come from the `train`
channel (`SM_CHANNEL_TRAIN`), hyperparameters from `/opt/ml/input/config/hyperparameters.json`, and the
model goes to `SM_MODEL_DIR`. Each has a command-line flag for local runs. When launched by Dagster
Pipes, progress and the final metrics stream back into the asset; otherwise it runs standalone.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path

from finetune_assets.core.jsonl import read_jsonl, write_json
from finetune_assets.core.training.data_parallel import launched_rank, leave_workers
from finetune_assets.core.training.dense_training import Hyperparameters, train_dense
from finetune_assets.core.training.model_soup import train_soup

SAGEMAKER_HYPERPARAMETERS = "/opt/ml/input/config/hyperparameters.json"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m finetune_assets.training", description=__doc__.splitlines()[0])
    parser.add_argument("--train-dir", default=os.environ.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train"),
                        help="folder holding train.jsonl")
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    parser.add_argument("--hyperparameters", default=None,
                        help=f"JSON file of hyperparameters (default: {SAGEMAKER_HYPERPARAMETERS} when present)")
    return parser.parse_args(argv)


def _load_hyperparameters(path: str | None) -> Hyperparameters:
    path = path or (SAGEMAKER_HYPERPARAMETERS if Path(SAGEMAKER_HYPERPARAMETERS).exists() else None)
    return Hyperparameters.from_mapping(json.loads(Path(path).read_text())) if path else Hyperparameters()


def _pipes_context():
    """A Dagster Pipes context when Dagster launched us, else None (standalone run)."""
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if launched_rank() != 0 or not PipesEnvVarParamsLoader().is_dagster_pipes_process():
        return None  # data-parallel workers other than rank 0 stay silent
    if os.environ.get("FINETUNE_PIPES_TRANSPORT") == "s3":
        # On SageMaker the context and messages travel through S3 (environment entries are too small).
        import boto3
        from dagster_pipes import PipesS3ContextLoader, PipesS3MessageWriter

        client = boto3.client("s3")
        return open_dagster_pipes(context_loader=PipesS3ContextLoader(client),
                                  message_writer=PipesS3MessageWriter(client))
    return open_dagster_pipes()


def _train_batch_kl(train_dir: Path, rows: list[dict], hp: Hyperparameters, model_dir: str, on_log):
    """batch_kl reads the teacher's top documents per row (memory-mapped) and the documents they index, written
    beside train.jsonl by mined_negatives."""
    from finetune_assets.core.teachers.teacher_top_k import INDICES_FILE, REST_FILE, TeacherTopK
    from finetune_assets.core.training.batch_distillation import DOCUMENTS_FILE, SCORES_FILE, train_batch_kl

    missing = [name for name in (SCORES_FILE, INDICES_FILE, REST_FILE, DOCUMENTS_FILE)
               if not (train_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"loss 'batch_kl' needs {' and '.join(missing)} in {train_dir}: materialize "
                                "mined_negatives with teacher 'hybrid'")
    documents = list(read_jsonl(train_dir / DOCUMENTS_FILE))
    return train_batch_kl(rows, documents, TeacherTopK.load(train_dir, len(documents)), hp, model_dir,
                          on_log=on_log)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    pipes = _pipes_context()
    with pipes if pipes is not None else nullcontext():
        log = pipes.log if pipes is not None else None
        hp = _load_hyperparameters(args.hyperparameters)
        train_file = Path(args.train_dir) / "train.jsonl"
        if not train_file.exists():
            raise FileNotFoundError(f"no training data: {train_file} does not exist")
        rows = list(read_jsonl(train_file))
        spans = 0
        if hp.loss != "batch_kl":
            # Span queries are copied from their document: only the teacher's ranking of the others teaches.
            spans = sum(1 for r in rows if r.get("exclude_source"))
            rows = [r for r in rows if not r.get("exclude_source")]
            if spans:
                (log.info if log else print)(f"loss {hp.loss}: {spans} span-query rows left out (batch_kl only)")
        if not rows:
            raise ValueError(f"no training rows in {train_file}" + (f" once its {spans} span-query rows are left "
                             f"out for loss {hp.loss}: use loss batch_kl" if spans else ""))

        def on_log(entry: dict) -> None:
            message = f"step {entry['step']}/{entry['total_steps']} loss {entry['loss']:.4f}"
            if entry.get("score_scale") is not None and hp.score_scale_learning_rate:  # it moves: every time
                message += f" (student scores x {entry['score_scale']:g}, learned)"
            elif entry.get("score_scale") is not None and entry["step"] <= hp.logging_steps:  # once, at the start
                message += f" (student scores x {entry['score_scale']:g}, the teacher's scale)"
            (log.info if log else print)(message)

        if log:
            log.info(f"training {hp.base_model} on {len(rows)} rows: {json.dumps(hp.to_dict())}")
        def train_member(member: Hyperparameters, model_dir: str):
            if member.loss == "batch_kl":
                return _train_batch_kl(Path(args.train_dir), rows, member, model_dir, on_log)
            if member.model_type == "dense":
                return train_dense(rows, member, model_dir, on_log=on_log)
            from finetune_assets.core.training.sparse_training import flops_weight_note, train_sparse

            (log.info if log else print)(f"{member.model_type} model; {flops_weight_note(member)}")
            return train_sparse(rows, member, model_dir, on_log=on_log)

        def on_member(index: int, seed: int) -> None:
            (log.info if log else print)(f"model soup: member {index + 1}/{hp.soup_size} (seed {seed})")

        try:
            outcome = train_soup(train_member, hp, args.model_dir, on_member=on_member)
        finally:
            leave_workers()
        if outcome.steps < 1:  # the folder holds the untouched base model: never report it as trained
            raise RuntimeError(f"training ran 0 steps on {outcome.rows} rows (epochs {hp.epochs}, batch_size "
                               f"{hp.batch_size}, max_steps {hp.max_steps}), so {args.model_dir} holds the untouched "
                               "base model; raise epochs or add training rows")
        summary = {
            "steps": outcome.steps, "rows": outcome.rows, "train_seconds": outcome.train_seconds,
            "samples_per_second": outcome.samples_per_second, "final_loss": outcome.final_loss,
            "device": outcome.device, "precision": outcome.precision, "processes": outcome.processes,
            "model_type": hp.model_type, "hyperparameters": hp.to_dict(),
        }
        if launched_rank() != 0:
            return 0
        write_json(Path(args.model_dir) / "training_log.json", {**summary, "loss_history": outcome.loss_history})
        if pipes is not None:
            pipes.report_asset_materialization(metadata={
                "steps": outcome.steps,
                "training_rows": outcome.rows,
                "train_seconds": outcome.train_seconds,
                "samples_per_second": outcome.samples_per_second,
                "final_loss": {"raw_value": outcome.final_loss, "type": "float"},
                "device": outcome.device,
                "precision": outcome.precision,
                "processes": outcome.processes,
                "soup_size": hp.soup_size,
            })
        else:
            print(json.dumps(summary), file=sys.stderr)
    return 0
