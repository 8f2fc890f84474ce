"""Compare BM25, the base model and the tuned model on one set of judged queries (dense or sparse models;
sparse ones also report how sparse their vectors are), alone and fused with BM25 in a hybrid query."""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from finetune_assets.core.retrieval.fusion import FusionChoice, FusionSetting, choose_setting, fuse_runs
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
    scored_runs: dict[str, dict[str, list[tuple[str, float]]]] = field(default_factory=dict)  # with scores
    hybrid: dict[str, dict] = field(default_factory=dict)  # hybrid system -> its fusion setting (and choice)

    def gain(self, system: str = "tuned", baseline: str = "base", metric: str = "ndcg@10") -> float:
        return self.results[system][metric] - self.results[baseline][metric]

    def gain_interval(self, system: str = "tuned", baseline: str = "base") -> tuple[float, float, float]:
        queries = sorted(self.ndcg_per_query[baseline])
        return paired_bootstrap([self.ndcg_per_query[baseline][q] for q in queries],
                                [self.ndcg_per_query[system][q] for q in queries])

    def ndcg_by_group(self, groups: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
        """Every system's mean nDCG@10 over each group of judged query ids (the held-out queries by query type,
        say), with the group's size; a group with no judged query is left out."""
        out = {}
        for group, ids in groups.items():
            judged = [q for q in ids if all(q in figures for figures in self.ndcg_per_query.values())]
            if judged:
                out[group] = {"queries": len(judged), **{system: round(sum(f[q] for q in judged) / len(judged), 4)
                                                         for system, f in self.ndcg_per_query.items()}}
        return out

    def to_dict(self) -> dict:
        low_high = {}
        if {"tuned", "base"} <= set(self.results):
            mean, low, high = self.gain_interval()
            low_high = {"tuned_minus_base_ndcg@10": {"mean": mean, "ci95_low": low, "ci95_high": high}}
        sparse = {"sparsity": self.sparsity} if self.sparsity else {}
        hybrid = {"hybrid": self.hybrid} if self.hybrid else {}
        return {"judged_queries": self.judged_queries, "documents": self.documents,
                "results": self.results, "seconds": self.seconds, **sparse, **hybrid, **low_high}

    def add_hybrid(self, system: str, qrels: Qrels, *, setting: FusionSetting | None = None,
                   choose_on: Qrels | None = None, metrics: Sequence[str] = DEFAULT_METRICS) -> str:
        """Add the row `hybrid_<system>`: BM25 fused with `system` by `setting`, or by the setting that scores best
        on `choose_on` (judgements of other queries than those scored here, or the same ones when none are given).
        Returns the row's name."""
        if "bm25" not in self.scored_runs or system not in self.scored_runs:
            raise ValueError(f"hybrid rows need scored runs of bm25 and {system}; have {sorted(self.scored_runs)}")
        bm25, model = self.scored_runs["bm25"], self.scored_runs[system]
        if system in self.sparsity:  # a neural_sparse query returns only documents sharing a term (score > 0)
            model = {q: [(d, s) for d, s in docs if s > 0] for q, docs in model.items()}
        choice: FusionChoice | None = None
        if setting is None:
            judged = choose_on if choose_on is not None else qrels
            choice = choose_setting({q: bm25[q] for q in judged if q in bm25},
                                    {q: model[q] for q in judged if q in model}, judged)
            setting = choice.setting
        name = f"hybrid_{system}"
        run = fuse_runs(bm25, model, setting)
        self.runs[name] = run
        self.results[name] = evaluate_run(run, qrels, metrics)
        self.ndcg_per_query[name] = per_query(run, qrels, "ndcg@10")
        self.hybrid[name] = {"setting": setting.to_dict(), "name": setting.name,
                             **({"choice": choice.to_dict()} if choice else {})}
        return name

    def markdown(self, metrics: Sequence[str] = TABLE_METRICS) -> str:
        lines = ["| system | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for system, values in self.results.items():
            lines.append(f"| {system} | " + " | ".join(f"{values[m]:.4f}" for m in metrics) + " |")
        if self.sparsity:
            lines += ["", "| system | active dims per query | active dims per document | FLOPS |", "|---|---|---|---|"]
            lines += [f"| {system} | {s['avg_active_dims_query']:.1f} | {s['avg_active_dims_document']:.1f} | "
                      f"{s['flops']:.4f} |" for system, s in self.sparsity.items()]
            lines += [f"\n{system}'s documents are pruned as the ingest pipeline prunes them (max_ratio "
                      f"{s['document_prune_ratio']}): unpruned they have {s['avg_active_dims_document_unpruned']:.1f} "
                      f"active dims and FLOPS {s['flops_unpruned']:.4f}."
                      for system, s in self.sparsity.items() if "flops_unpruned" in s]
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
    document_prune_ratios: Mapping[str, float] | None = None,
    flops_ceilings: Mapping[str, str] | None = None,
    doc_embeddings: Mapping[str, object] | None = None,
) -> Comparison:
    """Rank the same corpus with each system and score every run on the same judgements.

    `precomputed` maps a system name to an earlier (run, sparsity figures or None) over the same corpus and
    queries, e.g. the base model's, which does not change between benchmark runs. `document_prune_ratios` maps a
    sparse system to the max_ratio pruning its documents get in the index (sparse_retrieval.prune_max_ratio);
    `flops_ceilings` maps such a system to another, ranked before it, whose FLOPS its pruning is raised to match.
    `doc_embeddings` maps a dense system to its embeddings of `doc_texts`, computed earlier (saved_embeddings.py).
    """
    judged = {q: text for q, text in queries.items() if q in qrels}
    runs: dict[str, Mapping[str, Sequence[str]]] = {}
    seconds: dict[str, float] = {}
    scored: dict[str, dict[str, list[tuple[str, float]]]] = {}
    if include_bm25:
        started = time.perf_counter()
        scored["bm25"] = bm25_search(doc_ids, doc_texts, judged, k=100, with_scores=True)
        runs["bm25"] = _ids(scored["bm25"])
        seconds["bm25"] = round(time.perf_counter() - started, 2)
    sparsity: dict[str, dict[str, float]] = {}
    for name, (run, figures) in (precomputed or {}).items():
        if _has_scores(run):
            scored[name] = {q: [(d, float(s)) for d, s in docs] for q, docs in run.items()}
            run = _ids(scored[name])
        runs[name] = run
        if figures:
            sparsity[name] = figures
    for name, model in models.items():
        if name in runs:
            continue
        started = time.perf_counter()
        if is_sparse_model(model):
            scored[name], figures = sparse_search(
                model, doc_ids, doc_texts, judged, k=100, batch_size=batch_size, with_scores=True,
                document_prune_ratio=(document_prune_ratios or {}).get(name, 0.0),
                flops_ceiling=sparsity.get((flops_ceilings or {}).get(name, ""), {}).get("flops"))
            sparsity[name] = figures.to_dict()
        else:
            scored[name] = dense_search(model, doc_ids, doc_texts, judged, k=100, batch_size=batch_size,
                                        doc_embeddings=(doc_embeddings or {}).get(name), with_scores=True)
        runs[name] = _ids(scored[name])
        seconds[name] = round(time.perf_counter() - started, 2)
    results = {name: evaluate_run(run, qrels, metrics) for name, run in runs.items()}
    per = {name: per_query(run, qrels, "ndcg@10") for name, run in runs.items()}
    judged_count = sum(1 for docs in qrels.values() if any(g > 0 for g in docs.values()))
    return Comparison(results=results, judged_queries=judged_count, documents=len(doc_ids),
                      seconds=seconds, ndcg_per_query=per, sparsity=sparsity,
                      runs={name: {q: list(docs) for q, docs in run.items()} for name, run in runs.items()},
                      scored_runs=scored)


def _ids(scored: Mapping[str, Sequence[tuple[str, float]]]) -> dict[str, list[str]]:
    return {q: [doc for doc, _ in docs] for q, docs in scored.items()}


def _has_scores(run: Mapping[str, Sequence]) -> bool:
    """True for a run of (doc id, score) pairs, False for a run of doc ids."""
    first = next((docs for docs in run.values() if docs), [])
    return bool(first) and isinstance(first[0], (list, tuple))
