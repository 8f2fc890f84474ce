"""Sparse ranking and sparsity figures: a 3-document toy worked by hand, and the fast SPLADE encoder vs the stock one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from finetune_assets.core.data.demo_corpus import python_docs_documents
from finetune_assets.core.retrieval.evaluation import compare_systems
from finetune_assets.core.retrieval.retrieval import block_scores
from finetune_assets.core.retrieval.sparse_retrieval import (
    MAX_PRUNE_RATIO,
    encode_sparse_csr,
    prune_max_ratio,
    sparse_search,
    sparse_top_k,
    sparsity,
    to_scipy,
)
from finetune_assets.core.training.sparse_training import inference_free_model, load_splade


def sparse(rows: list[dict[int, float]], width: int = 5):
    dense = torch.zeros(len(rows), width)
    for row, weights in enumerate(rows):
        for column, value in weights.items():
            dense[row, column] = value
    return dense.to_sparse()


# Dimension 4 of document 0 is stored as an explicit zero below: it must not count as active.
QUERIES = [{0: 1.0, 1: 2.0}, {1: 0.5}]
DOCUMENTS = [{0: 3.0, 2: 1.0}, {1: 1.0}, {1: 2.0, 2: 1.0, 3: 4.0}]


def test_sparsity_of_a_toy_collection_by_hand():
    docs = sparse(DOCUMENTS)
    docs = torch.sparse_coo_tensor(torch.cat([docs.indices(), torch.tensor([[0], [4]])], dim=1),
                                   torch.cat([docs.values(), torch.tensor([0.0])]), docs.shape, check_invariants=True)
    figures = sparsity(sparse(QUERIES), docs)
    # Active dims: queries 2 and 1 -> 1.5; documents 2, 1, 3 -> 2.
    assert figures.query_active_dims == 1.5 and figures.document_active_dims == 2.0
    # p_q = (1/2, 2/2, 0, 0, 0), p_d = (1/3, 2/3, 2/3, 1/3, 0): FLOPS = 1/6 + 2/3 = 5/6.
    assert figures.flops == pytest.approx(5 / 6)
    assert figures.to_dict() == {"avg_active_dims_query": 1.5, "avg_active_dims_document": 2.0, "flops": 0.8333}


def test_prune_max_ratio_keeps_each_rows_weights_near_its_own_maximum():
    # Row maxima 4, 1 and 4; at ratio 0.25 the thresholds are 1, 0.25 and 1 (a weight at the threshold stays).
    docs = sparse([{0: 4.0, 2: 1.0, 4: 0.5}, {1: 1.0}, {1: 2.0, 2: 0.75, 3: 4.0}])
    pruned = prune_max_ratio(docs, 0.25)
    assert pruned.toarray().tolist() == [[4.0, 0, 1.0, 0, 0], [0, 1.0, 0, 0, 0], [0, 2.0, 0, 4.0, 0]]
    assert pruned.nnz == 5
    assert prune_max_ratio(docs, 0.0).nnz == 7  # 0 keeps every weight
    empty = prune_max_ratio(sparse([{}, {2: 1.0}]), 0.5)  # an empty row stays empty
    assert empty.toarray().tolist() == [[0] * 5, [0, 0, 1.0, 0, 0]]
    with pytest.raises(ValueError, match=r"\[0, 1\), got 1"):
        prune_max_ratio(docs, 1)


def test_sparse_search_prunes_documents_and_reports_both_sparsities():
    splade_tiny = load_splade("local:splade-tiny", 128, "cpu")
    texts = [d["text"] for d in python_docs_documents()[:12]]
    ids = [f"d{i}" for i in range(len(texts))]
    queries = {"q": "how do I read a file line by line"}
    full_run, full = sparse_search(splade_tiny, ids, texts, queries, k=12)
    run, pruned = sparse_search(splade_tiny, ids, texts, queries, k=12, document_prune_ratio=0.3)
    assert full.unpruned is None and "flops_unpruned" not in full.to_dict()
    assert pruned.unpruned == full  # the figures before pruning are those of the unpruned search
    assert pruned.document_active_dims < full.document_active_dims and pruned.flops < full.flops
    assert pruned.query_active_dims == full.query_active_dims  # queries are not pruned
    figures = pruned.to_dict()
    assert figures["document_prune_ratio"] == 0.3 and figures["flops_unpruned"] == round(full.flops, 4)
    assert sorted(run["q"]) == sorted(full_run["q"]) and run["q"][0] == full_run["q"][0]
    # A FLOPS ceiling raises the ratio a step at a time until the FLOPS fit under it, never past MAX_PRUNE_RATIO.
    _, at_01 = sparse_search(splade_tiny, ids, texts, queries, k=12, document_prune_ratio=0.1)
    _, at_02 = sparse_search(splade_tiny, ids, texts, queries, k=12, document_prune_ratio=0.2)
    assert at_02.flops < at_01.flops
    _, raised = sparse_search(splade_tiny, ids, texts, queries, k=12, document_prune_ratio=0.1,
                              flops_ceiling=at_02.flops)
    assert raised.prune_ratio in (0.15, 0.2) and raised.flops <= at_02.flops
    _, kept = sparse_search(splade_tiny, ids, texts, queries, k=12, document_prune_ratio=0.1,
                            flops_ceiling=at_01.flops)
    assert kept == at_01  # already under the ceiling: no more pruning
    _, capped = sparse_search(splade_tiny, ids, texts, queries, k=12, document_prune_ratio=0.1, flops_ceiling=0.0)
    assert capped.prune_ratio == MAX_PRUNE_RATIO and capped.flops == at_02.flops


def test_sparse_top_k_is_a_dot_product_ranking():
    indices, scores = sparse_top_k(sparse(QUERIES), sparse(DOCUMENTS), k=3)
    # Query 0 scores 3, 2, 4 against documents 0, 1, 2; query 1 scores 0, 0.5, 1.
    assert indices.tolist()[0] == [2, 0, 1] and scores.tolist()[0] == [4.0, 3.0, 2.0]
    assert indices.tolist()[1][:2] == [2, 1] and scores.tolist()[1] == [1.0, 0.5, 0.0]


def test_score_blocks_take_inference_mode_vectors_of_real_size():
    # Inference-mode vectors of a real size (a dense base model's SPLADE companion on Cranfield's 5,000 training
    # queries once broke torch's sparse product) convert to scipy and score exactly.
    generator = torch.Generator().manual_seed(0)
    rows, width, active = 2000, 30000, 50
    with torch.inference_mode():
        indices = torch.stack([torch.arange(rows).repeat_interleave(active),
                               torch.randint(0, width, (rows * active,), generator=generator)])
        values = torch.rand(rows * active, generator=generator)
        queries = torch.sparse_coo_tensor(indices, values, (rows, width)).coalesce()
        docs = torch.sparse_coo_tensor(indices[:, :20 * active], values[:20 * active], (20, width)).coalesce()
        scores = block_scores(to_scipy(queries), to_scipy(docs), np.arange(rows))
    assert scores.shape == (rows, 20)
    # queries 0-19 are documents 0-19: each one's own dot product is its squared norm
    assert np.allclose(scores[:20, :20].diagonal(), docs.to_dense().pow(2).sum(dim=1).numpy(), rtol=1e-4)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    docs = python_docs_documents()[:6]
    return [d["text"] for d in docs] + ["a", "ok"]   # mixed lengths, so batches carry padding


def test_fast_encoder_gives_the_stock_splade_vectors(texts):
    model = load_splade("local:splade-tiny", 128, "cpu")
    # The CSR the fast encoder builds directly, 8 bytes an active term (int32 terms, float32 weights).
    csr = encode_sparse_csr(model, texts, role="document", batch_size=3)
    assert csr.indices.dtype == csr.indptr.dtype == np.int32 and csr.data.dtype == np.float32
    assert csr.has_sorted_indices
    fast = torch.from_numpy(csr.toarray())
    stock = model.encode_document(texts, batch_size=3, convert_to_tensor=True).to_dense()
    assert fast.shape == stock.shape and (fast > 0).sum() > 100
    assert torch.allclose(fast, stock, atol=1e-5)


def test_inference_free_routes_queries_and_documents(texts):
    splade = load_splade("local:splade-tiny", 128, "cpu")
    model = inference_free_model(splade, texts)
    queries = ["how do I sort a list", "read a file"]
    assert torch.equal(torch.from_numpy(encode_sparse_csr(model, queries, role="query").toarray()),
                       model.encode_query(queries, convert_to_tensor=True).to_dense())
    assert torch.allclose(torch.from_numpy(encode_sparse_csr(model, texts[:3], role="document").toarray()),
                          splade.encode_document(texts[:3], convert_to_tensor=True).to_dense(), atol=1e-5)
    with pytest.raises(ValueError, match="role"):
        encode_sparse_csr(model, queries, role="passage")


def test_compare_systems_reports_sparsity_for_sparse_models(texts):
    docs = python_docs_documents()[:6]
    queries = {"q1": docs[0]["title"], "q2": docs[3]["title"]}
    qrels = {"q1": {docs[0]["id"]: 1}, "q2": {docs[3]["id"]: 1}}
    model = load_splade("local:splade-tiny", 128, "cpu")
    comparison = compare_systems([d["id"] for d in docs], [d["text"] for d in docs], queries, qrels,
                                 {"base": model}, include_bm25=True, batch_size=4)
    assert set(comparison.results) == {"bm25", "base"} and set(comparison.sparsity) == {"base"}
    figures = comparison.sparsity["base"]
    assert 0 < figures["avg_active_dims_query"] < figures["avg_active_dims_document"]
    assert 0 < figures["flops"] <= figures["avg_active_dims_query"]
    assert comparison.to_dict()["sparsity"] == comparison.sparsity
    assert "| base | " in comparison.markdown().split("FLOPS |")[1]


def test_a_precomputed_run_is_scored_like_a_fresh_one_without_encoding_again(texts):
    docs = python_docs_documents()[:6]
    queries = {"q1": docs[0]["title"], "q2": docs[3]["title"]}
    qrels = {"q1": {docs[0]["id"]: 1}, "q2": {docs[3]["id"]: 1}}
    model = load_splade("local:splade-tiny", 128, "cpu")
    args = ([d["id"] for d in docs], [d["text"] for d in docs], queries, qrels)
    fresh = compare_systems(*args, {"base": model}, include_bm25=False, batch_size=4)

    class Unusable:  # any attempt to encode with it fails the test
        def __getattr__(self, name):
            raise AssertionError(f"the precomputed system was encoded again ({name})")

    reused = compare_systems(*args, {"base": Unusable()}, include_bm25=False, batch_size=4,
                             precomputed={"base": (fresh.runs["base"], fresh.sparsity["base"])})
    assert reused.results == fresh.results and reused.sparsity == fresh.sparsity
    assert reused.runs["base"]["q1"] == fresh.runs["base"]["q1"] and len(fresh.runs["base"]["q1"]) == 6


def test_large_encodings_show_a_progress_bar_and_small_ones_stay_quiet(texts, monkeypatch, capsys):
    from finetune_assets.core.retrieval import retrieval

    model = load_splade("local:splade-tiny", 128, "cpu")
    retrieval.encode(model, texts, batch_size=4)
    assert "encoding documents" not in capsys.readouterr().err
    monkeypatch.setattr(retrieval, "PROGRESS_FROM_TEXTS", len(texts))  # as if these were the corpus' thousands
    shown = retrieval.encode(model, texts, batch_size=4)
    err = capsys.readouterr().err
    assert "encoding documents" in err and "2/2" in err  # 8 texts in batches of 4
    assert np.array_equal(shown.toarray(), encode_sparse_csr(model, texts, role="document", batch_size=4).toarray())


def test_compare_systems_prunes_the_tuned_model_down_to_the_base_models_flops():
    model = load_splade("local:splade-tiny", 128, "cpu")
    texts = [d["text"] for d in python_docs_documents()[:12]]
    ids = [f"d{i}" for i in range(len(texts))]
    queries = {"q1": "read a file line by line", "q2": "sort a list"}
    qrels = {"q1": {"d0": 1}, "q2": {"d1": 1}}
    base = compare_systems(ids, texts, queries, qrels, {"base": model}, include_bm25=False)
    cheap = {**base.sparsity["base"], "flops": base.sparsity["base"]["flops"] / 4}
    for base_figures, expected in ((base.sparsity["base"], 0.1), (cheap, MAX_PRUNE_RATIO)):
        comparison = compare_systems(ids, texts, queries, qrels, {"tuned": model}, include_bm25=False,
                                     precomputed={"base": (base.runs["base"], base_figures)},
                                     document_prune_ratios={"tuned": 0.1}, flops_ceilings={"tuned": "base"})
        # the same model pruned at 0.1 already costs less than unpruned; a 4x cheaper base raises it to the cap
        assert comparison.sparsity["tuned"]["document_prune_ratio"] == expected
    assert comparison.sparsity["tuned"]["flops"] > cheap["flops"]  # the cap holds even when the ceiling is missed
