"""Rank a corpus for a set of queries: BM25 (bm25s) and dense bi-encoders (sentence-transformers).

Sparse models rank through sparse_retrieval.py.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bm25_index(doc_texts: Sequence[str], *, language: str = "english"):
    """A BM25 index (Lucene variant, k1=1.2, b=0.75 as OpenSearch uses) with stop words and Snowball stemming,
    and the function that tokenizes queries the same way (`return_ids=False` gives token strings)."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer(language)
    stopwords = "en" if language == "english" else None
    retriever = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    retriever.index(bm25s.tokenize(list(doc_texts), stopwords=stopwords, stemmer=stemmer, show_progress=False),
                    show_progress=False)

    def tokenize(texts: Sequence[str], **options):
        return bm25s.tokenize(list(texts), stopwords=stopwords, stemmer=stemmer, show_progress=False, **options)

    return retriever, tokenize


def bm25_top_k(
    doc_texts: Sequence[str],
    query_texts: Sequence[str],
    k: int,
    *,
    language: str = "english",
) -> list[list[tuple[int, float]]]:
    """Per query, the (document index, score) of its k best documents by BM25 (see bm25_index); documents that
    match no query term are left out."""
    retriever, tokenize = bm25_index(doc_texts, language=language)
    indices, scores = retriever.retrieve(tokenize(query_texts), k=min(k, len(doc_texts)), show_progress=False,
                                         n_threads=1)
    # bm25s pads with arbitrary documents when fewer than k match: keep only scored ones.
    return [[(int(i), float(s)) for i, s in zip(indices[row], scores[row]) if s > 0] for row in range(len(query_texts))]


def bm25_search(
    doc_ids: Sequence[str],
    doc_texts: Sequence[str],
    queries: dict[str, str],
    *,
    k: int = 100,
    language: str = "english",
    with_scores: bool = False,
) -> dict[str, list[str]] | dict[str, list[tuple[str, float]]]:
    """Per query, the ids of its k best documents by BM25 (with their scores when `with_scores`)."""
    query_ids = list(queries)
    ranked = bm25_top_k(doc_texts, [queries[q] for q in query_ids], k, language=language)
    if with_scores:
        return {query_id: [(doc_ids[i], s) for i, s in hits] for query_id, hits in zip(query_ids, ranked)}
    return {query_id: [doc_ids[i] for i, _ in hits] for query_id, hits in zip(query_ids, ranked)}


# Encodings of at least this many texts show a progress bar: on a CPU they take minutes.
PROGRESS_FROM_TEXTS = 5_000


def encode(model, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None,
           role: str = "document"):
    """Normalised dense embeddings (numpy); for a sparse model, its (unnormalised) vocabulary-sized vectors as a
    scipy CSR matrix, so that a dot product is the sparse model's score and memory follows the active terms
    (`role`: query or document side). `show_progress` None: a progress bar from PROGRESS_FROM_TEXTS texts on."""
    from finetune_assets.core.memory_release import release_free_memory
    from finetune_assets.core.retrieval.sparse_retrieval import encode_sparse_csr, is_sparse_model

    if show_progress is None:
        show_progress = len(texts) >= PROGRESS_FROM_TEXTS
    if is_sparse_model(model):
        return encode_sparse_csr(model, texts, role=role, batch_size=batch_size, show_progress=show_progress)
    vectors = model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                           normalize_embeddings=True, show_progress_bar=show_progress)
    release_free_memory()  # the batches' activations, freed but kept by the allocator
    return vectors


# Query-document cells scored at once by score_blocks / top_k: 64 MB of float32, whatever the corpus size.
SCORE_BLOCK_CELLS = 1 << 24


def is_scipy_sparse(vectors) -> bool:
    import scipy.sparse

    return scipy.sparse.issparse(vectors)


def block_scores(query_vectors, doc_vectors, rows) -> np.ndarray:
    """float32 [len(rows), documents] dot products of the given query rows with every document; dense numpy or
    scipy sparse vectors (the sparse product runs over the active terms only, as an inverted index does)."""
    if is_scipy_sparse(query_vectors) or is_scipy_sparse(doc_vectors):
        import scipy.sparse

        queries = scipy.sparse.csr_matrix(query_vectors[rows])
        return np.asarray((queries @ scipy.sparse.csr_matrix(doc_vectors).T).toarray(), dtype=np.float32)
    return np.asarray(query_vectors[rows] @ doc_vectors.T, dtype=np.float32)


def pair_scores(query_vectors, doc_vectors, rows, docs) -> np.ndarray:
    """float64 dot products of the pairs (query_vectors[rows[i]], doc_vectors[docs[i]])."""
    rows, docs = np.asarray(rows, dtype=np.int64), np.asarray(docs, dtype=np.int64)
    if len(rows) == 0:
        return np.zeros(0)
    if is_scipy_sparse(query_vectors) or is_scipy_sparse(doc_vectors):
        import scipy.sparse

        left = scipy.sparse.csr_matrix(query_vectors)[rows]
        right = scipy.sparse.csr_matrix(doc_vectors)[docs]
        return np.asarray(left.multiply(right).sum(axis=1), dtype=np.float64).ravel()
    return np.einsum("ij,ij->i", query_vectors[rows].astype(np.float64), doc_vectors[docs].astype(np.float64))


def top_k(query_vectors, doc_vectors, k: int, *, cells: int = SCORE_BLOCK_CELLS) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k best documents per query by dot product (cosine for normalised dense
    embeddings), exact, scored a block of queries at a time so memory holds at most `cells` scores (and the
    k best per query), never a queries x documents matrix."""
    queries, documents = query_vectors.shape[0], doc_vectors.shape[0]
    k = min(k, documents)
    indices = np.empty((queries, k), dtype=np.int64)
    values = np.empty((queries, k), dtype=np.float32)
    chunk = max(1, cells // max(documents, 1))
    for start in range(0, queries, chunk):
        rows = np.arange(start, min(start + chunk, queries))
        scores = block_scores(query_vectors, doc_vectors, rows)
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < documents else np.tile(
            np.arange(documents), (len(rows), 1))
        best = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-best, axis=1, kind="stable")
        indices[rows] = np.take_along_axis(part, order, axis=1)
        values[rows] = np.take_along_axis(best, order, axis=1)
    return indices, values


def dense_search(
    model,
    doc_ids: Sequence[str],
    doc_texts: Sequence[str],
    queries: dict[str, str],
    *,
    k: int = 100,
    batch_size: int = 64,
    doc_embeddings: np.ndarray | None = None,
    with_scores: bool = False,
) -> dict[str, list[str]] | dict[str, list[tuple[str, float]]]:
    """Per query, the ids of its k nearest documents by cosine (with their scores when `with_scores`)."""
    if doc_embeddings is None:
        doc_embeddings = encode(model, doc_texts, batch_size=batch_size)
    query_ids = list(queries)
    query_embeddings = encode(model, [queries[q] for q in query_ids], batch_size=batch_size)
    indices, scores = top_k(query_embeddings, doc_embeddings, k)
    if with_scores:
        return {q: [(doc_ids[i], float(s)) for i, s in zip(indices[row], scores[row])] for row, q in enumerate(query_ids)}
    return {q: [doc_ids[i] for i in indices[row]] for row, q in enumerate(query_ids)}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, samples: int = 2000, seed: int = 0):
    """Mean of b - a with a 95% bootstrap interval, over paired per-query scores."""
    diffs = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if diffs.size == 0:
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, diffs.size, size=(samples, diffs.size))].mean(axis=1)
    return float(diffs.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
