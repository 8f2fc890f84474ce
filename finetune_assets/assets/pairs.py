"""training_pairs: cleaned (query, document) pairs, split into train and held-out by document."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from finetune_assets.assets.metadata import table
from finetune_assets.config import TrainingPairsConfig
from finetune_assets.core.jsonl import read_jsonl, write_jsonl
from finetune_assets.core.pairs import QueryFilter, build_pairs
from finetune_assets.core.querygen.bedrock_records import parse_output_record
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.assets.queries import OUTPUT_FILE


def generated_queries(records):
    for record in records:
        parsed = parse_output_record(record)
        for query in parsed.queries:
            yield parsed.record_id, str(query), query.type


@asset(partitions_def=index_partitions, group_name="finetune", deps=["raw_corpus", "bedrock_batch_outputs"],
       kinds={"python"})
def training_pairs(context: AssetExecutionContext, config: TrainingPairsConfig,
                   storage: ArtifactStorage) -> MaterializeResult:
    """Queries that pass the filters (not empty, duplicate, over-long or copied from the document)."""
    index = context.partition_key
    documents = {d["id"]: d for d in read_jsonl(storage.fetch(index, "raw_corpus") / "documents.jsonl")}
    records = read_jsonl(storage.fetch(index, "bedrock_batch_outputs") / OUTPUT_FILE)
    result = build_pairs(generated_queries(records), documents, held_out_fraction=config.held_out_fraction,
                         seed=config.seed, query_filter=QueryFilter(min_words=config.min_words,
                                                                    max_words=config.max_words))
    if not result.train:
        raise ValueError(f"no training pairs left for '{index}': {result.queries_in} queries generated, "
                         f"dropped {dict(result.dropped)}; check the generator output in bedrock_batch_outputs")
    if not result.held_out:
        raise ValueError(f"no held-out pairs for '{index}' ({len(result.train)} train pairs): "
                         "raise held_out_fraction or add documents")
    folder = storage.artifact_dir(index, "training_pairs")
    write_jsonl(folder / "train.jsonl", result.train)
    write_jsonl(folder / "held_out.jsonl", result.held_out)
    kept = len(result.train) + len(result.held_out)
    context.log.info(f"{kept} of {result.queries_in} queries kept; dropped: {dict(result.dropped)}")
    uri = storage.publish(index, "training_pairs")
    return MaterializeResult(metadata={
        "path": MetadataValue.path(uri),
        "queries_generated": result.queries_in,
        "queries_kept": kept,
        "kept_fraction": round(kept / result.queries_in, 3) if result.queries_in else 0.0,
        "train_pairs": len(result.train),
        "held_out_pairs": len(result.held_out),
        "train_documents": len({p["doc_id"] for p in result.train}),
        "held_out_documents": len({p["doc_id"] for p in result.held_out}),
        "dropped": MetadataValue.json(dict(result.dropped)),
        "dropped_examples": table(result.dropped_examples[:10], ["doc_id", "reason", "query"]),
        "train_examples": table(result.train[:8], ["query_type", "query", "positive"]),
    })
