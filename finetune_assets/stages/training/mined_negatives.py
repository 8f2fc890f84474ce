"""mined_negatives: the training pairs plus hard negatives mined with the base model."""

import time
from typing import Optional

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field, field_validator, model_validator

from finetune_assets.core.data.pairs import document_text
from finetune_assets.core.jsonl import read_jsonl, write_json, write_jsonl
from finetune_assets.core.retrieval.mining import SOURCES, MiningResult, MiningSettings, mine_hard_negatives
from finetune_assets.core.retrieval.retrieval import encode
from finetune_assets.core.retrieval.saved_embeddings import model_identity, save_embeddings
from finetune_assets.core.teachers.hybrid_teacher import (
    HybridTeacher,
    check_teacher_weights,
    companion_models,
    companion_vectors,
)
from finetune_assets.core.teachers.teacher import CrossEncoderTeacher, add_teacher_scores, load_teacher
from finetune_assets.core.teachers.teacher_top_k import TEACHER_TOP_K, reached_rows
from finetune_assets.core.training.batch_distillation import DOCUMENTS_FILE, teacher_top_k
from finetune_assets.core.training.training_length import COUNTS_FILE
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.sagemaker_pipes import SageMakerTrainingResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages import smart_defaults
from finetune_assets.stages.metadata import table
from finetune_assets.stages.run_config import check_run_config, op_config
from finetune_assets.stages.training.trained_model import batch_kl_rows_read

# Settings left at None are filled from core/cost/smart_defaults.toml, by model type and corpus size.
_SMART = "null = the smart-defaults table's value for the model type and corpus size"


# Mining options measured without gain and off by default; MinedNegativesConfig sets them through its
# `experimental` mapping, whose keys are these MiningSettings fields.
EXPERIMENTAL_MINING = ("roundtrip_top_k", "roundtrip_rerank_depth")


class MinedNegativesConfig(Config):
    num_negatives: Optional[int] = Field(default=None, ge=0, description="Hard negatives per pair (0 = in-batch "
                                         f"negatives only; {_SMART}).")
    range_min: int = Field(default=3, ge=0, description="Top-ranked candidates skipped, as likely unjudged "
                           "positives.")
    range_max: int = Field(default=50, ge=1, description="Lowest rank a candidate may come from; more than "
                           "range_min.")
    relative_margin: Optional[float] = Field(default=0.05, ge=0, lt=1, description="A negative must score below "
                                             "the positive's score x (1 - margin) (null = no margin guard).")
    negative_sources: list[str] = Field(default=["dense"], min_length=1, description="Candidate sources merged by "
                                        "rank, each with range_min and range_max: the base model (dense) and BM25 "
                                        "(bm25).")
    teacher_margin: Optional[float] = Field(default=1.0, ge=0, description="With a teacher: drop a candidate it "
                                            "scores above the positive's score minus this, in teacher units, as a "
                                            "likely false negative (null = no teacher guard).")
    teacher: str = Field(default="auto", description="Teacher of the distillation losses: hybrid (BM25, the base "
                         "model and teacher_companion, z-scores summed), default (the packaged ms-marco-MiniLM-L-12 "
                         "cross-encoder), a CrossEncoder path or hub id, '' for none, or auto = the hybrid "
                         "teacher's score matrix for batch_kl with negatives mined as with no teacher.")
    teacher_companion: str = Field(default="auto", description="Models beside BM25 and the base model in the hybrid "
                                   "teacher, comma-separated folders or ids (auto = those of all-MiniLM-L6-v2, "
                                   "SPLADE-tiny and bge-small-en the base model is not, all-MiniLM-L6-v2 beside an "
                                   "inference-free one; '' = none).")
    teacher_weights: Optional[list[float]] = Field(default=None, description="The hybrid teacher's weights of BM25, "
                                                   "the base model and each teacher_companion, each >= 0 and "
                                                   "summing to 1 (null = by kind: BM25 0.2, each sparse signal "
                                                   "0.2, the dense ones share the rest; with one companion BM25 "
                                                   "0.3, dense 0.4, sparse 0.3).")
    teacher_top_k: int = Field(default=TEACHER_TOP_K, ge=1, description="Documents kept per training query from "
                               "the teacher's scores: exact up to this many training documents, the rest summed "
                               "up by their mean and spread; its files take rows x K x 6 bytes.")
    max_rows: Optional[int] = Field(default=None, ge=0, description="Training pairs mined and scored, drawn by a "
                                    "seeded shuffle (null = with the hybrid teacher, the rows the run's "
                                    "trained_model reads by its max_steps or training_budget_minutes, else every "
                                    "pair; 0 = every pair).")
    teacher_max_length: int = Field(default=256, ge=1, description="Teacher tokens per (query, passage) pair.")
    teacher_threads: int = Field(default=0, ge=0, description="ONNX teacher CPU threads (0 = onnxruntime's "
                                 "default).")
    experimental: dict = Field(default={}, description="Mining options measured without gain; keys are "
                               f"MiningSettings fields ({', '.join(EXPERIMENTAL_MINING)}).")

    @field_validator("negative_sources")
    @classmethod
    def _known_sources(cls, sources: list[str]) -> list[str]:
        unknown = [source for source in sources if source not in SOURCES]
        if unknown or len(set(sources)) != len(sources):
            raise ValueError(f"negative_sources are distinct names out of {', '.join(SOURCES)}, got {sources}")
        return sources

    @field_validator("teacher_weights")
    @classmethod
    def _weights_sum_to_one(cls, weights: list[float] | None) -> list[float] | None:
        if weights is not None and (any(w < 0 for w in weights) or abs(sum(weights) - 1) > 1e-6):
            raise ValueError(f"teacher_weights must each be >= 0 and sum to 1, got {weights}")
        return weights

    @field_validator("experimental")
    @classmethod
    def _known_experimental_options(cls, options: dict) -> dict:
        unknown = sorted(set(options) - set(EXPERIMENTAL_MINING))
        if unknown:
            raise ValueError(f"experimental: unknown option(s) {', '.join(unknown)}; valid: "
                             f"{', '.join(EXPERIMENTAL_MINING)}")
        for name, value in options.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"experimental {name} must be a whole number >= 0, got {value!r}")
        MiningSettings(num_negatives=0, **options)  # roundtrip_rerank_depth: 0 or at least roundtrip_top_k
        return options

    @model_validator(mode="after")
    def _rank_window(self) -> "MinedNegativesConfig":
        if self.range_max <= self.range_min:
            raise ValueError(f"range_max ({self.range_max}) must be greater than range_min ({self.range_min})")
        return self


@asset(partitions_def=index_partitions, group_name="training", deps=["raw_corpus", "training_pairs"],
       kinds={"python"})
def mined_negatives(context: AssetExecutionContext, config: MinedNegativesConfig, storage: ArtifactStorage,
                    base_model: BaseModelResource, sagemaker_training: SageMakerTrainingResource) -> MaterializeResult:
    """Training rows `query, positive, negative_1..n`; n = 0 keeps in-batch negatives only."""
    check_run_config(context)
    index = context.partition_key
    if config.teacher_weights is not None:  # fail before mining, not after
        companions = companion_models(config.teacher_companion, base_model.model_type, base_model.model_name)
        if not companions:
            raise ValueError("teacher_weights weigh BM25, the base model and teacher_companion, but "
                             "teacher_companion is empty: set a companion or leave teacher_weights null")
        check_teacher_weights(config.teacher_weights, len(companions))
    pairs = list(read_jsonl(storage.fetch(index, "training_pairs") / "train.jsonl"))
    train_doc_ids = {p["doc_id"] for p in pairs}
    automatic = config.teacher.strip().lower() == "auto"  # the top-K store only: mining runs as with no teacher
    writes_store = automatic or config.teacher.strip().lower() == "hybrid"
    available = len(pairs)
    # Only the pairs training reads are mined and scored; the candidates stay every training pair's document.
    limit = config.max_rows
    if limit is None:  # the rows the run's trained_model reads when it distils the store, else every pair
        training = op_config(context.run.run_config, "trained_model")
        limit = batch_kl_rows_read(training, base_model, available, sagemaker_training) if writes_store else 0
    pairs = [pairs[i] for i in reached_rows(available, limit)]
    if len(pairs) < available:
        context.log.info(f"mining and scoring {len(pairs):,} of the {available:,} training pairs, what training "
                         "reads (max_rows)")
    # Candidates come from training documents only, so held-out documents never enter training.
    sample = list(read_jsonl(storage.fetch(index, "raw_corpus") / "documents.jsonl"))
    documents = [d for d in sample if d["id"] in train_doc_ids]
    chosen, smart_metadata = smart_defaults.fill(context, {"num_negatives": config.num_negatives},
                                                 base_model.model_type, len(sample))
    num_negatives = chosen["num_negatives"]
    settings = MiningSettings(num_negatives=num_negatives, range_min=config.range_min,
                              range_max=config.range_max, relative_margin=config.relative_margin,
                              sources=tuple(config.negative_sources), teacher_margin=config.teacher_margin,
                              **config.experimental)
    started = time.perf_counter()
    model = base_model.load() if num_negatives > 0 or settings.roundtrip_top_k > 0 else None
    # The teacher, when configured, also judges the round trip and guards against false negatives.
    teacher = None if automatic else load_teacher(config.teacher, max_length=config.teacher_max_length,
                                                  threads=config.teacher_threads)
    result = mine_hard_negatives(model, pairs, [d["id"] for d in documents],
                                 [document_text(d) for d in documents], settings,
                                 batch_size=base_model.batch_size, teacher=teacher)
    teacher_metadata = score_with_teacher(context, teacher, result.rows)
    folder = storage.artifact_dir(index, "mined_negatives", run_id=context.run.run_id)
    write_jsonl(folder / "train.jsonl", result.rows)
    write_json(folder / COUNTS_FILE, {"rows": len(result.rows), "training_pairs": available})
    if automatic or isinstance(teacher, HybridTeacher):  # each query's top documents and scores, for batch_kl
        teacher_metadata.update(write_teacher_top_k(context, teacher or HybridTeacher(), result, documents, folder,
                                                     base_model=base_model, model=model,
                                                     companions=companion_models(config.teacher_companion,
                                                                                 base_model.model_type,
                                                                                 base_model.model_name),
                                                     weights=config.teacher_weights, k=config.teacher_top_k))
    uri = storage.publish(index, "mined_negatives", folder)
    examples = [{"query": r["query"], "positive": r["positive"], "negative_1": r.get("negative_1", "")}
                for r in result.rows[:5]]
    context.log.info(f"mined {num_negatives} negative(s) for {len(result.rows)} pairs; "
                     f"guard removed {dict(result.removed)}")
    roundtrip = {}
    if result.roundtrip:
        roundtrip = {**result.roundtrip.metadata(), "roundtrip_dropped_examples": table(
            result.roundtrip.dropped_examples, ["query", "doc_id", "rank"])}
        context.log.info(f"round trip kept {len(result.roundtrip.kept)} of {len(pairs)} queries")
    return MaterializeResult(metadata={
        **smart_metadata,
        "path": MetadataValue.path(uri),
        "rows": len(result.rows),
        "training_pairs": available,
        "num_negatives": num_negatives,
        "candidate_documents": len(documents),
        "candidates_seen": result.candidates_seen,
        "removed_by_guard": MetadataValue.json(dict(result.removed)),
        "negatives_by_source": MetadataValue.json(dict(result.chosen_sources)),
        "teacher_pairs_scored_in_mining": result.teacher_pairs_scored,
        **roundtrip,
        "rows_filled_with_random_negatives": result.pairs_without_negative,
        "seconds": round(time.perf_counter() - started, 2),
        "examples": table(examples, ["query", "positive", "negative_1"]),
        **teacher_metadata,
    })


def write_teacher_top_k(context: AssetExecutionContext, teacher: HybridTeacher, result: MiningResult,
                        documents: list, folder, *, base_model: BaseModelResource, model=None,
                        companions: list[str] | None = None, weights: list[float] | None = None,
                        k: int = TEACHER_TOP_K) -> dict:
    """The hybrid teacher's top documents and scores per training row (teacher_top_k.py), memory-mapped files."""
    started = time.perf_counter()
    metadata = {}
    rows = result.rows
    queries, texts = [r["query"] for r in rows], [document_text(d) for d in documents]
    if getattr(teacher, "queries", None) != queries:  # not bound by mining (no teacher there, or a round trip)
        if result.doc_embeddings is not None:  # mining encoded them already
            query_vectors, doc_vectors = result.query_embeddings, result.doc_embeddings
        else:
            model = model or base_model.load()
            query_vectors = encode(model, queries, batch_size=base_model.batch_size, role="query")
            doc_vectors = encode(model, texts, batch_size=base_model.batch_size)
        teacher.bind(queries, query_vectors, texts, doc_vectors)
    if companions:
        companion_started = time.perf_counter()
        encoded = [(name, *companion_vectors(name, queries, texts, max_seq_length=base_model.max_seq_length,
                                             batch_size=base_model.batch_size)) for name in companions]
        teacher.add_companions([(name, kind, query_vectors, doc_vectors)
                                for name, query_vectors, doc_vectors, kind in encoded], weights,
                               base_kind=base_model.model_type)
        metadata["teacher_companion_seconds"] = round(time.perf_counter() - companion_started, 2)
    context.log.info(f"teacher: {teacher.name}")
    top_started = time.perf_counter()
    store = teacher_top_k(teacher, rows, [d["id"] for d in documents], folder=folder, k=k,
                          on_progress=lambda done, total: context.log.info(f"teacher top-K {done}/{total} rows"))
    write_jsonl(folder / DOCUMENTS_FILE, [{"id": d["id"], "text": t} for d, t in zip(documents, texts)])
    if base_model.model_type == "dense":  # evaluation_report ranks these documents with the same base model
        save_embeddings(folder, teacher.doc_embeddings, model_identity(base_model.model_name,
                                                                       base_model.max_seq_length))
    return {**metadata, "teacher": teacher.name, "teacher_rows": store.rows, "teacher_top_k": store.k,
            "teacher_documents": store.documents,
            "teacher_top_k_seconds": round(time.perf_counter() - top_started, 2),
            "teacher_seconds_total": round(time.perf_counter() - started, 2),
            "span_queries": sum(1 for r in rows if r.get("exclude_source"))}


def score_with_teacher(context: AssetExecutionContext, teacher: CrossEncoderTeacher | None, rows: list) -> dict:
    """Teacher scores for distillation losses, computed once here so every training run reuses them."""
    if teacher is None:
        return {}
    logged = [0]

    def on_progress(done: int, total: int) -> None:
        if done == total or done - logged[0] >= total / 10:
            logged[0] = done
            context.log.info(f"teacher scored {done}/{total} pairs")

    scoring = add_teacher_scores(rows, teacher, on_progress=on_progress)
    context.log.info(f"{teacher.name}: {scoring.pairs} pairs in {scoring.seconds} s "
                     f"({scoring.pairs_per_second} pairs/s), mean margin {scoring.mean_margin}")
    metadata = {
        "teacher": teacher.name,
        "teacher_pairs_scored": scoring.pairs,
        "teacher_scores_reused": scoring.reused,
        "teacher_pairs_per_second": scoring.pairs_per_second,
        "teacher_seconds": scoring.seconds,
        # Negatives the teacher prefers to the positive are likely false negatives.
        "teacher_negatives_above_positive": scoring.negatives_above_positive,
    }
    if scoring.mean_margin is not None:  # mean teacher logit of the positive minus each negative
        metadata["teacher_mean_margin"] = scoring.mean_margin
    return metadata
