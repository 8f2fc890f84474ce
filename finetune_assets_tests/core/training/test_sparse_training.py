"""IDF initialisation and SPLADE / inference-free SPLADE training on 16 tiny pairs (SPLADE-tiny, 4.4M parameters)."""
from __future__ import annotations

import math

import pytest
import torch

from finetune_assets.core.model_types import detect_model_type
from finetune_assets.core.offline_models import splade_tiny_path
from finetune_assets.core.training.dense_training import Hyperparameters
from finetune_assets.core.training.sparse_training import (
    idf_weights,
    inference_free_model,
    load_splade,
    train_sparse,
    training_documents,
)

TOPICS = ["sorting lists", "reading files", "string formatting", "virtual environments", "list comprehensions",
          "exceptions", "dictionaries", "decorators", "generators", "context managers", "regular expressions",
          "unit tests", "type hints", "dataclasses", "logging", "threads"]


def tiny_rows(negatives: bool = False) -> list[dict]:
    rows = []
    for number, topic in enumerate(TOPICS):
        row = {"query": f"how do python {topic} work", "positive": f"Python {topic}: a short guide with examples."}
        if negatives:
            row["negative_1"] = f"Python {TOPICS[(number + 1) % len(TOPICS)]}: a short guide with examples."
            row["negative_1_id"], row["negative_1_score"] = f"d{number + 1}", 0.5
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(splade_tiny_path()))


def test_idf_is_bm25_idf_over_documents(tokenizer):
    weights = idf_weights(["apple banana", "apple cherry", "apple apple"], tokenizer)
    vocab = tokenizer.get_vocab()
    # N = 3 documents; df(apple) = 3 (counted once per document), df(banana) = 1, df(zebra) = 0.
    assert weights[vocab["apple"]].item() == pytest.approx(math.log(1 + 0.5 / 3.5), rel=1e-6)
    assert weights[vocab["banana"]].item() == pytest.approx(math.log(1 + 2.5 / 1.5), rel=1e-6)
    assert weights[vocab["cherry"]].item() == pytest.approx(math.log(1 + 2.5 / 1.5), rel=1e-6)
    assert weights[vocab["zebra"]].item() == pytest.approx(math.log(8.0), rel=1e-6)
    assert weights[[vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"], vocab["[UNK]"]]].tolist() == [0.0] * 4
    assert weights.shape == (len(vocab),)


def test_idf_needs_documents(tokenizer):
    with pytest.raises(ValueError, match="at least one document"):
        idf_weights([], tokenizer)


def test_training_documents_are_distinct_positives_and_negatives():
    rows = tiny_rows(negatives=True)[:3]
    assert training_documents(rows) == [rows[0]["positive"], rows[0]["negative_1"], rows[1]["negative_1"],
                                        rows[2]["negative_1"]]


def test_inference_free_query_side_is_the_idf_table():
    documents = ["Python sorting lists guide.", "Python reading files guide.", "Python threads."]
    model = inference_free_model(load_splade("local:splade-tiny", 32, "cpu"), documents)
    vector = model.encode_query(["python threads"], convert_to_tensor=True).to_dense()[0]
    vocab = model[0].sub_modules["query"][0].tokenizer.get_vocab()
    assert {i for i in vector.nonzero().flatten().tolist()} == {vocab["python"], vocab["threads"]}
    assert vector[vocab["python"]].item() == pytest.approx(math.log(1 + 0.5 / 3.5), rel=1e-6)
    assert vector[vocab["threads"]].item() == pytest.approx(math.log(1 + 2.5 / 1.5), rel=1e-6)


def test_sparse_training_on_16_pairs_with_hard_negatives(tmp_path):
    from sentence_transformers import SparseEncoder

    hp = Hyperparameters(model_type="sparse", batch_size=8, max_seq_length=32, num_negatives=1, logging_steps=1)
    assert hp.base_model == "local:splade-tiny" and (hp.query_regularizer_weight, hp.document_regularizer_weight) == (
        5e-5, 3e-5)
    seen: list[dict] = []
    outcome = train_sparse(tiny_rows(negatives=True), hp, tmp_path / "model", on_log=seen.append)
    assert outcome.steps == 2 and outcome.rows == 16
    assert [entry["step"] for entry in seen] == [1, 2] and all(math.isfinite(e["loss"]) for e in seen)
    assert outcome.final_loss == seen[-1]["loss"]
    assert detect_model_type(tmp_path / "model") == "sparse"
    trained = SparseEncoder(str(tmp_path / "model"), device="cpu")
    base = SparseEncoder(str(splade_tiny_path()), device="cpu")
    changed = [not torch.equal(a, b) for a, b in zip(trained.parameters(), base.parameters())]
    assert any(changed)


def test_inference_free_training_uses_the_router_and_its_own_learning_rate(tmp_path):
    from sentence_transformers import SparseEncoder

    rows = tiny_rows()
    hp = Hyperparameters(model_type="inference_free", batch_size=8, max_seq_length=32, logging_steps=1)
    outcome = train_sparse(rows, hp, tmp_path / "model")
    assert outcome.steps == 2 and math.isfinite(outcome.final_loss)
    assert detect_model_type(tmp_path / "model") == "inference_free"
    trained = SparseEncoder(str(tmp_path / "model"), device="cpu")
    weights = trained[0].sub_modules["query"][0].weight.detach()
    initial = idf_weights(training_documents(rows), trained[0].sub_modules["query"][0].tokenizer)
    moved = (weights - initial).abs()
    # The token weights trained (at 1e-3, not the encoder's 2e-5) but stay close to their IDF start.
    assert moved.max().item() > 1e-4 and moved.max().item() < 0.05


def test_train_sparse_refuses_dense_and_small_data(tmp_path):
    with pytest.raises(ValueError, match="sparse or inference_free"):
        train_sparse(tiny_rows(), Hyperparameters(), tmp_path / "m")
    with pytest.raises(ValueError, match="only 3 training pairs"):
        train_sparse(tiny_rows()[:3], Hyperparameters(model_type="sparse"), tmp_path / "m")
