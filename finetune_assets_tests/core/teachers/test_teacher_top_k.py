"""The structures that keep memory linear in queries: the teacher's top-K store, chunked exact top-k, sparse
vectors kept sparse through scoring."""
import numpy as np
import pytest
import scipy.sparse
import torch

from finetune_assets.core.retrieval.retrieval import block_scores, pair_scores, top_k
from finetune_assets.core.retrieval.roundtrip import positive_ranks
from finetune_assets.core.retrieval.sparse_retrieval import sparse_top_k, to_scipy
from finetune_assets.core.teachers.hybrid_teacher import HybridTeacher, _standardise
from finetune_assets.core.teachers.teacher_top_k import TeacherTopK, build_top_k, keep_top_k
from finetune_assets.core.training.batch_distillation import spread_ratio

TEXTS = ["scramjet inlet shock position at hypersonic speed", "combustion in a scramjet engine",
         "supersonic inlet design for jet engines", "boundary layer transition on a flat plate",
         "heat transfer in laminar flow", "wing flutter in transonic flow", "shock shock tube flow heat",
         "laminar boundary layer heat transfer on a cone"]
QUERIES = ["scramjet combustion", "heat heat transfer laminar", "shock tube", "zzz unknown words"]


def _random_matrix(rows=7, documents=50, seed=0):
    return np.random.default_rng(seed).normal(size=(rows, documents)).astype(np.float32)


def test_keep_top_k_keeps_the_best_first_and_summarises_the_rest_exactly():
    matrix = _random_matrix()
    matrix[2, 40] = -np.inf  # a masked source, which must stay in the store although it ranks last
    indices, scores, rest = keep_top_k(matrix, 5)
    for row in range(matrix.shape[0]):
        finite = matrix[row][np.isfinite(matrix[row])]
        best = np.sort(finite)[::-1]
        kept = scores[row][np.isfinite(scores[row])]
        assert kept.tolist() == pytest.approx(best[:len(kept)].tolist())
        assert matrix[row][indices[row]].tolist() == scores[row].tolist()
        others = np.setdiff1d(np.arange(matrix.shape[1]), indices[row])
        others = others[np.isfinite(matrix[row][others])]
        assert rest[row] == pytest.approx([matrix[row][others].mean(), matrix[row][others].std()], abs=1e-5)
    assert 40 in indices[2] and np.isneginf(scores[2][list(indices[2]).index(40)])
    assert np.isfinite(scores[2]).sum() == 4  # the masked cell took one of the five slots


def test_the_store_round_trips_through_memory_mapped_files_and_reads_like_the_full_matrix(tmp_path):
    matrix = _random_matrix(rows=9, documents=40)
    masked = [None, 3, None, None, 7, None, None, None, None]
    calls = []

    def score_block(rows):
        calls.append(len(rows))
        return matrix[rows].astype(np.float64)

    import finetune_assets.core.teachers.teacher_top_k as module

    cells = module.BLOCK_CELLS
    module.BLOCK_CELLS = 3 * 40  # three rows a block: memory is one block, whatever the rows
    try:
        store = build_top_k(score_block, 9, 40, 6, masked=masked, folder=tmp_path)
    finally:
        module.BLOCK_CELLS = cells
    assert calls == [3, 3, 3]
    loaded = TeacherTopK.load(tmp_path, 40)
    assert isinstance(loaded.indices, np.memmap) and isinstance(loaded.scores, np.memmap)
    assert np.array_equal(loaded.indices, store.indices) and np.array_equal(loaded.scores, store.scores)
    assert loaded.masked(1).tolist() == [3] and loaded.masked(4).tolist() == [7] and loaded.masked(0).size == 0
    # A kept document reads its score; one not kept reads the score of a left-out document's expected softmax
    # weight (mean + variance / 2T, at most the lowest kept score), with the variance of what the row left out.
    pool = list(range(40))
    values, variance = loaded.lookup([0, 1], pool, temperature=2.0)
    for i, row in enumerate([0, 1]):
        kept = set(loaded.indices[row].tolist())
        mean, std = loaded.rest[row]
        lowest = min(s for s in loaded.scores[row].astype(np.float32) if np.isfinite(s))
        fill = min(mean + std ** 2 / 4.0, lowest)
        assert mean < fill  # the left-out documents keep more than their mean's share of the softmax mass
        expected = np.where(np.isin(pool, list(kept)), matrix[row], fill)
        if masked[row] is not None:
            expected[masked[row]] = -np.inf
        assert values[i] == pytest.approx(expected, abs=2e-3)  # kept scores are float16
        assert (variance[i][list(kept)] == 0).all()
        outside = [d for d in pool if d not in kept]
        assert variance[i][outside] == pytest.approx(loaded.rest[row][1] ** 2)
    # Over a pool of every document the spread the store gives equals the full matrix's.
    student = torch.from_numpy(_random_matrix(rows=2, documents=40, seed=5))
    full = torch.from_numpy(np.where(np.isin(np.arange(40), [3]) & (np.arange(2)[:, None] == 1), -np.inf,
                                     matrix[[0, 1]]).astype(np.float32))
    values, variance = loaded.lookup([0, 1], pool)  # left-out documents at their mean, as the spread needs
    assert spread_ratio(student, torch.from_numpy(values), torch.from_numpy(variance)) == pytest.approx(
        spread_ratio(student, full), rel=2e-3)
    with pytest.raises(ValueError, match="points at document"):
        TeacherTopK.load(tmp_path, 10)
    with pytest.raises(FileNotFoundError, match="re-materialize mined_negatives"):
        TeacherTopK.load(tmp_path / "nowhere", 40)


def test_the_hybrid_teachers_top_k_equals_the_top_of_its_full_z_scored_rows():
    rng = np.random.default_rng(1)
    docs = rng.normal(size=(len(TEXTS), 8)).astype(np.float32)
    queries = rng.normal(size=(len(QUERIES), 8)).astype(np.float32)
    companion_docs = scipy.sparse.random(len(TEXTS), 50, density=0.2, format="csr", random_state=2, dtype=np.float32)
    companion_queries = scipy.sparse.random(len(QUERIES), 50, density=0.3, format="csr", random_state=3,
                                            dtype=np.float32)
    teacher = HybridTeacher().bind(QUERIES, queries, TEXTS, docs)
    teacher.add_companion("sparse one", "sparse", companion_queries, companion_docs)
    # Each signal's full row, as the dense matrix computed it, bm25s get_scores included (a repeated term twice).
    lexical = np.array([teacher.retriever.get_scores(known) if (known := [t for t in tokens
                                                                           if t in teacher.retriever.vocab_dict])
                        else np.zeros(len(TEXTS)) for tokens in teacher.query_tokens])
    expected = 2 * (0.3 * _standardise(lexical) + 0.4 * _standardise(queries @ docs.T)
                    + 0.3 * _standardise((companion_queries @ companion_docs.T).toarray()))
    assert teacher.block(np.arange(len(QUERIES))) == pytest.approx(expected)
    store = teacher.top_k([None, 4, None, None], k=3)
    for row in range(len(QUERIES)):
        finite = [d for d in store.indices[row] if np.isfinite(store.scores[row][list(store.indices[row]).index(d)])]
        order = [d for d in np.argsort(-expected[row], kind="stable") if not (row == 1 and d == 4)]
        assert sorted(finite) == sorted(order[:len(finite)])
        assert store.scores[row][:len(finite)].astype(np.float32) == pytest.approx(expected[row][finite], abs=0.02)
    assert store.masked(1).tolist() == [4]
    assert teacher.score_keys([(2, 5), (0, 1)]) == pytest.approx([expected[2, 5], expected[0, 1]])


@pytest.mark.parametrize("sparse", [False, True])
def test_chunked_top_k_equals_the_full_ranking(sparse):
    rng = np.random.default_rng(4)
    if sparse:
        queries = scipy.sparse.random(37, 300, density=0.05, format="csr", random_state=5, dtype=np.float32)
        docs = scipy.sparse.random(101, 300, density=0.1, format="csr", random_state=6, dtype=np.float32)
        full = (queries @ docs.T).toarray()
    else:
        queries = rng.normal(size=(37, 16)).astype(np.float32)
        docs = rng.normal(size=(101, 16)).astype(np.float32)
        full = queries @ docs.T
    indices, scores = top_k(queries, docs, 10, cells=5 * 101)  # five queries a block: eight blocks
    expected = np.argsort(-full, axis=1, kind="stable")[:, :10]
    assert np.array_equal(np.take_along_axis(full, indices, axis=1), np.take_along_axis(full, expected, axis=1))
    assert scores == pytest.approx(np.take_along_axis(full, expected, axis=1), abs=1e-5)
    assert top_k(queries, docs, 500, cells=101)[0].shape == (37, 101)  # k beyond the corpus: every document
    positives = rng.integers(0, 101, size=37)
    assert positive_ranks(queries, docs, positives, chunk=4).tolist() == [
        1 + int((full[q] > full[q, positives[q]]).sum()) for q in range(37)]
    assert pair_scores(queries, docs, [0, 3], [7, 9]) == pytest.approx([full[0, 7], full[3, 9]], abs=1e-5)


def test_sparse_vectors_stay_sparse_through_scoring():
    from finetune_assets.core.offline_models import splade_tiny_path
    from finetune_assets.core.retrieval.retrieval import encode
    from finetune_assets.core.training.sparse_training import load_splade

    model = load_splade(str(splade_tiny_path()), 64)
    docs = encode(model, TEXTS)
    queries = encode(model, QUERIES, role="query")
    vocabulary = model[0].auto_model.config.vocab_size
    assert scipy.sparse.issparse(docs) and scipy.sparse.issparse(queries)
    assert docs.shape == (len(TEXTS), vocabulary) and docs.nnz < 0.05 * docs.shape[0] * docs.shape[1]
    dense = docs.toarray() @ queries.toarray().T
    assert block_scores(queries, docs, np.arange(len(QUERIES))) == pytest.approx(dense.T, rel=1e-5, abs=1e-5)
    indices, _ = sparse_top_k(torch.tensor(queries.toarray()).to_sparse(), docs, 2)
    assert np.array_equal(np.take_along_axis(dense.T, indices, axis=1),
                          np.sort(dense.T, axis=1)[:, ::-1][:, :2])
    assert scipy.sparse.issparse(to_scipy(torch.tensor(queries.toarray()).to_sparse()))
