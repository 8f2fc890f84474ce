"""trained_model: the fine-tuned model, trained by the shared entry point in a Dagster Pipes subprocess."""

import dataclasses
import sys
from collections.abc import Mapping
from typing import Any, Literal, Optional

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, PipesSubprocessClient, asset
from pydantic import Field, field_validator

from finetune_assets.clients.sagemaker_training.images import resolve_distribution
from finetune_assets.clients.sagemaker_training.images import training_processes as sagemaker_processes
from finetune_assets.core.cost.cost import passages_per_row, table_rows_per_second
from finetune_assets.core.cost.prices import load_prices
from finetune_assets.core.cost.smart_defaults import BATCH_KL_SETTINGS, resolve_batch_kl
from finetune_assets.core.jsonl import read_json, read_jsonl, write_json
from finetune_assets.core.plots import loss_curve_png
from finetune_assets.core.teachers.teacher import negative_columns
from finetune_assets.core.training.batch_distillation import MODEL_TYPES as BATCH_KL_MODEL_TYPES
from finetune_assets.core.training.batch_distillation import SCORES_FILE
from finetune_assets.core.training.dense_training import (
    EXPERIMENTAL_FIELDS,
    PRECISIONS,
    SETTING_FIELDS,
    Hyperparameters,
    experimental_options,
    total_steps,
)
from finetune_assets.core.training.losses import LOSSES, teacher_labels
from finetune_assets.core.training.training_length import COUNTS_FILE as MINED_COUNTS_FILE
from finetune_assets.core.training.training_length import TrainingLength, training_length
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.sagemaker_pipes import SageMakerTrainingResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages import smart_defaults
from finetune_assets.stages.metadata import image
from finetune_assets.stages.run_config import check_run_config

LEGACY_SCORES_FILE = "teacher_scores.npy"  # the full rows x documents matrix mined_negatives wrote before top-K
TRAINING_COMMAND = [sys.executable, "-m", "finetune_assets.training"]


# Settings left at None are filled from core/cost/smart_defaults.toml, by model type and corpus size.
_SMART = "null = the smart-defaults table's value for the model type and corpus size"
# The smart-defaults table's settings that trained_model holds, for the pair losses (batch_kl's entry: BATCH_KL_SETTINGS).
PAIR_LOSS_SETTINGS = ("epochs", "batch_size", "learning_rate")
# TrainedModelConfig fields that choose how the asset runs rather than a hyperparameter.
RUN_FIELDS = ("backend", "experimental", "training_budget_minutes", "training_rows_per_second")


def _hyperparameter(name: str, default: Any, description: str) -> Any:
    """A field that sets the Hyperparameters field of that name: its valid range is the one Hyperparameters checks."""
    return Field(default=default, description=description,
                 **Hyperparameters.valid_range(SETTING_FIELDS.get(name, name)).pydantic())


class TrainedModelConfig(Config):
    epochs: Optional[float] = _hyperparameter("epochs", None, f"Passes over the training rows ({_SMART}).")
    batch_size: Optional[int] = _hyperparameter("batch_size", None, "Rows per step, which also serve as each "
                                                f"other's in-batch negatives ({_SMART}).")
    learning_rate: Optional[float] = _hyperparameter("learning_rate", None, f"Peak learning rate ({_SMART}).")
    warmup_ratio: float = _hyperparameter("warmup_ratio", 0.1, "Share of the steps over which the learning rate "
                                          "rises to its peak.")
    max_seq_length: Optional[int] = _hyperparameter("max_seq_length", None, "Tokens per text while training, "
                                                    "never more than the saved model reads (null = the "
                                                    "smart-defaults length for batch_kl, else the base_model "
                                                    "resource's).")
    num_negatives: Optional[int] = _hyperparameter("num_negatives", None, "Mined negatives per row to train with "
                                                   "(null = all that mined_negatives wrote).")
    precision: Literal[PRECISIONS] = Field(default="auto", description="Training precision: auto = bf16 on a GPU "
                                           "that supports it, fp16 on other GPUs, fp32 on CPU but bf16 "
                                           "autocast for batch_kl on CPUs with AVX-512 BF16 or AMX.")
    seed: int = _hyperparameter("seed", 0, "Seed of the batch order and of any newly initialised weights.")
    loss: Literal[("auto", *LOSSES)] = Field(default="auto", description="batch_kl (distil the hybrid teacher's "
                                             "scores over every document in a batch), mnrl (in-batch plus mined "
                                             "negatives), margin_mse or distill_kl (distil the mined_negatives "
                                             "teacher scores), mnrl+margin_mse (their sum), or auto = batch_kl "
                                             "when mined_negatives wrote a teacher matrix and the model is dense "
                                             "or sparse, else mnrl.")
    max_steps: Optional[int] = _hyperparameter("max_steps", None, "Stop after this many steps (0 = no cap; null = "
                                               "the smart-defaults cap for batch_kl, no cap otherwise).")
    candidates_per_query: Optional[int] = _hyperparameter("candidates_per_query", None, "batch_kl: the teacher's "
                                                          "top documents each query adds to its batch's pool "
                                                          f"({_SMART}).")
    soup_size: int = _hyperparameter("soup_size", 1, "Models trained with seeds seed, seed + 1, ... whose weights "
                                     "are averaged into the saved one, which makes sparse vectors sparser for that "
                                     "many times the training (1 = one model).")
    query_regularizer_weight: Optional[float] = _hyperparameter("query_regularizer_weight", None, "Sparse: FLOPS "
                                                                "weight on query vectors (null = the recipe "
                                                                "default for the model type).")
    document_regularizer_weight: Optional[float] = _hyperparameter("document_regularizer_weight", None, "Sparse: "
                                                                   "FLOPS weight on document vectors (null = the "
                                                                   "recipe default for the model type).")
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations in the backward pass: "
                                         "the same model, with training's peak memory lower (dense default step "
                                         "5.2 to 3.1 GiB) for about twice its time; for machines short of memory.")
    attention_dropout: Optional[float] = _hyperparameter("attention_dropout", None, "batch_kl: dropout on the "
                                                         "attention probabilities while training; at 0 PyTorch's "
                                                         "fused attention stores no attention matrices, so a dense "
                                                         "step takes about half the memory (null = 0 for dense, "
                                                         "the model's own for sparse, whose FLOPS 0 raised).")
    training_budget_minutes: Optional[float] = Field(default=None, gt=0, description="Minutes the training "
                                                     "device may train: steps then follow the rows mined_negatives "
                                                     "keeps (epochs passes) up to what fits this budget, in place of "
                                                     "the smart-defaults table's max_steps, for a GPU or a larger "
                                                     "sample (null = the table's steps).")
    training_rows_per_second: Optional[float] = Field(default=None, gt=0, description="Training rows per second "
                                                      "of the device that trains (a trained_model run's "
                                                      "samples_per_second), which converts the budget to steps and "
                                                      "prices training in cost_estimate (null = the price table's "
                                                      "rate for the device and row length).")
    backend: Literal["auto", "local", "sagemaker"] = Field(default="auto", description="Where training runs: local "
                                                           "(a Pipes subprocess here), sagemaker (a training job), "
                                                           "or auto = sagemaker when FINETUNE_MODE=aws, else local.")
    experimental: dict = Field(default={}, description="Benchmark-only options measured without gain; keys are "
                               f"Hyperparameters fields ({', '.join(EXPERIMENTAL_FIELDS)}).")

    @field_validator("experimental")
    @classmethod
    def _known_experimental_options(cls, options: dict) -> dict:
        return experimental_options(options)


def smart_settings(config: TrainedModelConfig, loss: str) -> dict:
    """The settings the smart-defaults table fills where the run leaves them null, for the loss they serve."""
    return {name: getattr(config, name) for name in (BATCH_KL_SETTINGS if loss == "batch_kl" else PAIR_LOSS_SETTINGS)}


def training_hyperparameters(config: TrainedModelConfig, chosen: dict, *, loss: str, num_negatives: int,
                             base_model: BaseModelResource) -> Hyperparameters:
    """What the entry point trains with: every setting of `config` by name, the smart defaults in `chosen`, the
    experimental options, and the base model's type, name and length."""
    settings = {**config.model_dump(exclude=set(RUN_FIELDS)), **chosen, "loss": loss, "num_negatives": num_negatives}
    return Hyperparameters.from_settings(settings, config.experimental, model_type=base_model.model_type,
                                         base_model=base_model.model_name, max_seq_length=base_model.max_seq_length)


def mined_negative_count(train_file) -> int:
    # Only the text columns count: rows also carry negative_<i>_id, _score and _source.
    return len(negative_columns(next(read_jsonl(train_file), {})))


def unmined_rows_warning(mined: int, available: int, hp: Hyperparameters, processes: int = 1) -> str | None:
    """What to change when this training would read the `mined` rows more than once while mined_negatives left
    others of the `available` training pairs out (max_rows below what it reads); None when it does not."""
    step_rows = hp.batch_size * processes
    steps = total_steps(range(mined), dataclasses.replace(hp, batch_size=step_rows))  # as the entry point counts
    reads = steps * step_rows
    if mined >= available or reads <= mined:
        return None
    return (f"this training reads {reads:,} rows ({steps} steps x {step_rows}) but mined_negatives kept "
            f"{mined:,} of the {available:,} training pairs, so they repeat while the others are never read: "
            f"materialize mined_negatives with max_rows {min(reads, available)} (0 = every pair)")


def training_backend(config: TrainedModelConfig, sagemaker_training: SageMakerTrainingResource) -> str:
    """Where this run trains: the config's backend, or for auto the sagemaker_training resource's default."""
    return sagemaker_training.default_backend if config.backend == "auto" else config.backend


def local_training_device(rates: Mapping[str, float]) -> tuple[str, str]:
    """The price table's name of the device a local run trains on (cpu, or the listed GPU type the local GPU's
    name contains) and a note when the GPU is not listed, which then reads at the fastest listed GPU's rate."""
    import torch

    if not torch.cuda.is_available():
        return "cpu", ""
    name = torch.cuda.get_device_name(0)
    gpus = [key for key in rates if key != "cpu"]
    for key in gpus:
        if key.lower() in name.lower():
            return key, ""
    fastest = max(gpus, key=lambda key: rates[key])
    return fastest, f"{name} is not in the price table, read at the {fastest} rate"


def training_processes(backend: str, sagemaker_training: SageMakerTrainingResource) -> int:
    """Data-parallel processes the entry point trains in: one locally; on SageMaker with torch_distributed (auto
    on several GPUs or instances), one per GPU of every instance, or one per CPU instance."""
    if backend != "sagemaker":
        return 1
    return sagemaker_processes(sagemaker_training.distribution, sagemaker_training.instance_type,
                               sagemaker_training.instance_count)


def check_distribution(loss: str, backend: str, sagemaker_training: SageMakerTrainingResource) -> None:
    """Refuse, before a job starts, a SageMaker distribution the loss cannot train under."""
    if backend == "sagemaker" and loss == "batch_kl" and resolve_distribution(
            sagemaker_training.distribution, sagemaker_training.instance_type,
            sagemaker_training.instance_count) == "smddp":
        raise ValueError("loss 'batch_kl' trains data-parallel under torchrun, not SMDDP's mpirun: set "
                         "sagemaker_training's distribution to torch_distributed (or auto)")


def training_rate(config: TrainedModelConfig, hp: Hyperparameters, backend: str,
                  sagemaker_training: SageMakerTrainingResource) -> tuple[float, str]:
    """Training rows per second of the device `backend` trains on, and where the figure comes from: the run's
    training_rows_per_second, else the price table's rate for the device at rows of full-length passages (an
    upper bound on their length, so the budget holds)."""
    if config.training_rows_per_second:
        return config.training_rows_per_second, "training_rows_per_second"
    prices = load_prices()
    known = prices.data["training_throughput"]["rows_per_second"]
    if backend == "sagemaker":
        (device, devices), note = prices.training_devices(sagemaker_training.instance_type,
                                                          sagemaker_training.instance_count), ""
    else:
        (device, note), devices = local_training_device(known), 1
    passages = passages_per_row(hp.loss, hp.candidates_per_query, hp.student_candidates_per_query, hp.num_negatives)
    rate = table_rows_per_second(prices, device, devices, passages, hp.training_sequence_length, hp.base_model)
    return rate, f"price table, {devices} x {device}" + (f"; {note}" if note else "")


def planned_length(config: TrainedModelConfig, hp: Hyperparameters, rows: int, backend: str,
                   sagemaker_training: SageMakerTrainingResource) -> TrainingLength:
    """The steps this run takes over `rows` rows: hp's epochs and max_steps; with training_budget_minutes, the
    budget (shared by a soup's models) replaces the smart-defaults table's max_steps (not one the run sets) and
    caps the steps."""
    processes = training_processes(backend, sagemaker_training)
    if config.training_budget_minutes is None:
        return training_length(rows, batch_size=hp.batch_size, epochs=hp.epochs, max_steps=hp.max_steps,
                               processes=processes)
    rate, source = training_rate(config, hp, backend, sagemaker_training)
    return training_length(rows, batch_size=hp.batch_size, epochs=hp.epochs, max_steps=config.max_steps or 0,
                           budget_minutes=config.training_budget_minutes / hp.soup_size,
                           rows_per_second=rate, rate_source=source, processes=processes)


def batch_kl_rows_read(config: TrainedModelConfig, base_model: BaseModelResource, available: int,
                       sagemaker_training: SageMakerTrainingResource) -> int:
    """Rows batch_kl training with `config` reads of `available` training pairs (repeats counted once): what
    mined_negatives mines and scores by default; 0 (every pair) for model types batch_kl does not train."""
    if base_model.model_type not in BATCH_KL_MODEL_TYPES or available == 0:
        return 0
    chosen = resolve_batch_kl(smart_settings(config, "batch_kl"), base_model.model_type)[0]
    hp = training_hyperparameters(config, chosen, loss="batch_kl", base_model=base_model,
                                  num_negatives=config.num_negatives or 0)
    length = planned_length(config, hp, available, training_backend(config, sagemaker_training), sagemaker_training)
    return min(available, length.rows)


def chosen_loss(loss: str, model_type: str, train_dir) -> str:
    """`auto`: batch_kl when mined_negatives wrote the hybrid teacher's top-K scores and batch_kl can train the
    model type (dense, sparse), else mnrl. A folder from before the top-K store is refused, not quietly trained
    with another loss."""
    if (train_dir / LEGACY_SCORES_FILE).exists() and not (train_dir / SCORES_FILE).exists():
        raise ValueError(f"mined_negatives at {train_dir} holds the old full teacher matrix ({LEGACY_SCORES_FILE}); "
                         "this version reads the teacher's top-K files: re-materialize mined_negatives")
    if loss != "auto":
        return loss
    return "batch_kl" if (train_dir / SCORES_FILE).exists() and model_type in BATCH_KL_MODEL_TYPES else "mnrl"


@asset(partitions_def=index_partitions, group_name="training", deps=["mined_negatives"], kinds={"pytorch"})
def trained_model(context: AssetExecutionContext, config: TrainedModelConfig, storage: ArtifactStorage,
                  base_model: BaseModelResource, pipes_subprocess_client: PipesSubprocessClient,
                  sagemaker_training: SageMakerTrainingResource) -> MaterializeResult:
    """A sentence-transformers model folder (a SparseEncoder for sparse model types); loss and throughput
    stream back through Dagster Pipes.

    The same entry point runs in a local subprocess (GPU when there is one) or as a SageMaker training job.
    """
    check_run_config(context)
    index = context.partition_key
    train_dir = storage.fetch(index, "mined_negatives")
    available = mined_negative_count(train_dir / "train.jsonl")
    num_negatives = available if config.num_negatives is None else config.num_negatives
    if num_negatives > available:
        raise ValueError(f"num_negatives={num_negatives} but mined_negatives holds {available} per row; "
                         "re-materialize mined_negatives with more negatives")
    loss = chosen_loss(config.loss, base_model.model_type, train_dir)
    # Fail here rather than in the training job when the loss needs teacher scores that the rows lack.
    teacher_labels([next(read_jsonl(train_dir / "train.jsonl"), {})], num_negatives, loss)
    if loss == "batch_kl" and not (train_dir / SCORES_FILE).exists():
        raise ValueError("loss 'batch_kl' distils the hybrid teacher's top-K scores: materialize mined_negatives "
                         "with teacher 'hybrid' first")
    if loss == "batch_kl":
        chosen, smart_metadata = smart_defaults.fill_batch_kl(context, smart_settings(config, loss),
                                                              base_model.model_type)
    else:
        chosen, smart_metadata = smart_defaults.fill(context, smart_settings(config, loss), base_model.model_type,
                                                     smart_defaults.sampled_documents(storage, index))
    hp = training_hyperparameters(config, chosen, loss=loss, num_negatives=num_negatives, base_model=base_model)
    counts = train_dir / MINED_COUNTS_FILE  # absent in folders from before max_rows: nothing was left out then
    mined = read_json(counts) if counts.exists() else None
    rows = mined["rows"] if mined else sum(1 for _ in read_jsonl(train_dir / "train.jsonl"))
    backend = training_backend(config, sagemaker_training)
    check_distribution(loss, backend, sagemaker_training)
    length = planned_length(config, hp, rows, backend, sagemaker_training)
    if config.training_budget_minutes is not None:
        hp = dataclasses.replace(hp, max_steps=length.steps)
    context.log.info(f"training {length.describe()}")
    if mined and (warning := unmined_rows_warning(mined["rows"], mined["training_pairs"], hp, length.processes)):
        context.log.warning(warning)
    if hp.soup_size > 1:
        context.log.info(f"training a soup of {hp.soup_size} models (seeds {hp.seed} to {hp.seed + hp.soup_size - 1}), "
                         f"saved as the average of their weights; soup_size: 1 trains one model in a "
                         f"{hp.soup_size}th of the time")
    folder = storage.artifact_dir(index, "trained_model", run_id=context.run.run_id)
    write_json(folder / "hyperparameters.json", hp.to_dict())
    model_dir = folder / "model"
    command = [*TRAINING_COMMAND, "--train-dir", str(train_dir), "--model-dir", str(model_dir),
               "--hyperparameters", str(folder / "hyperparameters.json")]
    environment = {"TOKENIZERS_PARALLELISM": "false"}
    if backend == "local":
        pipes_result = pipes_subprocess_client.run(command=command, context=context, env=environment)
    elif backend == "sagemaker":
        if not storage.is_s3:
            raise ValueError("training on SageMaker reads its data from S3: set the storage root to s3://bucket/prefix")
        # Same entry point and hyperparameters; the data is the published mined_negatives prefix.
        pipes_result = sagemaker_training.run(context=context, input_s3_uri=storage.uri(index, "mined_negatives") + "/",
                                              hyperparameters=hp.to_dict(), model_dir=model_dir,
                                              environment=environment)
    else:
        raise ValueError(f"unknown training backend {backend!r}; use 'local', 'sagemaker' or 'auto'")
    pipes_result = pipes_result.get_materialize_result()
    log = read_json(model_dir / "training_log.json")
    uri = storage.publish(index, "trained_model", folder)
    return MaterializeResult(metadata={
        **pipes_result.metadata,
        **smart_metadata,
        "path": MetadataValue.path(uri + "/model"),
        "base_model": base_model.model_name,
        "model_type": base_model.model_type,
        "hyperparameters": MetadataValue.json(hp.to_dict()),
        "training_steps_set_by": length.limited_by,
        "loss_curve": image(loss_curve_png(log["loss_history"]), "training loss"),
    })
