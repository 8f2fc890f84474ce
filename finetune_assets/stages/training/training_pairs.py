"""training_pairs: cleaned (query, document) pairs, split into train and held-out by document."""

from collections import Counter

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from pydantic import Field, model_validator

from finetune_assets.core.data.augment import augment_pairs, load_synonyms
from finetune_assets.core.data.pairs import QueryFilter, build_pairs, document_text, normalize, title_pairs
from finetune_assets.core.data.query_report import query_report
from finetune_assets.core.data.span_queries import span_pairs
from finetune_assets.core.jsonl import read_jsonl, write_jsonl
from finetune_assets.core.querygen.bedrock_records import parse_output_record
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.metadata import table
from finetune_assets.stages.queries.bedrock_batch_outputs import OUTPUT_FILE
from finetune_assets.stages.run_config import check_run_config


class TrainingPairsConfig(Config):
    held_out_fraction: float = Field(default=0.2, gt=0, lt=1, description="Share of documents whose queries are "
                                     "held out for evaluation.")
    min_words: int = Field(default=2, ge=1, description="Shortest query kept, in words (in Korean, Chinese and "
                           "Japanese 2 characters count as a word).")
    max_words: int = Field(default=32, ge=1, description="Longest query kept, in words counted as for min_words.")
    seed: int = Field(default=0, ge=0, description="Seed of the train / held-out split and of the added queries.")
    synonyms_path: str = Field(default="", description="Bilingual synonym dictionary (TSV term<TAB>synonym, or JSON "
                               "{term: [synonyms]}) that adds training query variants with one term swapped, e.g. "
                               "검색 <-> search ('' = off).")
    max_variants_per_query: int = Field(default=1, ge=0, description="Most synonym variants added per training "
                                        "query.")
    title_queries: bool = Field(default=False, description="Also train on each sampled document's title as a query "
                                "for its body.")
    span_queries: int = Field(default=2, ge=0, description="Sentences of each sampled document also used as queries "
                              "with their source masked, which teach the teacher's ranking of the other documents "
                              "(trained_model loss batch_kl; 0 = none).")

    @model_validator(mode="after")
    def _word_bounds(self) -> "TrainingPairsConfig":
        if self.max_words < self.min_words:
            raise ValueError(f"max_words ({self.max_words}) must be >= min_words ({self.min_words})")
        return self


def generated_queries(records):
    for record in records:
        parsed = parse_output_record(record)
        for query in parsed.queries:
            yield parsed.record_id, str(query), query.type


@asset(partitions_def=index_partitions, group_name="training", deps=["raw_corpus", "bedrock_batch_outputs"],
       kinds={"python"})
def training_pairs(context: AssetExecutionContext, config: TrainingPairsConfig,
                   storage: ArtifactStorage) -> MaterializeResult:
    """Queries that pass the filters (not empty, duplicate, over-long or copied from the document)."""
    check_run_config(context)
    index = context.partition_key
    dictionary = load_synonyms(config.synonyms_path) if config.synonyms_path else None  # bad file: fail first
    documents = {d["id"]: d for d in read_jsonl(storage.fetch(index, "raw_corpus") / "documents.jsonl")}
    records = read_jsonl(storage.fetch(index, "bedrock_batch_outputs") / OUTPUT_FILE)
    query_filter = QueryFilter(min_words=config.min_words, max_words=config.max_words)
    result = build_pairs(generated_queries(records), documents, held_out_fraction=config.held_out_fraction,
                         seed=config.seed, query_filter=query_filter)
    titles = []
    if config.title_queries:
        titles = title_pairs(documents.values(), held_out_fraction=config.held_out_fraction, seed=config.seed,
                             query_filter=query_filter,
                             seen={normalize(p["query"]) for p in result.train + result.held_out})
        result.train += titles
        context.log.info(f"{len(titles)} title queries added from {len(documents)} documents")
    spans = []
    if config.span_queries:
        spans = span_pairs(documents.values(), per_document=config.span_queries,
                           held_out_fraction=config.held_out_fraction, seed=config.seed,
                           seen={normalize(p["query"]) for p in result.train + result.held_out})
        result.train += spans
        context.log.info(f"{len(spans)} span queries added from {len(documents)} documents")
    if not result.train:
        raise ValueError(f"no training pairs left for '{index}': {result.queries_in} queries generated, "
                         f"dropped {dict(result.dropped)}; check the generator output in bedrock_batch_outputs")
    if not result.held_out:
        raise ValueError(f"no held-out pairs for '{index}' ({len(result.train)} train pairs): "
                         "raise held_out_fraction or add documents")
    generated_train = len(result.train) - len(titles) - len(spans)
    augmented = None
    if dictionary is not None:  # held-out pairs stay as generated: evaluation measures real queries only
        augmented = augment_pairs(result.train, dictionary, max_variants=config.max_variants_per_query,
                                  seed=config.seed, reserved_queries={normalize(p["query"]) for p in result.held_out})
        result.train = augmented.pairs
        context.log.info(f"{augmented.added} synonym variants added ({dictionary.terms} dictionary terms)")
    folder = storage.artifact_dir(index, "training_pairs", run_id=context.run.run_id)
    write_jsonl(folder / "train.jsonl", result.train)
    write_jsonl(folder / "held_out.jsonl", result.held_out)
    kept = generated_train + len(result.held_out)
    context.log.info(f"{kept} of {result.queries_in} queries kept; dropped: {dict(result.dropped)}")
    generated = [p for p in result.train + result.held_out if p.get("query_type") not in ("title", "span")]
    queries = query_report(generated, documents, doc_text=document_text) if generated else None
    if queries:
        context.log.info(f"generated queries: {queries.summary()}")
    uri = storage.publish(index, "training_pairs", folder)
    return MaterializeResult(metadata={
        "path": MetadataValue.path(uri),
        "queries_generated": result.queries_in,
        "queries_kept": kept,
        "kept_fraction": round(kept / result.queries_in, 3) if result.queries_in else 0.0,
        "train_pairs": len(result.train),
        "title_pairs": len(titles),
        "span_pairs": len(spans),
        "held_out_pairs": len(result.held_out),
        "train_documents": len({p["doc_id"] for p in result.train}),
        "held_out_documents": len({p["doc_id"] for p in result.held_out}),
        # documents per dominant script (latin, hangul, han, kana, ...): a mixed corpus shows its mix here
        "document_scripts": MetadataValue.json(dict(Counter(dict((p["doc_id"], p["script"])
                                                                 for p in result.train + result.held_out).values()))),
        "dropped": MetadataValue.json(dict(result.dropped)),
        "dropped_examples": table(result.dropped_examples[:10], ["doc_id", "reason", "query"]),
        "train_examples": table(result.train[:8], ["query_type", "query", "positive"]),
        **(_synonym_metadata(augmented, dictionary) if dictionary is not None else {}),
        **({"query_report": MetadataValue.json(queries.to_dict()),
            "source_rank1_bm25": queries.source_rank1_bm25} if queries else {}),
    })


def _synonym_metadata(augmented, dictionary) -> dict:
    return {
        "synonym_variants_added": augmented.added,
        "synonym_dictionary_entries": dictionary.entries,
        "synonym_dictionary_terms": dictionary.terms,
        "pairs_with_dictionary_terms": augmented.pairs_with_terms,
        "synonym_examples": table(augmented.examples, ["source_query", "query", "swapped"]),
    }


@asset_check(asset=training_pairs, partitions_def=index_partitions,
             description="Every held-out document is absent from the training pairs (no leakage).")
def held_out_documents_unseen(context: AssetCheckExecutionContext, storage: ArtifactStorage) -> AssetCheckResult:
    folder = storage.fetch(context.partition_key, "training_pairs")
    train_docs = {p["doc_id"] for p in read_jsonl(folder / "train.jsonl")}
    leaked = sorted(train_docs & {p["doc_id"] for p in read_jsonl(folder / "held_out.jsonl")})
    return AssetCheckResult(passed=not leaked, severity=AssetCheckSeverity.ERROR,
                            description=f"{len(leaked)} held-out documents also in training",
                            metadata={"leaked_documents": leaked[:20]})
