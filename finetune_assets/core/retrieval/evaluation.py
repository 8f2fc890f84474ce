"""Compare BM25, the base model and the tuned model on one set of judged queries (dense or sparse models;
sparse ones also report how sparse their vectors are)."""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from finetune_assets.core.retrieval.metrics import DEFAULT_METRICS, Qrels, evaluate_run, per_query
from finetune_assets.core.retrieval.retrieval import bm25_search, dense_search, paired_bootstrap
from finetune_assets.core.retrieval.sparse_retrieval import is_sparse_model, sparse_search

TABLE_METRICS = ("ndcg@10", "mrr@10", "map@100", "recall@1", "recall@5", "recall@10", "recall@100",
                 "precision@1", "precision@5", "precision@10")


@dataclass
class Comparison:
    results: dict[str, dict[str, float]]
    judged_queries: int
    documents: int
    seconds: dict[str, float] = field(default_factory=dict)
    ndcg_per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    sparsity: dict[str, dict[str, float]] = field(default_factory=dict)  # sparse systems only
    runs: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # query id -> ranked doc ids

    def gain(self, system: str = "tuned", baseline: str = "base", metric: str = "ndcg@10") -> float:
        return self.results[system][metric] - self.results[baseline][metric]

    def gain_interval(self, system: str = "tuned", baseline: str = "base") -> tuple[float, float, float]:
        queries = sorted(self.ndcg_per_query[baseline])
        return paired_bootstrap([self.ndcg_per_query[baseline][q] for q in queries],
                                [self.ndcg_per_query[system][q] for q in queries])

    def to_dict(self) -> dict:
        low_high = {}
        if {"tuned", "base"} <= set(self.results):
            mean, low, high = self.gain_interval()
            low_high = {"tuned_minus_base_ndcg@10": {"mean": mean, "ci95_low": low, "ci95_high": high}}
        sparse = {"sparsity": self.sparsity} if self.sparsity else {}
        return {"judged_queries": self.judged_queries, "documents": self.documents,
                "results": self.results, "seconds": self.seconds, **sparse, **low_high}

    def markdown(self, metrics: Sequence[str] = TABLE_METRICS) -> str:
        lines = ["| system | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for system, values in self.results.items():
            lines.append(f"| {system} | " + " | ".join(f"{values[m]:.4f}" for m in metrics) + " |")
        if self.sparsity:
            lines += ["", "| system | active dims per query | active dims per document | FLOPS |", "|---|---|---|---|"]
            lines += [f"| {system} | {s['avg_active_dims_query']:.1f} | {s['avg_active_dims_document']:.1f} | "
                      f"{s['flops']:.4f} |" for system, s in self.sparsity.items()]
        return "\n".join(lines)


def compare_systems(
    doc_ids: Sequence[str],
    doc_texts: Sequence[str],
    queries: Mapping[str, str],
    qrels: Qrels,
    models: Mapping[str, object],
    *,
    include_bm25: bool = True,
    batch_size: int = 64,
    metrics: Sequence[str] = DEFAULT_METRICS,
    precomputed: Mapping[str, tuple[Mapping[str, Sequence[str]], dict | None]] | None = None,
) -> Comparison:
    """Rank the same corpus with each system and score every run on the same judgements.

    `precomputed` maps a system name to an earlier (run, sparsity figures or None) over the same corpus and
    queries, e.g. the base model's, which does not change between benchmark runs.
    """
    judged = {q: text for q, text in queries.items() if q in qrels}
    runs: dict[str, Mapping[str, Sequence[str]]] = {}
    seconds: dict[str, float] = {}
    if include_bm25:
        started = time.perf_counter()
        runs["bm25"] = bm25_search(doc_ids, doc_texts, judged, k=100)
        seconds["bm25"] = round(time.perf_counter() - started, 2)
    sparsity: dict[str, dict[str, float]] = {}
    for name, (run, figures) in (precomputed or {}).items():
        runs[name] = run
        if figures:
            sparsity[name] = figures
    for name, model in models.items():
        if name in runs:
            continue
        started = time.perf_counter()
        if is_sparse_model(model):
            runs[name], figures = sparse_search(model, doc_ids, doc_texts, judged, k=100, batch_size=batch_size)
            sparsity[name] = figures.to_dict()
        else:
            runs[name] = dense_search(model, doc_ids, doc_texts, judged, k=100, batch_size=batch_size)
        seconds[name] = round(time.perf_counter() - started, 2)
    results = {name: evaluate_run(run, qrels, metrics) for name, run in runs.items()}
    per = {name: per_query(run, qrels, "ndcg@10") for name, run in runs.items()}
    judged_count = sum(1 for docs in qrels.values() if any(g > 0 for g in docs.values()))
    return Comparison(results=results, judged_queries=judged_count, documents=len(doc_ids),
                      seconds=seconds, ndcg_per_query=per, sparsity=sparsity,
                      runs={name: {q: list(docs) for q, docs in run.items()} for name, run in runs.items()})
