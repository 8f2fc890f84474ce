"""Fine-tune a dense bi-encoder on (query, positive[, negatives]) rows with sentence-transformers.

The hyperparameters and the trainer plumbing here are shared with sparse_training.py.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from finetune_assets.core.model_types import check_model_type, default_base_model
from finetune_assets.core.offline_models import resolve_model
from finetune_assets.core.training.losses import check_loss, ranking_loss, teacher_labels, training_dataset

# SPLADE recipe defaults (sentence-transformers' SPLADE and inference-free SPLADE training examples).
SPARSE_REGULARIZERS = {"sparse": (5e-5, 3e-5), "inference_free": (0.0, 3e-4)}  # (query, document) FLOPS weights


@dataclass
class Hyperparameters:
    model_type: str = "dense"  # dense | sparse | inference_free (see core/model_types.py)
    base_model: str = ""  # "" = the default base model of model_type
    epochs: float = 1.0
    max_steps: int = 0  # stop after this many steps (0 = as many as the epochs take)
    batch_size: int = 16
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    max_seq_length: int = 256  # what the saved model reads
    # Tokens per text while training (0 = max_seq_length). Cost grows with it; 128 trains about twice as fast.
    train_max_seq_length: int = 0
    num_negatives: int = 0  # how many mined negatives per row to train with (0 = in-batch only)
    seed: int = 0
    # "auto" = bf16 on a GPU that supports it, fp16 on other GPUs, fp32 on CPU.
    precision: str = "auto"
    logging_steps: int = 5
    # Sparse only; < 0 = the recipe default for model_type. inference_free has no query regulariser.
    query_regularizer_weight: float = -1.0
    document_regularizer_weight: float = -1.0
    idf_learning_rate: float = 1e-3  # inference_free: learning rate of the query-side token weights
    loss: str = "mnrl"  # mnrl | margin_mse | distill_kl | mnrl+margin_mse (see core/losses.py)
    cosine_scale: float = 20.0  # distillation losses: multiplies a cosine student's scores (teacher logit range)
    candidates_per_query: int = 4  # batch_kl: the teacher's top documents each query adds to the batch's pool
    # batch_kl: each query also pools the student's own top documents (0 = none), mined before the first step and
    # again every student_candidates_every steps (0 = only then)
    student_candidates_per_query: int = 0
    student_candidates_every: int = 0
    teacher_temperature: float = 1.0  # batch_kl: divides the teacher's scores before its softmax
    # batch_kl, sparse: multiplies the student's dot products (0 = the teacher's score spread over the student's,
    # measured on the first batch: SPLADE-tiny's spread is about twice the hybrid teacher's, and matching it
    # through the loss would shrink every activation)
    sparse_score_scale: float = 0.0
    # batch_kl, sparse: learning rate of the MLM head's output bias, one value per vocabulary token (0 = learning_rate).
    # A raised rate lets a token's weight in this corpus (how much "over" or "flow" counts) move within a short run.
    output_bias_learning_rate: float = 0.0
    # batch_kl: learning rate of a factor on the student's scores, in log space, starting at 1 (0 = the scale stays
    # fixed). Lets the student match the teacher's sharpness without inflating every activation.
    score_scale_learning_rate: float = 0.0
    # Members trained with seeds seed, seed + 1, ... and averaged weight by weight (core/model_soup.py); 1 = one model.
    soup_size: int = 1
    # batch_kl: from this fraction of the steps on, keep the running mean of the weights and save it instead of the
    # last weights (0 = the last weights): a tail average, the soup of one run's late checkpoints.
    average_weights_from: float = 0.0
    # batch_kl, sparse: give the MLM head its own copy of the word embeddings (they are one tensor in BERT), so the
    # terms a text expands to can move without moving how its tokens are read. Saved untied.
    untie_output_embeddings: bool = False
    # batch_kl: dropout probability of every dropout layer while training (< 0 = the model's own, 0.1 for BERT)
    dropout: float = -1.0

    def __post_init__(self) -> None:
        check_model_type(self.model_type)
        check_loss(self.loss)
        if self.soup_size < 1:
            raise ValueError(f"soup_size must be >= 1 (1 = one model), got {self.soup_size}")
        self.base_model = self.base_model or default_base_model(self.model_type)
        query, document = SPARSE_REGULARIZERS.get(self.model_type, (0.0, 0.0))
        if self.query_regularizer_weight < 0:
            self.query_regularizer_weight = query
        if self.document_regularizer_weight < 0:
            self.document_regularizer_weight = document

    @property
    def training_sequence_length(self) -> int:
        # Never longer than the saved model reads: those tokens would train what inference cuts off.
        return min(self.train_max_seq_length or self.max_seq_length, self.max_seq_length)

    @classmethod
    def from_mapping(cls, values: dict) -> Hyperparameters:
        """Accept SageMaker's hyperparameters.json, where every value arrives as a string."""
        known = {f.name: f for f in fields(cls)}
        # SageMaker's toolkit adds its own `sagemaker_*` keys (program, submit dir, distribution).
        values = {k: v for k, v in values.items() if not k.startswith("sagemaker_")}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown hyperparameter(s): {', '.join(unknown)}; known: {', '.join(known)}")
        parsed = {}
        for name, value in values.items():
            kind = type(getattr(cls(), name))
            try:
                parsed[name] = (_boolean(name, value) if kind is bool else
                                int(float(value)) if kind is int else kind(value))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"hyperparameter {name}={value!r} is not a valid {kind.__name__}") from exc
        return cls(**parsed)

    def to_dict(self) -> dict:
        return asdict(self)


def _boolean(name: str, value) -> bool:
    # SageMaker passes "True"/"False" strings, where bool("False") would be True.
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise ValueError(f"hyperparameter {name}={value!r} is not a valid bool (true or false)")


@dataclass
class TrainingOutcome:
    model_dir: str
    steps: int
    rows: int
    train_seconds: float
    samples_per_second: float
    final_loss: float | None
    loss_history: list[dict] = field(default_factory=list)
    device: str = "cpu"
    precision: str = "fp32"


def training_columns(rows: Sequence[dict], num_negatives: int) -> list[str]:
    columns = ["query", "positive"] + [f"negative_{n}" for n in range(1, num_negatives + 1)]
    for line, row in enumerate(rows, start=1):
        missing = [c for c in columns if not isinstance(row.get(c), str) or not row[c].strip()]
        if missing:
            raise ValueError(f"training row {line} lacks {', '.join(missing)} "
                             f"(num_negatives={num_negatives}; mine negatives or lower num_negatives)")
    return columns


def _precision(setting: str) -> tuple[str, dict]:
    import torch

    if not torch.cuda.is_available() or setting == "fp32":
        return "fp32", {}
    if setting in ("auto", "bf16") and torch.cuda.is_bf16_supported():
        return "bf16", {"bf16": True}
    return "fp16", {"fp16": True}


def check_rows(rows: Sequence[dict], hp: Hyperparameters) -> list[str]:
    """The training columns, after checking every row has them and there is at least one batch."""
    columns = training_columns(rows, hp.num_negatives)
    teacher_labels(rows, hp.num_negatives, hp.loss)  # fail before loading a model when teacher scores are missing
    if len(rows) < hp.batch_size:
        raise ValueError(f"only {len(rows)} training pairs, fewer than one batch (batch_size={hp.batch_size}); "
                         "add documents or queries per document, or lower batch_size")
    return columns


def total_steps(rows: Sequence[dict], hp: Hyperparameters) -> int:
    steps = max(1, math.ceil(math.ceil(len(rows) / hp.batch_size) * hp.epochs))
    return min(steps, hp.max_steps) if hp.max_steps > 0 else steps


def loss_recorder(history: list[dict], steps: int, on_log: Callable[[dict], None] | None):
    """A Trainer callback that keeps each logged loss (and passes it on, e.g. to Dagster Pipes)."""
    from transformers import TrainerCallback

    class _Recorder(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                entry = {"step": state.global_step, "epoch": round(state.epoch or 0, 3),
                         "loss": float(logs["loss"]), "learning_rate": float(logs.get("learning_rate", 0)),
                         "total_steps": steps}
                history.append(entry)
                if on_log:
                    on_log(entry)

    return _Recorder()


def trainer_arguments(hp: Hyperparameters, steps: int, output_dir: str) -> dict:
    """Arguments shared by the dense and sparse trainers."""
    from sentence_transformers.base.sampler import BatchSamplers

    return dict(
        output_dir=output_dir,
        num_train_epochs=hp.epochs,
        max_steps=hp.max_steps if hp.max_steps > 0 else -1,
        per_device_train_batch_size=hp.batch_size,
        learning_rate=hp.learning_rate,
        warmup_steps=hp.warmup_ratio,
        # Duplicate texts in a batch would be false in-batch negatives.
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        logging_steps=max(1, min(hp.logging_steps, steps // 2 or 1)),
        save_strategy="no",
        report_to="none",
        seed=hp.seed,
        disable_tqdm=False,
        dataloader_drop_last=False,
        **_precision(hp.precision)[1],
    )


def run_training(trainer, model, rows: Sequence[dict], hp: Hyperparameters, model_dir: str | Path,
                 history: list[dict], device: str) -> TrainingOutcome:
    started = time.perf_counter()
    output = trainer.train()
    train_seconds = time.perf_counter() - started
    if trainer.is_world_process_zero():  # under torchrun, one process writes the model
        if hp.training_sequence_length != hp.max_seq_length:  # trained on shorter texts, reads what the base read
            model.max_seq_length = hp.max_seq_length
        model.save_pretrained(str(model_dir))
    return TrainingOutcome(
        model_dir=str(model_dir),
        steps=int(output.global_step),
        rows=len(rows),
        train_seconds=round(train_seconds, 3),
        samples_per_second=round(len(rows) * hp.epochs / train_seconds, 3),
        final_loss=history[-1]["loss"] if history else float(output.training_loss),
        loss_history=history,
        device=device,
        precision=_precision(hp.precision)[0],
    )


def train_dense(
    rows: Sequence[dict],
    hp: Hyperparameters,
    model_dir: str | Path,
    *,
    on_log: Callable[[dict], None] | None = None,
    work_dir: str | Path | None = None,
) -> TrainingOutcome:
    """Train with hp.loss: MultipleNegativesRankingLoss (in-batch plus mined negatives) or distillation from
    teacher scores (MarginMSELoss, DistillKLDivLoss)."""
    columns = check_rows(rows, hp)  # before the heavy imports: bad rows fail at once
    import torch
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = SentenceTransformer(resolve_model(hp.base_model), device=device)
    model.max_seq_length = hp.training_sequence_length
    dataset = training_dataset(rows, columns, hp.loss)
    steps = total_steps(rows, hp)
    history: list[dict] = []
    output_dir = str(work_dir or Path(model_dir) / "_checkpoints")
    args = SentenceTransformerTrainingArguments(**trainer_arguments(hp, steps, output_dir))
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=ranking_loss(model, hp.loss, cosine_scale=hp.cosine_scale),
        callbacks=[loss_recorder(history, steps, on_log)],
    )
    return run_training(trainer, model, rows, hp, model_dir, history, device)
