"""The hybrid teacher: BM25 and the base model together, as an OpenSearch hybrid query would rank.

Each query's BM25 scores and base-model cosine scores are z-normalised over the candidate documents (subtract
the query's mean, divide by its standard deviation) and added with equal weights: OpenSearch's `z_score`
normalisation with the `arithmetic_mean` combination, over the whole candidate set instead of each
sub-query's top hits.

Why a teacher that is not a cross-encoder: on older technical collections the packaged ms-marco cross-encoder
barely beats the bi-encoder (Cranfield 0.376 vs 0.374 nDCG@10), while the hybrid of BM25 and all-MiniLM-L6-v2
ranks much better than either alone (measured on the real qrels: Cranfield 0.3926 vs BM25 0.3494 and dense
0.3578; CACM 0.5649 vs 0.4994 and 0.4092). It costs no model run: the base model's embeddings are computed
for mining anyway. Distilling it into all-MiniLM-L6-v2 from 400 documents' SmolLM2 queries did NOT carry that
gain over to the real queries (benchmarks/results/*-hybrid-*-2026-12-02.json: KL over 3 negatives, CACM
+0.016 vs +0.026 for the plain recipe, Cranfield -0.007; MarginMSE Cranfield -0.020, its margins are too wide
for a cosine student). Distilled over every document of a batch instead (core/batch_distillation.py, with
span queries), it is the default teacher: CACM +0.045, Cranfield +0.015 (benchmarks/results/*-batch-kl-*.json).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from finetune_assets.core.retrieval import bm25_index

HYBRID_TEACHER_NAMES = ("hybrid", "bm25+dense")


def is_hybrid_teacher_name(name: str) -> bool:
    return name.strip().lower() in HYBRID_TEACHER_NAMES


def _standardise(scores: np.ndarray) -> np.ndarray:
    std = scores.std()
    return (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)


class HybridTeacher:
    """Scores (query row, document index) keys; `bind` gives it the rows' queries and the base model's vectors.

    `bm25_weight` in [0, 1] weighs BM25 against the base model (0.5: equal weights, the measured default).
    """

    scores_by_index = True  # mining passes (row, document) keys instead of text pairs

    def __init__(self, *, bm25_weight: float = 0.5, language: str = "english") -> None:
        if not 0.0 <= bm25_weight <= 1.0:
            raise ValueError(f"hybrid teacher bm25_weight must be between 0 and 1, got {bm25_weight}")
        self.bm25_weight, self.language = bm25_weight, language
        self.name = f"hybrid (BM25 {bm25_weight:g} + base model {1 - bm25_weight:g}, z-score)"
        self._rows: dict[int, np.ndarray] = {}

    def bind(self, queries: Sequence[str], query_embeddings: np.ndarray, doc_texts: Sequence[str],
             doc_embeddings: np.ndarray) -> HybridTeacher:
        if len(queries) != len(query_embeddings) or len(doc_texts) != len(doc_embeddings):
            raise ValueError("hybrid teacher: one embedding per query and per document is needed")
        self.queries = list(queries)
        self.query_embeddings, self.doc_embeddings = query_embeddings, doc_embeddings
        self.retriever, tokenize = bm25_index(doc_texts, language=self.language)
        self.query_tokens = tokenize(queries, return_ids=False)
        self._rows = {}
        return self

    def row_scores(self, row: int) -> np.ndarray:
        """The teacher's score of every candidate document for query row `row` (cached per row)."""
        if row not in self._rows:
            dense = (self.doc_embeddings @ self.query_embeddings[row]).astype(np.float64)
            tokens = [t for t in self.query_tokens[row] if t in self.retriever.vocab_dict]
            lexical = (np.asarray(self.retriever.get_scores(tokens), dtype=np.float64) if tokens
                       else np.zeros(len(dense)))
            # x 2: at equal weights the score is the plain sum of the two z-scores (the measured variant)
            self._rows[row] = 2 * (self.bm25_weight * _standardise(lexical)
                                   + (1 - self.bm25_weight) * _standardise(dense))
        return self._rows[row]

    def score_keys(self, keys: Sequence[tuple[int, int]]) -> np.ndarray:
        return np.array([self.row_scores(row)[doc] for row, doc in keys], dtype=np.float64)

    def score(self, pairs, *, on_progress=None):
        raise TypeError("the hybrid teacher scores (query row, document) keys inside mining; it has no text-pair "
                        "scorer, so every score it gives is written by mined_negatives")
