"""evaluation_report: BM25 vs base model vs tuned model on the held-out synthetic queries."""

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
from pydantic import Field

from finetune_assets.core.data.pairs import document_text
from finetune_assets.core.jsonl import read_json, read_jsonl, write_json
from finetune_assets.core.plots import metric_bars_png
from finetune_assets.core.retrieval.evaluation import TABLE_METRICS, compare_systems
from finetune_assets.core.retrieval.retrieval import encode
from finetune_assets.core.retrieval.saved_embeddings import embeddings_reusing_saved, model_identity
from finetune_assets.core.training.batch_distillation import DOCUMENTS_FILE
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.metadata import image
from finetune_assets.stages.run_config import check_run_config

REPORT_FILE = "report.json"
# Tie order for the recommendation: the tuned model inside a hybrid query first, the plain BM25 index last.
HYBRID_PREFERENCE = ("hybrid_tuned", "tuned", "hybrid_base", "base", "bm25")


class EvaluationReportConfig(Config):
    tolerance: float = Field(default=0.01, ge=-1, le=1, description="Largest nDCG@10 drop from the base model that "
                             "still passes the quality gate (negative = the tuned model must gain at least that "
                             "much).")


def held_out_judgements(pairs: list[dict]) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """Each held-out query is judged relevant to the document it was written for."""
    queries, qrels = {}, {}
    for number, pair in enumerate(pairs, start=1):
        query_id = f"q{number}"
        queries[query_id] = pair["query"]
        qrels[query_id] = {pair["doc_id"]: 1}
    return queries, qrels


def held_out_query_types(pairs: list[dict]) -> dict[str, list[str]]:
    """The query ids of held_out_judgements grouped by the generator's query type (factoid, conceptual, ...)."""
    groups: dict[str, list[str]] = {}
    for query_id, pair in zip(held_out_judgements(pairs)[0], pairs):  # the same ids, in the same order
        groups.setdefault(pair.get("query_type") or "unknown", []).append(query_id)
    return groups


def recommended_system(results: dict[str, dict[str, float]], metric: str = "ndcg@10") -> str:
    """The system to deploy: the best by `metric`; on a tie the one listed first in HYBRID_PREFERENCE."""
    ranked = [name for name in HYBRID_PREFERENCE if name in results]
    return max(ranked, key=lambda name: results[name][metric])


@asset(partitions_def=index_partitions, group_name="evaluation",
       deps=["raw_corpus", "training_pairs", "mined_negatives", "trained_model"], kinds={"python"})
def evaluation_report(context: AssetExecutionContext, config: EvaluationReportConfig, storage: ArtifactStorage,
                      base_model: BaseModelResource) -> MaterializeResult:
    """nDCG@10, MRR@10, MAP@100, Recall@1/5/10/100 and Precision@1/5/10 for each system, as JSON, table and chart.

    Sparse model types also get active dimensions per query / document and FLOPS, the tuned model's documents
    pruned as the ingest pipeline will prune them: `document_prune_ratio`, raised (at most to 0.2) until its FLOPS
    on these queries are no more than the base model's. The inference-free baseline is the base SPLADE with IDF
    query weights from this corpus, untrained.
    """
    check_run_config(context)
    index = context.partition_key
    documents = list(read_jsonl(storage.fetch(index, "raw_corpus") / "documents.jsonl"))
    pairs = list(read_jsonl(storage.fetch(index, "training_pairs") / "held_out.jsonl"))
    tuned_dir = storage.fetch(index, "trained_model") / "model"
    queries, qrels = held_out_judgements(pairs)
    texts = [document_text(d) for d in documents]
    doc_ids = [d["id"] for d in documents]
    baseline = base_model.load_baseline(texts)
    saved = None
    if base_model.model_type == "dense":  # mined_negatives saved the base model's training-document embeddings
        saved = embeddings_reusing_saved(
            storage.fetch(index, "mined_negatives"), DOCUMENTS_FILE,
            model_identity(base_model.model_name, base_model.max_seq_length), doc_ids, texts,
            lambda missing: encode(baseline, missing, batch_size=base_model.batch_size))
    if saved is not None:
        context.log.info(f"base model: reused the embeddings of {saved[1]:,} of {len(texts):,} documents from "
                         "mined_negatives")
    comparison = compare_systems(
        doc_ids, texts, queries, qrels, {"base": baseline, "tuned": base_model.load(str(tuned_dir))},
        batch_size=base_model.batch_size, document_prune_ratios={"tuned": base_model.prune_ratio},
        flops_ceilings={"tuned": "base"},  # the tuned model's index never costs more per search than the base's
        doc_embeddings={"base": saved[0]} if saved is not None else None,
    )
    # Hybrid rows: BM25 fused with each model as an OpenSearch hybrid query, the setting chosen on these queries.
    for system in ("base", "tuned"):
        comparison.add_hybrid(system, qrels)
    gain = comparison.gain()
    recommended = recommended_system(comparison.results)
    report = {**comparison.to_dict(), "index": index, "model_type": base_model.model_type,
              "base_model": base_model.model_name,
              "tuned_model": str(tuned_dir), "tolerance": config.tolerance,
              "document_prune_ratio": comparison.sparsity.get("tuned", {}).get("document_prune_ratio", 0.0),
              "evaluated_on": "held-out synthetic queries (documents never seen in training)",
              # factoid queries share their document's words and favour BM25 more than the rest do
              "ndcg@10_by_query_type": comparison.ndcg_by_group(held_out_query_types(pairs)),
              "recommended": recommended}
    folder = storage.artifact_dir(index, "evaluation_report", run_id=context.run.run_id)
    write_json(folder / REPORT_FILE, report)
    (folder / "report.md").write_text(comparison.markdown() + "\n", encoding="utf-8")
    chart = metric_bars_png(comparison.results, TABLE_METRICS)
    (folder / "metrics.png").write_bytes(chart)
    uri = storage.publish(index, "evaluation_report", folder)
    context.log.info(f"nDCG@10 base {comparison.results['base']['ndcg@10']:.4f} -> tuned "
                     f"{comparison.results['tuned']['ndcg@10']:.4f} ({gain:+.4f}) on {comparison.judged_queries} queries")
    ci = report.get("tuned_minus_base_ndcg@10", {})
    sparsity = {f"{key}_tuned": value for key, value in comparison.sparsity.get("tuned", {}).items()}
    return MaterializeResult(metadata={
        **sparsity,
        "path": MetadataValue.path(uri),
        "judged_queries": comparison.judged_queries,
        "documents": comparison.documents,
        "base_embeddings_reused": saved[1] if saved is not None else 0,
        "ndcg@10_bm25": comparison.results["bm25"]["ndcg@10"],
        "ndcg@10_base": comparison.results["base"]["ndcg@10"],
        "ndcg@10_tuned": comparison.results["tuned"]["ndcg@10"],
        "ndcg@10_gain": gain,
        "ndcg@10_gain_ci95": MetadataValue.json([ci.get("ci95_low"), ci.get("ci95_high")]),
        "ndcg@10_hybrid_base": comparison.results["hybrid_base"]["ndcg@10"],
        "ndcg@10_hybrid_tuned": comparison.results["hybrid_tuned"]["ndcg@10"],
        "hybrid_setting_tuned": comparison.hybrid["hybrid_tuned"]["name"],
        "recommended": recommended,
        "ndcg@10_by_query_type": MetadataValue.json(report["ndcg@10_by_query_type"]),
        "report": MetadataValue.md(comparison.markdown()),
        "chart": image(chart, "metrics per system"),
    })


def quality_gate(report: dict) -> tuple[bool, str]:
    """Whether the tuned model may be deployed (not worse than the base model beyond the tolerance), and why."""
    base, tuned = report["results"]["base"]["ndcg@10"], report["results"]["tuned"]["ndcg@10"]
    tolerance = report["tolerance"]
    passed = tuned >= base - tolerance
    verdict = ("passes" if passed else "FAILS: the tuned model is not deployed; the deploy stage falls back to the "
               "base model's search where it beats BM25 on these queries, else to plain BM25 search")
    return passed, (f"tuned nDCG@10 {tuned:.4f} vs base {base:.4f} (gain {tuned - base:+.4f}, tolerance "
                    f"{tolerance}) on {report['judged_queries']} held-out queries: {verdict}")


@asset_check(asset=evaluation_report, partitions_def=index_partitions,
             description="Fails when the tuned model is worse than the base model beyond the tolerance; the deploy "
                         "stage then registers no model and delivers BM25 search, saying so.")
def tuned_not_worse_than_base(context: AssetCheckExecutionContext, storage: ArtifactStorage) -> AssetCheckResult:
    report = read_json(storage.fetch(context.partition_key, "evaluation_report") / REPORT_FILE)
    passed, description = quality_gate(report)
    return AssetCheckResult(
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata={"ndcg@10_base": report["results"]["base"]["ndcg@10"],
                  "ndcg@10_tuned": report["results"]["tuned"]["ndcg@10"], "tolerance": report["tolerance"]},
    )
