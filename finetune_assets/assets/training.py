"""trained_model: the fine-tuned model, trained by the shared entry point in a Dagster Pipes subprocess."""

import sys

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, PipesSubprocessClient, asset

from finetune_assets.assets.metadata import image
from finetune_assets.config import TrainedModelConfig
from finetune_assets.core.dense_training import Hyperparameters
from finetune_assets.core.jsonl import read_json, read_jsonl, write_json
from finetune_assets.core.plots import loss_curve_png
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.storage import ArtifactStorage

TRAINING_COMMAND = [sys.executable, "-m", "finetune_assets.training"]


def mined_negative_count(train_file) -> int:
    first = next(read_jsonl(train_file), {})
    return sum(1 for key in first if key.startswith("negative_") and not key.endswith(("_id", "_score")))


@asset(partitions_def=index_partitions, group_name="finetune", deps=["mined_negatives"], kinds={"pytorch"})
def trained_model(context: AssetExecutionContext, config: TrainedModelConfig, storage: ArtifactStorage,
                  base_model: BaseModelResource, pipes_subprocess_client: PipesSubprocessClient) -> MaterializeResult:
    """A sentence-transformers model folder; loss and throughput stream back through Dagster Pipes."""
    index = context.partition_key
    train_dir = storage.fetch(index, "mined_negatives")
    available = mined_negative_count(train_dir / "train.jsonl")
    num_negatives = available if config.num_negatives < 0 else config.num_negatives
    if num_negatives > available:
        raise ValueError(f"num_negatives={num_negatives} but mined_negatives holds {available} per row; "
                         "re-materialize mined_negatives with more negatives")
    hp = Hyperparameters(base_model=base_model.base_model, epochs=config.epochs, batch_size=config.batch_size,
                         learning_rate=config.learning_rate, warmup_ratio=config.warmup_ratio,
                         max_seq_length=base_model.max_seq_length, num_negatives=num_negatives,
                         precision=config.precision, seed=config.seed)
    folder = storage.artifact_dir(index, "trained_model")
    write_json(folder / "hyperparameters.json", hp.to_dict())
    model_dir = folder / "model"
    command = [*TRAINING_COMMAND, "--train-dir", str(train_dir), "--model-dir", str(model_dir),
               "--hyperparameters", str(folder / "hyperparameters.json")]
    pipes_result = pipes_subprocess_client.run(
        command=command, context=context, env={"TOKENIZERS_PARALLELISM": "false"},
    ).get_materialize_result()
    log = read_json(model_dir / "training_log.json")
    uri = storage.publish(index, "trained_model")
    return MaterializeResult(metadata={
        **pipes_result.metadata,
        "path": MetadataValue.path(uri + "/model"),
        "base_model": base_model.base_model,
        "hyperparameters": MetadataValue.json(hp.to_dict()),
        "loss_curve": image(loss_curve_png(log["loss_history"]), "training loss"),
    })
