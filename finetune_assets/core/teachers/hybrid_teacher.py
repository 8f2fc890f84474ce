"""The hybrid teacher: BM25 and the base model together (and by default a third model of the other kind, or for a
sparse base model two dense ones, see `add_companions`), as an OpenSearch hybrid query would rank.

Each query's BM25 scores and base-model cosine scores are z-normalised over the candidate documents (subtract
the query's mean, divide by its standard deviation) and added with equal weights: OpenSearch's `z_score`
normalisation with the `arithmetic_mean` combination, over the whole candidate set instead of each
sub-query's top hits. Rows are scored a block of queries at a time (each signal's [block, documents] scores,
z-scored over the block's full rows, then dropped) and only each query's top documents are kept
(teacher_top_k.py): memory stays one block and the kept scores equal the full matrix's.

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
from pathlib import Path

import numpy as np

from finetune_assets.core.model_types import default_base_model
from finetune_assets.core.offline_models import (
    BGE_SMALL_MODEL,
    DEFAULT_SPARSE_MODEL,
    MINILM_MODEL,
    resolve_model,
)
from finetune_assets.core.retrieval.retrieval import bm25_index
from finetune_assets.core.teachers.onnx_encoder import is_onnx_encoder

HYBRID_TEACHER_NAMES = ("hybrid", "bm25+dense")
# With a companion model the teacher weighs three signals by kind: BM25, a dense and a sparse model. Measured on
# the real qrels (benchmarks/teacher_signals.py): BM25 0.3 + all-MiniLM-L6-v2 0.4 + SPLADE-tiny 0.3 ranks
# Cranfield at 0.4086 and CACM at 0.5713 nDCG@10, against 0.4031 / 0.5649 for BM25 + MiniLM and 0.3773 / 0.5188
# for BM25 + SPLADE-tiny (the two-signal teacher a sparse base model got before).
BM25_WEIGHT_WITH_COMPANION = 0.3
COMPANION_WEIGHT = {"dense": 0.4, "sparse": 0.3, "inference_free": 0.3}
# Two or more companions: BM25 0.2, each sparse signal 0.2, the dense ones share the rest (see add_companions).
MANY_SIGNALS_BM25_WEIGHT = 0.2
MANY_SIGNALS_SPARSE_WEIGHT = 0.2


def is_hybrid_teacher_name(name: str) -> bool:
    return name.strip().lower() in HYBRID_TEACHER_NAMES


def _standardise(scores: np.ndarray) -> np.ndarray:
    """Each row z-scored over its documents (population standard deviation); a constant row becomes zeros."""
    scores = np.asarray(scores, dtype=np.float64)
    mean = scores.mean(axis=-1, keepdims=True)
    std = scores.std(axis=-1, keepdims=True)
    return np.divide(scores - mean, std, out=np.zeros_like(scores), where=std > 0)


class Bm25Scores:
    """BM25 scores of any query rows against every document, straight from the bm25s index's [terms, documents]
    score matrix: a sparse product over the query's terms, as bm25s `get_scores` sums them (a repeated term
    counts again), without a per-query row kept anywhere."""

    def __init__(self, retriever, query_tokens: Sequence[Sequence[str]]) -> None:
        import scipy.sparse

        scores = retriever.scores
        terms = len(scores["indptr"]) - 1
        self.documents = int(scores["num_docs"])
        self.matrix = scipy.sparse.csr_matrix((scores["data"], scores["indices"], scores["indptr"]),
                                              shape=(terms, self.documents))
        rows, cols = [], []
        for row, tokens in enumerate(query_tokens):
            ids = [retriever.vocab_dict[t] for t in tokens if t in retriever.vocab_dict]
            ids = [i for i in ids if i < terms]  # the empty token has no postings
            rows += [row] * len(ids)
            cols += ids
        self.queries = scipy.sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                                               shape=(len(query_tokens), terms))

    def block(self, rows) -> np.ndarray:
        return np.asarray((self.queries[rows] @ self.matrix).toarray(), dtype=np.float64)


class HybridTeacher:
    """Scores (query row, document index) keys; `bind` gives it the rows' queries and the base model's vectors.

    `bm25_weight` in [0, 1] weighs BM25 against the base model (0.5: equal weights, the measured default).
    """

    scores_by_index = True  # mining passes (row, document) keys instead of text pairs

    def __init__(self, *, bm25_weight: float = 0.5, language: str = "english") -> None:
        if not 0.0 <= bm25_weight <= 1.0:
            raise ValueError(f"hybrid teacher bm25_weight must be between 0 and 1, got {bm25_weight}")
        self.bm25_weight, self.language = bm25_weight, language
        self._own_bm25_weight = bm25_weight  # restored when a new bind drops the companions
        # (name, weight, query vectors, document vectors): dense numpy or scipy sparse, scored by dot product
        self._companions: list[tuple[str, float, object, object]] = []

    @property
    def base_weight(self) -> float:
        return 1 - self.bm25_weight - sum(weight for _, weight, _, _ in self._companions)

    @property
    def name(self) -> str:
        companions = "".join(f" + {name} {weight:g}" for name, weight, _, _ in self._companions)
        return f"hybrid (BM25 {self.bm25_weight:g} + base model {self.base_weight:g}{companions}, z-score)"

    def add_companion(self, name: str, kind: str, query_vectors, doc_vectors,
                      weights: Sequence[float] | None = None) -> HybridTeacher:
        """A third signal: another model's vectors of the bound queries and documents (dot product = its score),
        in place of any earlier companion. The weights become BM25 0.3 and the companion's by its kind (dense
        0.4, sparse 0.3); the base model gets the rest. `weights` = (BM25, base model, companion) sets them
        instead."""
        return self.add_companions([(name, kind, query_vectors, doc_vectors)], weights)

    def add_companions(self, companions: Sequence[tuple[str, str, object, object]],
                       weights: Sequence[float] | None = None, *, base_kind: str = "dense") -> HybridTeacher:
        """Other models' signals beside BM25 and the base model, each (name, kind, query vectors, document
        vectors), in place of any earlier ones. One companion: the weights of add_companion. Several: BM25 0.2,
        every sparse signal (the base model's when `base_kind` is sparse) 0.2, the dense ones share the rest, as
        measured on Cranfield's real queries (a scratch probe, 2026-12-04: BM25 0.2 + MiniLM 0.3 + SPLADE-tiny
        0.2 + bge-small 0.3 ranked 0.4214 against 0.4090 for the three-signal default). `weights` = (BM25, base
        model, each companion in order) sets them instead."""
        for name, _, query_vectors, doc_vectors in companions:
            if query_vectors.shape[0] != len(self.queries) or doc_vectors.shape[0] != self.documents:
                raise ValueError(f"companion {name} has vectors for {query_vectors.shape[0]} queries and "
                                 f"{doc_vectors.shape[0]} documents; the bound queries and documents need "
                                 f"{len(self.queries)} and {self.documents}")
        if weights is not None:
            check_teacher_weights(weights, len(companions))
            bm25, own = float(weights[0]), [float(w) for w in weights[2:]]
        elif len(companions) == 1:
            bm25, own = BM25_WEIGHT_WITH_COMPANION, [COMPANION_WEIGHT[companions[0][1]]]
        else:
            kinds = [base_kind, *(kind for _, kind, _, _ in companions)]
            dense = sum(kind == "dense" for kind in kinds)
            rest = 1 - MANY_SIGNALS_BM25_WEIGHT - MANY_SIGNALS_SPARSE_WEIGHT * (len(kinds) - dense)
            if dense == 0 or rest <= 0:
                raise ValueError(f"no default weights for a base model and companions of kinds {kinds}: set "
                                 "teacher_weights (BM25, base model, each companion)")
            own = [rest / dense if kind == "dense" else MANY_SIGNALS_SPARSE_WEIGHT for kind in kinds[1:]]
            bm25 = MANY_SIGNALS_BM25_WEIGHT
        self.bm25_weight = bm25
        self._companions = [(name, weight, q, d) for (name, _, q, d), weight in zip(companions, own)]
        return self

    def bind(self, queries: Sequence[str], query_embeddings, doc_texts: Sequence[str],
             doc_embeddings) -> HybridTeacher:
        if len(queries) != query_embeddings.shape[0] or len(doc_texts) != doc_embeddings.shape[0]:
            raise ValueError("hybrid teacher: one embedding per query and per document is needed")
        self.queries = list(queries)
        self.query_embeddings, self.doc_embeddings = query_embeddings, doc_embeddings
        self.documents = len(doc_texts)
        self.retriever, tokenize = bm25_index(doc_texts, language=self.language)
        self.query_tokens = tokenize(queries, return_ids=False)
        self.bm25 = Bm25Scores(self.retriever, self.query_tokens)
        self._companions = []
        self.bm25_weight = self._own_bm25_weight
        return self

    def block(self, rows) -> np.ndarray:
        """float64 [len(rows), documents]: the teacher's score of every document for the given query rows."""
        from finetune_assets.core.retrieval.retrieval import block_scores

        rows = np.asarray(rows, dtype=np.int64)
        # x 2: at equal weights the score is the plain sum of the two z-scores (the measured variant)
        combined = self.bm25_weight * _standardise(self.bm25.block(rows))
        combined += self.base_weight * _standardise(block_scores(self.query_embeddings, self.doc_embeddings, rows))
        for _, weight, query_vectors, doc_vectors in self._companions:
            combined += weight * _standardise(block_scores(query_vectors, doc_vectors, rows))
        return 2 * combined

    def score_keys(self, keys: Sequence[tuple[int, int]]) -> np.ndarray:
        """Scores of (row, document) keys: each distinct row's block is scored once per call, a block of rows
        at a time, and dropped."""
        from finetune_assets.core.teachers.teacher_top_k import blocks

        keys = [(int(r), int(d)) for r, d in keys]
        distinct = np.array(sorted({r for r, _ in keys}), dtype=np.int64)
        found: dict[tuple[int, int], float] = {}
        wanted: dict[int, list[int]] = {}
        for row, doc in keys:
            wanted.setdefault(row, []).append(doc)
        for part in blocks(len(distinct), self.documents):
            rows = distinct[part]
            block = self.block(rows)
            for i, row in enumerate(rows):
                for doc in wanted[int(row)]:
                    found[(int(row), doc)] = float(block[i, doc])
        return np.array([found[key] for key in keys], dtype=np.float64)

    def top_k(self, masked: Sequence[int | None] | None = None, *, k: int | None = None, folder=None,
              on_progress=None):
        """Each bound query's top k documents and scores (teacher_top_k.TeacherTopK), with `masked[row]` (a
        document index or None) kept as -inf; memory-mapped files in `folder` when given."""
        from finetune_assets.core.teachers.teacher_top_k import TEACHER_TOP_K, build_top_k

        return build_top_k(self.block, len(self.queries), self.documents, k or TEACHER_TOP_K, masked=masked,
                           folder=folder, on_progress=on_progress)

    def score(self, pairs, *, on_progress=None):
        raise TypeError("the hybrid teacher scores (query row, document) keys inside mining; it has no text-pair "
                        "scorer, so every score it gives is written by mined_negatives")


def check_teacher_weights(weights: Sequence[float], companions: int = 1) -> None:
    """One weight for BM25, the base model and each companion, each >= 0, summing to 1."""
    if len(weights) != 2 + companions or any(w < 0 for w in weights) or abs(sum(weights) - 1) > 1e-6:
        raise ValueError(f"teacher_weights are {2 + companions} weights (BM25, base model, then each of the "
                         f"{companions} companion(s)), each >= 0 and summing to 1, got {list(weights)}")


# What 'auto' adds beside a dense or sparse base model: the packaged models of the four-signal teacher (BM25,
# all-MiniLM-L6-v2, SPLADE-tiny, bge-small-en) that the base model is not (one not among them counts as its type's
# default), measured for sparse 2026-12-04 (3 seeds per development collection, benchmarks/results/*-bge4-*) and for
# dense 2026-12-05 (docs/experiments.md); an inference-free base model, not measured with it, keeps the dense model
# of the three-signal teacher.
FOUR_SIGNAL_MODELS = (MINILM_MODEL, DEFAULT_SPARSE_MODEL, BGE_SMALL_MODEL)


def auto_companions(base_model_type: str, base_model: str = "") -> tuple[str, ...]:
    if base_model_type == "inference_free":
        return (MINILM_MODEL,)
    base = base_model.strip().lower()
    if base not in {m.lower() for m in FOUR_SIGNAL_MODELS}:
        base = default_base_model(base_model_type).lower()
    return tuple(m for m in FOUR_SIGNAL_MODELS if m.lower() != base)


def companion_models(setting: str, base_model_type: str, base_model: str = "") -> list[str]:
    """The companions a teacher_companion setting names, comma-separated folders or ids: 'auto' is
    auto_companions (the four-signal teacher's packaged models the base model is not); '' and 'none' add nothing,
    and a model named twice counts once (so 'auto, local:bge-small-en', which spelled out the four-signal teacher
    before it became 'auto', still means it)."""
    auto = auto_companions(base_model_type, base_model)
    models = []
    for part in (p.strip() for p in setting.split(",")):
        if part.lower() == "auto":
            models += auto
        elif part and part.lower() != "none":
            models.append(part)
    return list(dict.fromkeys(models))


def _model_kind(path: str) -> str:
    """dense, sparse or inference_free: from a sentence-transformers folder's modules, else a bare masked-LM
    checkpoint (as the packaged SPLADE-tiny is) is SPLADE; anything else, a hub id included, is read as dense."""
    import json

    from finetune_assets.core.model_types import detect_model_type

    folder = Path(path)
    if (folder / "modules.json").is_file():
        return detect_model_type(folder)
    if (folder / "config.json").is_file():
        architectures = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("architectures") or []
        if any(a.endswith("ForMaskedLM") for a in architectures):
            return "sparse"
    return "dense"


def companion_vectors(name: str, queries: Sequence[str], doc_texts: Sequence[str], *, max_seq_length: int = 256,
                      batch_size: int = 32) -> tuple[object, object, str]:
    """Model `name`'s (alias, folder or hub id) query and document vectors, whose dot products are its scores
    (dense: normalised float32 numpy; sparse: scipy CSR), and its kind."""
    from finetune_assets.core.retrieval.retrieval import encode
    from finetune_assets.core.retrieval.sparse_retrieval import encode_sparse_csr

    path = resolve_model(name)
    if is_onnx_encoder(path):
        from finetune_assets.core.teachers.onnx_encoder import OnnxDenseEncoder

        encoder = OnnxDenseEncoder(path, max_length=max_seq_length)
        return (encoder.encode(queries, role="query", batch_size=batch_size),
                encoder.encode(doc_texts, batch_size=batch_size), "dense")
    kind = _model_kind(path)
    if kind == "dense":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(path)
        model.max_seq_length = max_seq_length
        return (encode(model, queries, batch_size=batch_size, role="query"),
                encode(model, doc_texts, batch_size=batch_size), kind)
    from finetune_assets.core.training.sparse_training import load_splade

    model = load_splade(path, max_seq_length)
    return (encode_sparse_csr(model, queries, role="query", batch_size=batch_size),
            encode_sparse_csr(model, doc_texts, role="document", batch_size=batch_size), kind)


def companion_scores(name: str, queries: Sequence[str], doc_texts: Sequence[str], *, max_seq_length: int = 256,
                     batch_size: int = 32) -> tuple[np.ndarray, str]:
    """float32 [queries, documents] scores of model `name` and its kind: a full matrix, for measuring teacher
    signals on a test collection's judged queries (benchmarks/teacher_signals.py); the pipeline keeps vectors."""
    from finetune_assets.core.retrieval.retrieval import block_scores

    query_vectors, doc_vectors, kind = companion_vectors(name, queries, doc_texts, max_seq_length=max_seq_length,
                                                         batch_size=batch_size)
    return block_scores(query_vectors, doc_vectors, np.arange(len(queries))), kind
