"""trained_model: the fine-tuned model, trained by the shared entry point in a Dagster Pipes subprocess."""

import sys
from typing import Optional

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, PipesSubprocessClient, asset
from pydantic import Field

from finetune_assets.core.jsonl import read_json, read_jsonl, write_json
from finetune_assets.core.plots import loss_curve_png
from finetune_assets.core.teachers.teacher import negative_columns
from finetune_assets.core.training.batch_distillation import MODEL_TYPES as BATCH_KL_MODEL_TYPES
from finetune_assets.core.training.batch_distillation import SCORES_FILE
from finetune_assets.core.training.dense_training import Hyperparameters
from finetune_assets.core.training.losses import teacher_labels
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.sagemaker_pipes import SageMakerTrainingResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages import smart_defaults
from finetune_assets.stages.metadata import image

TRAINING_COMMAND = [sys.executable, "-m", "finetune_assets.training"]


# Settings left at None are filled from core/cost/smart_defaults.toml, by model type and corpus size.
_SMART = "None = the smart-defaults table's value for the model type and corpus size"


class TrainedModelConfig(Config):
    epochs: Optional[float] = Field(default=None, description=f"Passes over the training rows ({_SMART})")
    batch_size: Optional[int] = Field(default=None,
                                      description=f"Rows per step, also the in-batch negatives ({_SMART})")
    learning_rate: Optional[float] = Field(default=None, description=f"Peak learning rate ({_SMART})")
    warmup_ratio: float = 0.1
    max_seq_length: Optional[int] = Field(default=None, description="Tokens per text while training (null = the "
                                          "base_model resource's); the saved model still reads the resource's "
                                          "length. 128 trains about twice as fast as 256")
    num_negatives: int = Field(default=-1, description="Mined negatives to train with (-1 = all that were mined)")
    precision: str = Field(default="auto", description="auto | fp32 | bf16 | fp16")
    seed: int = 0
    loss: str = Field(default="auto", description="batch_kl (distil the hybrid teacher's matrix over every "
                      "document in a batch), mnrl (in-batch + mined negatives), margin_mse or distill_kl (distil the "
                      "mined_negatives teacher scores), mnrl+margin_mse (their sum); auto = batch_kl when "
                      "mined_negatives wrote a teacher matrix and the model is dense or sparse, else mnrl")
    max_steps: Optional[int] = Field(default=None, description="Stop after this many steps (0 = no cap; None = "
                                     "the batch_kl defaults' cap for batch_kl, no cap otherwise)")
    candidates_per_query: Optional[int] = Field(default=None, description="batch_kl: the teacher's top documents "
                                                "each query adds to its batch's pool (every query is scored against "
                                                f"the whole pool; {_SMART})")
    soup_size: int = Field(default=1, description="Train this many models with seeds seed, seed + 1, ... and keep "
                           "the average of their weights, a uniform model soup. Measured on sparse models: 4 halves "
                           "the FLOPS at about one model's quality, for 4 times the training time")
    student_candidates_per_query: int = Field(default=0, description="batch_kl: the student's own top documents "
                                              "each query also adds to the pool, mined over the training documents "
                                              "before the first step (0 = none): the documents it ranks too high")
    student_candidates_every: int = Field(default=0, description="batch_kl: mine the student's candidates again "
                                          "every this many steps (0 = only before the first step)")
    average_weights_from: float = Field(default=0.0, description="batch_kl: from this fraction of the steps on, "
                                        "average the weights after every step and save the mean (0 = save the "
                                        "last weights)")
    untie_output_embeddings: bool = Field(default=False, description="Sparse batch_kl: train the MLM head's "
                                          "vocabulary projection apart from the input word embeddings (one tensor "
                                          "in BERT); the saved model keeps them untied")
    dropout: Optional[float] = Field(default=None, description="batch_kl: dropout probability while training "
                                     "(null = the model's own, 0.1 for BERT models)")
    teacher_temperature: float = Field(default=1.0, description="batch_kl: divides the teacher's scores before "
                                       "its softmax (lower = sharper)")
    query_regularizer_weight: Optional[float] = Field(default=None, description="Sparse: FLOPS weight on query "
                                                      "vectors (null = the recipe default for the model type)")
    document_regularizer_weight: Optional[float] = Field(default=None, description="Sparse: FLOPS weight on "
                                                         "document vectors (null = the recipe default)")
    output_bias_learning_rate: Optional[float] = Field(default=None, description="Sparse batch_kl: learning rate "
                                                       "of the per-token output bias of the model's MLM head, "
                                                       "i.e. how much each vocabulary term counts (null = "
                                                       "learning_rate)")
    score_scale_learning_rate: Optional[float] = Field(default=None, description="batch_kl: learn a factor on the "
                                                       "student's scores at this rate (log space; null or 0 = "
                                                       "fixed scale). Training only: the saved model is unchanged")
    backend: str = Field(default="auto", description="local (a Pipes subprocess here), sagemaker (a training job), "
                         "or auto: sagemaker when FINETUNE_MODE=aws, else local")



def mined_negative_count(train_file) -> int:
    # Only the text columns count: rows also carry negative_<i>_id, _score and _source.
    return len(negative_columns(next(read_jsonl(train_file), {})))


def chosen_loss(loss: str, model_type: str, train_dir) -> str:
    """`auto`: batch_kl when mined_negatives wrote the hybrid teacher's matrix and batch_kl can train the model
    type (dense, sparse), else mnrl."""
    if loss != "auto":
        return loss
    return "batch_kl" if (train_dir / SCORES_FILE).exists() and model_type in BATCH_KL_MODEL_TYPES else "mnrl"


def regularizer_weight_setting(weight: float | None) -> float:
    if weight is not None and weight < 0:
        raise ValueError(f"FLOPS regulariser weights are >= 0 (got {weight}); leave them null for the recipe default")
    return -1.0 if weight is None else weight


@asset(partitions_def=index_partitions, group_name="training", deps=["mined_negatives"], kinds={"pytorch"})
def trained_model(context: AssetExecutionContext, config: TrainedModelConfig, storage: ArtifactStorage,
                  base_model: BaseModelResource, pipes_subprocess_client: PipesSubprocessClient,
                  sagemaker_training: SageMakerTrainingResource) -> MaterializeResult:
    """A sentence-transformers model folder (a SparseEncoder for sparse model types); loss and throughput
    stream back through Dagster Pipes.

    The same entry point runs in a local subprocess (GPU when there is one) or as a SageMaker training job.
    """
    index = context.partition_key
    train_dir = storage.fetch(index, "mined_negatives")
    available = mined_negative_count(train_dir / "train.jsonl")
    num_negatives = available if config.num_negatives < 0 else config.num_negatives
    if num_negatives > available:
        raise ValueError(f"num_negatives={num_negatives} but mined_negatives holds {available} per row; "
                         "re-materialize mined_negatives with more negatives")
    loss = chosen_loss(config.loss, base_model.model_type, train_dir)
    # Fail here rather than in the training job when the loss needs teacher scores that the rows lack.
    teacher_labels([next(read_jsonl(train_dir / "train.jsonl"), {})], num_negatives, loss)
    if loss == "batch_kl" and not (train_dir / SCORES_FILE).exists():
        raise ValueError("loss 'batch_kl' distils the hybrid teacher's score matrix: materialize mined_negatives "
                         "with teacher 'hybrid' first")
    unset = {"epochs": config.epochs, "batch_size": config.batch_size, "learning_rate": config.learning_rate}
    if loss == "batch_kl":
        batch_kl_unset = {**unset, "max_steps": config.max_steps, "max_seq_length": config.max_seq_length,
                          "candidates_per_query": config.candidates_per_query}
        chosen, smart_metadata = smart_defaults.fill_batch_kl(context, batch_kl_unset, base_model.model_type)
    else:
        chosen, smart_metadata = smart_defaults.fill(context, unset, base_model.model_type,
                                                     smart_defaults.sampled_documents(storage, index))
        chosen.update(max_steps=config.max_steps or 0, max_seq_length=config.max_seq_length,
                      candidates_per_query=config.candidates_per_query or Hyperparameters.candidates_per_query)
    hp = Hyperparameters(model_type=base_model.model_type, base_model=base_model.model_name,
                         epochs=chosen["epochs"], batch_size=chosen["batch_size"],
                         learning_rate=chosen["learning_rate"], warmup_ratio=config.warmup_ratio,
                         max_seq_length=base_model.max_seq_length, num_negatives=num_negatives,
                         train_max_seq_length=chosen["max_seq_length"] or 0,
                         max_steps=chosen["max_steps"],
                         precision=config.precision, seed=config.seed, loss=loss,
                         candidates_per_query=chosen["candidates_per_query"],
                         soup_size=config.soup_size,
                         student_candidates_per_query=config.student_candidates_per_query,
                         student_candidates_every=config.student_candidates_every,
                         teacher_temperature=config.teacher_temperature,
                         average_weights_from=config.average_weights_from,
                         untie_output_embeddings=config.untie_output_embeddings,
                         dropout=-1.0 if config.dropout is None else config.dropout,
                         output_bias_learning_rate=config.output_bias_learning_rate or 0.0,
                         score_scale_learning_rate=config.score_scale_learning_rate or 0.0,
                         # Hyperparameters reads a negative weight as "the recipe default".
                         query_regularizer_weight=regularizer_weight_setting(config.query_regularizer_weight),
                         document_regularizer_weight=regularizer_weight_setting(config.document_regularizer_weight))
    if hp.soup_size > 1:
        context.log.info(f"training a soup of {hp.soup_size} models (seeds {hp.seed} to {hp.seed + hp.soup_size - 1}), "
                         f"saved as the average of their weights; soup_size: 1 trains one model in a "
                         f"{hp.soup_size}th of the time")
    folder = storage.artifact_dir(index, "trained_model")
    write_json(folder / "hyperparameters.json", hp.to_dict())
    model_dir = folder / "model"
    command = [*TRAINING_COMMAND, "--train-dir", str(train_dir), "--model-dir", str(model_dir),
               "--hyperparameters", str(folder / "hyperparameters.json")]
    environment = {"TOKENIZERS_PARALLELISM": "false"}
    backend = sagemaker_training.default_backend if config.backend == "auto" else config.backend
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
    uri = storage.publish(index, "trained_model")
    return MaterializeResult(metadata={
        **pipes_result.metadata,
        **smart_metadata,
        "path": MetadataValue.path(uri + "/model"),
        "base_model": base_model.model_name,
        "model_type": base_model.model_type,
        "hyperparameters": MetadataValue.json(hp.to_dict()),
        "loss_curve": image(loss_curve_png(log["loss_history"]), "training loss"),
    })
