"""Asset checks: data quality along the way, and the quality gate before registration."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, asset_check

from finetune_assets.assets.corpus import raw_corpus
from finetune_assets.assets.evaluation import REPORT_FILE, evaluation_report
from finetune_assets.assets.pairs import training_pairs
from finetune_assets.core.jsonl import read_json, read_jsonl
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.storage import ArtifactStorage


@asset_check(asset=evaluation_report, blocking=True, partitions_def=index_partitions,
             description="Stops registration when the tuned model is worse than the base model beyond the tolerance.")
def tuned_not_worse_than_base(context: AssetCheckExecutionContext, storage: ArtifactStorage) -> AssetCheckResult:
    report = read_json(storage.fetch(context.partition_key, "evaluation_report") / REPORT_FILE)
    base, tuned = report["results"]["base"]["ndcg@10"], report["results"]["tuned"]["ndcg@10"]
    tolerance = report["tolerance"]
    passed = tuned >= base - tolerance
    verdict = "passes" if passed else "FAILS: the tuned model is not registered"
    return AssetCheckResult(
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        description=(f"tuned nDCG@10 {tuned:.4f} vs base {base:.4f} (gain {tuned - base:+.4f}, "
                     f"tolerance {tolerance}) on {report['judged_queries']} held-out queries: {verdict}"),
        metadata={"ndcg@10_base": base, "ndcg@10_tuned": tuned, "tolerance": tolerance},
    )


@asset_check(asset=raw_corpus, partitions_def=index_partitions,
             description="Warns when more than a fifth of the records were quarantined.")
def few_records_quarantined(context: AssetCheckExecutionContext, storage: ArtifactStorage) -> AssetCheckResult:
    folder = storage.fetch(context.partition_key, "raw_corpus")
    kept = sum(1 for _ in read_jsonl(folder / "documents.jsonl"))
    quarantined = sum(1 for _ in read_jsonl(folder / "quarantine.jsonl"))
    share = quarantined / max(1, kept + quarantined)
    return AssetCheckResult(passed=share <= 0.2, severity=AssetCheckSeverity.WARN,
                            description=f"{quarantined} quarantined vs {kept} sampled documents ({share:.1%})",
                            metadata={"quarantined_share": share})


@asset_check(asset=training_pairs, partitions_def=index_partitions,
             description="Every held-out document is absent from the training pairs (no leakage).")
def held_out_documents_unseen(context: AssetCheckExecutionContext, storage: ArtifactStorage) -> AssetCheckResult:
    folder = storage.fetch(context.partition_key, "training_pairs")
    train_docs = {p["doc_id"] for p in read_jsonl(folder / "train.jsonl")}
    leaked = sorted(train_docs & {p["doc_id"] for p in read_jsonl(folder / "held_out.jsonl")})
    return AssetCheckResult(passed=not leaked, severity=AssetCheckSeverity.ERROR,
                            description=f"{len(leaked)} held-out documents also in training",
                            metadata={"leaked_documents": leaked[:20]})
