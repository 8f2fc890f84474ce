"""Standard IR metrics over ranked lists and graded judgements (as trec_eval defines them)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

Run = Mapping[str, Sequence[str]]  # query id -> ranked doc ids, best first
Qrels = Mapping[str, Mapping[str, int]]  # query id -> doc id -> relevance grade (> 0 is relevant)

DEFAULT_METRICS = (
    "ndcg@10", "mrr@10", "map@100",
    "recall@1", "recall@5", "recall@10", "recall@100",
    "precision@1", "precision@5", "precision@10",
)


def _ndcg(ranked: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    gains = [judged.get(doc, 0) for doc in ranked[:k]]
    dcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(gains) if g > 0)
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def _metric(name: str, ranked: Sequence[str], judged: Mapping[str, int]) -> float:
    kind, _, k_text = name.partition("@")
    k = int(k_text)
    relevant = {doc for doc, grade in judged.items() if grade > 0}
    top = ranked[:k]
    if kind == "ndcg":
        return _ndcg(ranked, judged, k)
    if kind == "mrr":
        return next((1.0 / (i + 1) for i, doc in enumerate(top) if doc in relevant), 0.0)
    if kind == "recall":
        return len(relevant.intersection(top)) / len(relevant)
    if kind == "precision":
        return len(relevant.intersection(top)) / k
    if kind == "map":
        hits, total = 0, 0.0
        for i, doc in enumerate(top):
            if doc in relevant:
                hits += 1
                total += hits / (i + 1)
        return total / len(relevant)
    raise ValueError(f"unknown metric {name!r}; expected one of {', '.join(DEFAULT_METRICS)}")


def evaluate_run(run: Run, qrels: Qrels, metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Mean of each metric over the queries that have at least one relevant document.

    A judged query missing from the run scores 0, so a system cannot gain by skipping queries.
    """
    judged = {q: docs for q, docs in qrels.items() if any(g > 0 for g in docs.values())}
    if not judged:
        raise ValueError("no query has a relevant document; nothing to evaluate")
    totals = dict.fromkeys(metrics, 0.0)
    for query_id, docs in judged.items():
        ranked = list(run.get(query_id, ()))
        for name in metrics:
            totals[name] += _metric(name, ranked, docs)
    return {name: total / len(judged) for name, total in totals.items()}


def per_query(run: Run, qrels: Qrels, metric: str = "ndcg@10") -> dict[str, float]:
    """One metric per judged query, for paired comparisons between systems."""
    return {
        q: _metric(metric, list(run.get(q, ())), docs)
        for q, docs in qrels.items()
        if any(g > 0 for g in docs.values())
    }
