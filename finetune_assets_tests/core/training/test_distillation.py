"""Distillation losses: labels from teacher scores, the trainer's columns, and short training runs."""
from __future__ import annotations

import math

import pytest

from finetune_assets.core.training.dense_training import Hyperparameters, train_dense
from finetune_assets.core.training.losses import teacher_labels, training_dataset

ROWS = [
    {"query": "q1", "positive": "p1", "doc_id": "d1", "negative_1": "n1", "negative_1_id": "d7",
     "negative_1_score": 0.4, "negative_2": "m1", "negative_2_id": "d8", "negative_2_score": 0.3,
     "teacher_positive_score": 7.5, "teacher_negative_1_score": -2.0, "teacher_negative_2_score": 8.0},
    {"query": "q2", "positive": "p2", "doc_id": "d2", "negative_1": "n2", "negative_1_id": "d9",
     "negative_1_score": 0.2, "negative_2": "m2", "negative_2_id": "d3", "negative_2_score": 0.1,
     "teacher_positive_score": 1.0, "teacher_negative_1_score": 0.25, "teacher_negative_2_score": -3},
]


def test_margin_mse_labels_are_positive_minus_each_negative():
    assert teacher_labels(ROWS, 2, "margin_mse") == [[9.5, -0.5], [0.75, 4.0]]
    assert teacher_labels(ROWS, 1, "margin_mse") == [[9.5], [0.75]]
    assert teacher_labels(ROWS, 2, "mnrl+margin_mse") == [[9.5, -0.5], [0.75, 4.0]]


def test_distill_kl_labels_are_the_scores_of_positive_then_negatives():
    assert teacher_labels(ROWS, 2, "distill_kl") == [[7.5, -2.0, 8.0], [1.0, 0.25, -3.0]]
    assert teacher_labels(ROWS, 1, "distill_kl") == [[7.5, -2.0], [1.0, 0.25]]
    assert teacher_labels(ROWS, 2, "mnrl") is None


def test_trainer_gets_text_columns_then_label_only():
    dataset = training_dataset(ROWS, ["query", "positive", "negative_1"], "distill_kl")
    assert dataset.column_names == ["query", "positive", "negative_1", "label"]
    assert dataset[1] == {"query": "q2", "positive": "p2", "negative_1": "n2", "label": [1.0, 0.25]}
    assert training_dataset(ROWS, ["query", "positive"], "mnrl").column_names == ["query", "positive"]


def test_missing_teacher_scores_is_a_clear_error(tmp_path):
    rows = [dict(ROWS[0]), {k: v for k, v in ROWS[1].items() if k != "teacher_negative_2_score"}]
    with pytest.raises(ValueError, match="training row 2 has no teacher_negative_2_score: loss 'margin_mse' needs "
                                         "teacher scores; set mined_negatives teacher"):
        teacher_labels(rows, 2, "margin_mse")
    untaught = [{k: v for k, v in r.items() if not k.startswith("teacher_")} for r in ROWS]
    # train_dense fails on the rows before loading a model.
    with pytest.raises(ValueError, match="training row 1 has no teacher_positive_score, teacher_negative_1_score: "
                                         "loss 'distill_kl'"):
        train_dense(untaught, Hyperparameters(loss="distill_kl", num_negatives=1, batch_size=2), tmp_path / "m")
    with pytest.raises(ValueError, match="loss 'margin_mse' .* needs num_negatives >= 1"):
        teacher_labels(ROWS, 0, "margin_mse")
    with pytest.raises(ValueError, match="unknown loss 'triplet'; use one of mnrl, margin_mse"):
        Hyperparameters.from_mapping({"loss": "triplet"})
    assert Hyperparameters.from_mapping({"loss": "distill_kl"}).loss == "distill_kl"


TOPICS = ["sorting a list", "reading a file", "formatting strings", "virtual environments", "raising exceptions",
          "merging dictionaries", "writing decorators", "using generators"]


def taught_rows() -> list[dict]:
    """8 distinct rows; the teacher prefers the negative by 5 logits, the opposite of what the texts say."""
    rows = []
    for number, topic in enumerate(TOPICS):
        rows.append({"query": f"how do I go about {topic} in python",
                     "positive": f"A guide to {topic} in Python, with examples.",
                     "negative_1": f"Cooking recipe number {number}: bake the bread for {20 + number} minutes.",
                     "teacher_positive_score": 0.0, "teacher_negative_1_score": 5.0})
    return rows


def expected_first_loss(rows: list[dict], hp: Hyperparameters) -> float:
    """MarginMSE with the base model's scaled cosine scores, before any update (dropout aside)."""
    from sentence_transformers import SentenceTransformer

    from finetune_assets.core.offline_models import resolve_base_model

    model = SentenceTransformer(resolve_base_model(hp.base_model), device="cpu")
    model.max_seq_length = hp.max_seq_length
    query, positive, negative = (model.encode([r[c] for r in rows], convert_to_tensor=True)
                                 for c in ("query", "positive", "negative_1"))
    student = hp.cosine_scale * ((query * positive).sum(1) - (query * negative).sum(1))  # normalised embeddings
    labels = [r["teacher_positive_score"] - r["teacher_negative_1_score"] for r in rows]
    return sum((float(s) - label) ** 2 for s, label in zip(student, labels)) / len(rows)


def test_dense_margin_mse_trains_one_step_on_the_teacher_margins(tmp_path):
    rows = taught_rows()
    hp = Hyperparameters(loss="margin_mse", num_negatives=1, batch_size=8, max_seq_length=32, logging_steps=1)
    outcome = train_dense(rows, hp, tmp_path / "model")
    assert outcome.steps == 1 and (tmp_path / "model" / "config.json").exists()
    # The logged loss is MarginMSE against the teacher margin (-5) of the scaled cosine margin (about +5 to +10
    # for these texts): hundreds, where MNRL on 8 rows would be below 3. Training-mode dropout shrinks the
    # cosine margins, so the logged loss runs about 12% under the dropout-free expectation.
    expected = expected_first_loss(rows, hp)
    assert expected > 50
    assert outcome.loss_history[0]["loss"] == pytest.approx(expected, rel=0.25)


def test_dense_mnrl_plus_margin_mse_runs_both_parts(tmp_path):
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MarginMSELoss, MultipleNegativesRankingLoss

    from finetune_assets.core.offline_models import resolve_model
    from finetune_assets.core.training.losses import ranking_loss

    rows = taught_rows()
    model = SentenceTransformer(resolve_model("local:all-MiniLM-L6-v2"), device="cpu").eval()
    loss = ranking_loss(model, "mnrl+margin_mse")
    embeddings = [model.encode([r[c] for r in rows], convert_to_tensor=True) for c in ("query", "positive",
                                                                                        "negative_1")]
    labels = torch.tensor(teacher_labels(rows, 1, "margin_mse"))
    parts = loss.compute_loss_from_embeddings(embeddings, labels)
    assert set(parts) == {"mnrl", "margin_mse"}
    assert float(parts["mnrl"]) == pytest.approx(
        float(MultipleNegativesRankingLoss(model).compute_loss_from_embeddings(embeddings, labels)), rel=1e-5)
    assert float(parts["margin_mse"]) == pytest.approx(float(MarginMSELoss(
        model, similarity_fct=loss.parts["margin_mse"].similarity_fct).compute_loss_from_embeddings(embeddings,
                                                                                                     labels)))
    # Through the trainer, which sums the parts.
    hp = Hyperparameters(loss="mnrl+margin_mse", num_negatives=1, batch_size=8, max_seq_length=32, logging_steps=1,
                         base_model="local:all-MiniLM-L6-v2")  # the model the parts above were computed with
    outcome = train_dense(rows, hp, tmp_path / "model")
    assert outcome.steps == 1 and math.isfinite(outcome.final_loss)
    assert outcome.final_loss > float(parts["margin_mse"]) * 0.75


def test_sparse_distill_kl_trains_one_step(tmp_path):
    from finetune_assets.core.training.sparse_training import train_sparse

    rows = taught_rows()
    hp = Hyperparameters(model_type="sparse", loss="distill_kl", num_negatives=1, batch_size=8, max_seq_length=32,
                         logging_steps=1)
    outcome = train_sparse(rows, hp, tmp_path / "model")
    assert outcome.steps == 1 and math.isfinite(outcome.final_loss) and outcome.final_loss > 0


def test_training_on_shorter_texts_saves_a_model_that_reads_the_full_length(tmp_path):
    from sentence_transformers import SentenceTransformer

    rows = taught_rows()
    hp = Hyperparameters.from_mapping({"loss": "margin_mse", "num_negatives": "1", "batch_size": "8",
                                       "max_seq_length": "64", "train_max_seq_length": "16", "logging_steps": "1"})
    assert (hp.train_max_seq_length, hp.training_sequence_length) == (16, 16)
    outcome = train_dense(rows, hp, tmp_path / "model")
    assert outcome.steps == 1
    assert SentenceTransformer(str(tmp_path / "model"), device="cpu").max_seq_length == 64
    assert Hyperparameters(max_seq_length=64).training_sequence_length == 64
    # never longer than the saved model reads
    assert Hyperparameters(max_seq_length=64, train_max_seq_length=256).training_sequence_length == 64
