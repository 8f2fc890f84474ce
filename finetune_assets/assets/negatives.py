"""mined_negatives: the training pairs plus hard negatives mined with the base model."""

import time

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from finetune_assets.assets.metadata import table
from finetune_assets.config import MinedNegativesConfig
from finetune_assets.core.jsonl import read_jsonl, write_jsonl
from finetune_assets.core.mining import MiningSettings, mine_hard_negatives
from finetune_assets.core.pairs import document_text
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.storage import ArtifactStorage


@asset(partitions_def=index_partitions, group_name="finetune", deps=["raw_corpus", "training_pairs"],
       kinds={"python"})
def mined_negatives(context: AssetExecutionContext, config: MinedNegativesConfig, storage: ArtifactStorage,
                    base_model: BaseModelResource) -> MaterializeResult:
    """Training rows `query, positive, negative_1..n`; n = 0 keeps in-batch negatives only."""
    index = context.partition_key
    pairs = list(read_jsonl(storage.fetch(index, "training_pairs") / "train.jsonl"))
    train_doc_ids = {p["doc_id"] for p in pairs}
    # Candidates come from training documents only, so held-out documents never enter training.
    documents = [d for d in read_jsonl(storage.fetch(index, "raw_corpus") / "documents.jsonl")
                 if d["id"] in train_doc_ids]
    settings = MiningSettings(num_negatives=config.num_negatives, range_min=config.range_min,
                              range_max=config.range_max, relative_margin=config.relative_margin)
    started = time.perf_counter()
    model = base_model.load() if config.num_negatives > 0 else None
    result = mine_hard_negatives(model, pairs, [d["id"] for d in documents],
                                 [document_text(d) for d in documents], settings,
                                 batch_size=base_model.batch_size)
    folder = storage.artifact_dir(index, "mined_negatives")
    write_jsonl(folder / "train.jsonl", result.rows)
    uri = storage.publish(index, "mined_negatives")
    examples = [{"query": r["query"], "positive": r["positive"], "negative_1": r.get("negative_1", "")}
                for r in result.rows[:5]]
    context.log.info(f"mined {config.num_negatives} negative(s) for {len(result.rows)} pairs; "
                     f"guard removed {dict(result.removed)}")
    return MaterializeResult(metadata={
        "path": MetadataValue.path(uri),
        "rows": len(result.rows),
        "num_negatives": config.num_negatives,
        "candidate_documents": len(documents),
        "candidates_seen": result.candidates_seen,
        "removed_by_guard": MetadataValue.json(dict(result.removed)),
        "rows_filled_with_random_negatives": result.pairs_without_negative,
        "seconds": round(time.perf_counter() - started, 2),
        "examples": table(examples, ["query", "positive", "negative_1"]),
    })
