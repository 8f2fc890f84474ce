"""Fine-tune a dense bi-encoder on (query, positive[, negatives]) rows with sentence-transformers.

The hyperparameters and the trainer plumbing here are shared with sparse_training.py.
"""
from __future__ import annotations

import math
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any

from finetune_assets.core.model_types import MODEL_TYPES, check_model_type, default_base_model
from finetune_assets.core.offline_models import resolve_base_model
from finetune_assets.core.training.losses import LOSSES, check_loss, ranking_loss, teacher_labels, training_dataset

# SPLADE recipe defaults (sentence-transformers' SPLADE and inference-free SPLADE training examples).
SPARSE_REGULARIZERS = {"sparse": (5e-5, 3e-5), "inference_free": (0.0, 3e-4)}  # (query, document) FLOPS weights
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# batch_kl's attention dropout by model type (absent = the model's own, 0.1 for BERT models): for the dense default,
# 0 trained as well on the development collections with a step of about half the memory, 1.5x to 1.8x faster on CPU;
# the sparse default keeps its own, as 0 raised its FLOPS (docs/benchmarks.md, attention dropout).
ATTENTION_DROPOUT = {"dense": 0.0}


@dataclass(frozen=True)
class Range:
    """The values a setting accepts: bounds for a number or a list of choices; `note` says what a special value
    means and is shown in errors."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] = ()
    note: str = ""

    def allows(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def text(self) -> str:
        if self.choices:
            body = "one of " + ", ".join(self.choices)
        else:
            bounds = ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
            body = " and ".join(f"{sign} {bound:g}" for sign, bound in bounds if bound is not None)
        return body + (f" ({self.note})" if self.note else "")

    def pydantic(self) -> dict[str, float]:
        """The bounds as pydantic Field constraints, so a Config field checks the same range."""
        return {name: getattr(self, name) for name in ("ge", "gt", "le", "lt") if getattr(self, name) is not None}


def setting(default: Any, **valid: Any) -> Any:
    """A Hyperparameters field with its valid range, checked in __post_init__."""
    return field(default=default, metadata={"valid": Range(**valid)})


# Benchmark-only options, measured without gain and off by default; TrainedModelConfig sets them through its
# `experimental` mapping, whose keys are these names.
EXPERIMENTAL_FIELDS = ("student_candidates_per_query", "student_candidates_every", "average_weights_from",
                       "untie_output_embeddings", "dropout", "teacher_temperature", "output_bias_learning_rate",
                       "score_scale_learning_rate", "frozen_layers")
# TrainedModelConfig's name for a setting where it differs from the field here: its max_seq_length (as in the
# smart-defaults table) is the training length, while max_seq_length here is what the saved model reads.
SETTING_FIELDS = {"max_seq_length": "train_max_seq_length"}


@dataclass
class Hyperparameters:
    model_type: str = setting("dense", choices=MODEL_TYPES)  # see core/model_types.py
    base_model: str = ""  # "" = the default base model of model_type
    epochs: float = setting(1.0, gt=0)
    max_steps: int = setting(0, ge=0, note="0 = as many steps as the epochs take")
    batch_size: int = setting(16, ge=1)
    learning_rate: float = setting(2e-5, gt=0)
    warmup_ratio: float = setting(0.1, ge=0, lt=1)
    max_seq_length: int = setting(256, ge=1)  # what the saved model reads
    # Tokens per text while training; cost grows with it.
    train_max_seq_length: int | None = setting(None, ge=1, note="null = max_seq_length")
    num_negatives: int = setting(0, ge=0, note="0 = in-batch negatives only")  # mined negatives per row
    seed: int = setting(0, ge=0)
    # "auto" = bf16 on a GPU that supports it, fp16 on other GPUs, fp32 on CPU.
    precision: str = setting("auto", choices=PRECISIONS)
    logging_steps: int = setting(5, ge=1)
    # Sparse only; inference_free has no query regulariser.
    query_regularizer_weight: float | None = setting(None, ge=0, note="null = the recipe default for model_type")
    document_regularizer_weight: float | None = setting(None, ge=0, note="null = the recipe default for model_type")
    # inference_free: learning rate of the query-side token weights.
    idf_learning_rate: float = setting(1e-3, ge=0, note="0 = frozen")
    loss: str = setting("mnrl", choices=LOSSES)  # see core/losses.py
    # Distillation losses: multiplies a cosine student's scores (the teacher's logit range).
    cosine_scale: float = setting(20.0, gt=0)
    # batch_kl: the teacher's top documents each query adds to the batch's pool.
    candidates_per_query: int = setting(4, ge=1)
    # batch_kl, sparse: multiplies the student's dot products; SPLADE-tiny's own spread is wider than the hybrid
    # teacher's, and matching it through the loss would shrink every activation.
    sparse_score_scale: float | None = setting(None, gt=0, note="null = the teacher's score spread over the "
                                                                "student's, measured on the first batch")
    # Members trained with seeds seed, seed + 1, ... and averaged weight by weight (core/model_soup.py).
    soup_size: int = setting(1, ge=1, note="1 = one model")
    # Recompute each layer's activations in the backward pass instead of keeping them: the same weights, training's
    # peak memory lower (dense default step 5.2 to 3.1 GiB) for about twice its time (docs/benchmarks.md, scaling).
    gradient_checkpointing: bool = False
    # batch_kl: dropout on the attention probabilities alone (after `dropout`); at 0 PyTorch's fused attention keeps
    # no attention matrix per head, so a step takes about half the memory and less time (ATTENTION_DROPOUT).
    attention_dropout: float | None = setting(None, ge=0, lt=1, note="null = the recipe default for model_type: "
                                              "0 for dense, the model's own for sparse")
    # The experimental options (EXPERIMENTAL_FIELDS) follow.
    # batch_kl: each query also pools the student's own top documents, mined before the first step and again
    # every student_candidates_every steps.
    student_candidates_per_query: int = setting(0, ge=0, note="0 = none")
    student_candidates_every: int = setting(0, ge=0, note="0 = only before the first step")
    # batch_kl: from this fraction of the steps on, save the running mean of the weights (a tail average).
    average_weights_from: float = setting(0.0, ge=0, lt=1, note="0 = save the last weights")
    # batch_kl, sparse: give the MLM head its own copy of the word embeddings (one tensor in BERT); saved untied.
    untie_output_embeddings: bool = False
    # batch_kl: dropout probability of every dropout layer while training.
    dropout: float | None = setting(None, ge=0, lt=1, note="null = the model's own")
    teacher_temperature: float = setting(1.0, gt=0)  # batch_kl: divides the teacher's scores before its softmax
    # batch_kl, sparse: learning rate of the MLM head's per-token output bias.
    output_bias_learning_rate: float | None = setting(None, gt=0, note="null = learning_rate")
    # batch_kl: learning rate of a factor on the student's scores, in log space, starting at 1.
    score_scale_learning_rate: float | None = setting(None, gt=0, note="null = the scale stays fixed")
    # batch_kl: the lowest blocks of the encoder (the embedding layer counts as the first) keep the base
    # model's weights, so the backward pass stops above them and a step costs less.
    frozen_layers: int = setting(0, ge=0, note="0 = every layer trains")

    def __post_init__(self) -> None:
        check_model_type(self.model_type)
        check_loss(self.loss)
        for name, valid in _ranges().items():
            value = getattr(self, name)
            if value is None and _optional(name):
                continue
            if value is None or not valid.allows(value):
                raise ValueError(f"hyperparameter {name} must be {valid.text()}, got {value!r}")
        if self.student_candidates_every and not self.student_candidates_per_query:
            raise ValueError(f"hyperparameter student_candidates_every is {self.student_candidates_every} but "
                             "student_candidates_per_query is 0, so nothing would be mined: set "
                             "student_candidates_per_query too")
        self.base_model = self.base_model or default_base_model(self.model_type)
        query, document = SPARSE_REGULARIZERS.get(self.model_type, (0.0, 0.0))
        if self.query_regularizer_weight is None:
            self.query_regularizer_weight = query
        if self.document_regularizer_weight is None:
            self.document_regularizer_weight = document
        if self.attention_dropout is None:
            self.attention_dropout = ATTENTION_DROPOUT.get(self.model_type)

    @property
    def training_sequence_length(self) -> int:
        # Never longer than the saved model reads: those tokens would train what inference cuts off.
        return min(self.train_max_seq_length or self.max_seq_length, self.max_seq_length)

    @classmethod
    def valid_range(cls, name: str) -> Range:
        """The valid range of a field, for a Config field that sets it."""
        return _ranges()[name]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Hyperparameters:
        """Accept SageMaker's hyperparameters.json, where every value arrives as a string."""
        known = {f.name for f in fields(cls)}
        # SageMaker's toolkit adds its own `sagemaker_*` keys (program, submit dir, distribution).
        values = {k: v for k, v in values.items() if not k.startswith("sagemaker_")}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown hyperparameter(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**{name: _parse(name, value) for name, value in values.items()})

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], experimental: Mapping[str, Any] | None = None,
                      **fixed: Any) -> Hyperparameters:
        """Hyperparameters from run settings named as TrainedModelConfig names them: each goes to its field by
        name (SETTING_FIELDS where the names differ; None keeps the field's default), then the experimental
        options, then `fixed` (field names, e.g. the base model's type, name and length)."""
        known = {f.name for f in fields(cls)}
        values = {}
        for name, value in settings.items():
            target = SETTING_FIELDS.get(name, name)
            if target not in known:
                raise ValueError(f"setting {name!r} has no hyperparameter; known: {', '.join(sorted(known))}")
            if value is not None:
                values[target] = value
        return cls(**{**values, **experimental_options(experimental or {}), **fixed})

    def to_dict(self) -> dict:
        return asdict(self)


def experimental_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """The experimental options of a mapping (TrainedModelConfig.experimental), typed and range-checked; an unknown
    key is an error that lists the valid ones."""
    unknown = sorted(set(values) - set(EXPERIMENTAL_FIELDS))
    if unknown:
        raise ValueError(f"experimental: unknown option(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(EXPERIMENTAL_FIELDS)}")
    parsed = {name: _parse(name, value) for name, value in values.items()}
    Hyperparameters(**parsed)  # ranges, and options that need each other
    return parsed


@cache
def _types() -> dict[str, Any]:
    return typing.get_type_hints(Hyperparameters)


@cache
def _ranges() -> dict[str, Range]:
    return {f.name: f.metadata["valid"] for f in fields(Hyperparameters) if "valid" in f.metadata}


def _optional(name: str) -> bool:
    return type(None) in typing.get_args(_types()[name])


def _parse(name: str, value: Any) -> Any:
    """A field's value from JSON or from SageMaker's strings ("2", "1e-5", "True", "null")."""
    kind = _types()[name]
    if _optional(name):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none")):
            return None
        kind = next(t for t in typing.get_args(kind) if t is not type(None))
    try:
        if kind is bool:
            return _boolean(name, value)
        if kind is int:
            number = float(value)
            if not number.is_integer():
                raise ValueError(f"{value!r} is not a whole number")
            return int(number)
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"hyperparameter {name}={value!r} is not a valid {kind.__name__}") from exc


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
    processes: int = 1  # data-parallel processes that trained it together (torchrun); rows count all of them


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
    """Optimizer steps of a run; a run of 0 steps is an error, since it would save the untouched base model."""
    steps = math.ceil(math.ceil(len(rows) / hp.batch_size) * hp.epochs)
    steps = min(steps, hp.max_steps) if hp.max_steps > 0 else steps
    if steps < 1:
        raise ValueError(f"training would run 0 steps ({len(rows)} rows, batch_size {hp.batch_size}, epochs "
                         f"{hp.epochs}, max_steps {hp.max_steps}) and save the untouched base model: add "
                         "training rows or raise epochs")
    return steps


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
        gradient_checkpointing=hp.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if hp.gradient_checkpointing else None,
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
    model = SentenceTransformer(resolve_base_model(hp.base_model), device=device)
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
