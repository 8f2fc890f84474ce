"""Round-trip consistency: keep a generated query only when a retriever finds its source document near the top.

Promptagator (Dai et al., 2022) and GPL-style pipelines filter synthetic queries this way. A query whose own
document ranks low is usually generic ("what is the purpose of the study", which matches any document) or asks
about something the document does not say; both teach the model to rank the wrong document first.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


def positive_ranks(query_embeddings: np.ndarray, doc_embeddings: np.ndarray, positives: np.ndarray, *,
                   chunk: int = 1024) -> np.ndarray:
    """1-based rank of each query's source document (`positives`: its document index) by dot product (dense
    numpy or scipy sparse vectors), `chunk` queries at a time; ties go in the source document's favour."""
    from finetune_assets.core.retrieval.retrieval import SCORE_BLOCK_CELLS, block_scores

    chunk = max(1, min(chunk, SCORE_BLOCK_CELLS // max(doc_embeddings.shape[0], 1)))
    ranks = np.empty(len(positives), dtype=np.int64)
    for start in range(0, len(positives), chunk):
        scores = block_scores(query_embeddings, doc_embeddings, np.arange(start, min(start + chunk, len(positives))))
        own = scores[np.arange(scores.shape[0]), positives[start:start + chunk]]
        ranks[start:start + chunk] = 1 + (scores > own[:, None]).sum(axis=1)
    return ranks


def reranked_ranks(ranks: np.ndarray, candidates: np.ndarray, positives: np.ndarray,
                   score: Callable[[list[tuple[int, int]]], np.ndarray]) -> np.ndarray:
    """Ranks after a teacher reorders each query's candidate list (the base model's top documents).

    `score` takes (query row, document index) keys. A source document outside its candidate list keeps its base
    rank, which is deeper than the list, so the teacher cannot rescue a query the base model misses entirely.
    """
    inside = [row for row in range(len(ranks)) if positives[row] in candidates[row]]
    keys = [(row, int(doc)) for row in inside for doc in candidates[row]]
    scores = np.asarray(score(keys), dtype=np.float64).reshape(len(inside), candidates.shape[1]) if inside else None
    reranked = ranks.copy()
    for n, row in enumerate(inside):
        own = scores[n][list(candidates[row]).index(positives[row])]
        reranked[row] = 1 + int((scores[n] > own).sum())
    return reranked


@dataclass
class RoundTrip:
    top_k: int
    judge: str
    ranks: np.ndarray
    kept: list[int]  # row numbers of the kept queries, in order
    dropped_examples: list[dict] = field(default_factory=list)

    def metadata(self) -> dict:
        checked = len(self.ranks)
        return {
            "roundtrip_top_k": self.top_k,
            "roundtrip_judge": self.judge,
            "roundtrip_queries_checked": checked,
            "roundtrip_queries_kept": len(self.kept),
            "roundtrip_queries_dropped": checked - len(self.kept),
            "roundtrip_kept_fraction": round(len(self.kept) / checked, 4) if checked else 1.0,
            "roundtrip_median_source_rank": float(np.median(self.ranks)) if checked else 0.0,
        }


def round_trip_filter(rows: Sequence[dict], ranks: np.ndarray, top_k: int, *, judge: str = "base model",
                      max_examples: int = 10) -> RoundTrip:
    """Keep rows whose source document ranks within `top_k`; record up to `max_examples` dropped ones."""
    kept, dropped = [], []
    for number, (row, rank) in enumerate(zip(rows, ranks)):
        if rank <= top_k:
            kept.append(number)
        elif len(dropped) < max_examples:
            dropped.append({"query": row["query"], "doc_id": row["doc_id"], "rank": int(rank)})
    return RoundTrip(top_k=top_k, judge=judge, ranks=np.asarray(ranks), kept=kept, dropped_examples=dropped)
