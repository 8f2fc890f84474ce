"""Cross-encoder teacher: the packaged ms-marco MiniLM ONNX model, and scoring mined rows once."""
from __future__ import annotations

import numpy as np
import pytest

from finetune_assets.core.teachers.teacher import OnnxCrossEncoder, add_teacher_scores, load_teacher, negative_columns

PAIRS = [
    ("how many people live in berlin",
     "Berlin is the capital of Germany. The city has a population of about 3.7 million registered inhabitants."),
    ("how many people live in berlin",
     "The Metropolitan Museum of Art in New York City is one of the largest art museums in the world."),
    ("what causes rain", "Sourdough bread is leavened with a culture of wild yeast and lactic acid bacteria."),
    ("what causes rain",
     "Rain forms when water vapour in clouds condenses into droplets that grow heavy enough to fall."),
]


@pytest.fixture(scope="module")
def onnx_teacher() -> OnnxCrossEncoder:
    teacher = load_teacher("default", threads=1, batch_size=2)
    assert isinstance(teacher, OnnxCrossEncoder)
    return teacher


def test_onnx_teacher_ranks_the_relevant_passage_first(onnx_teacher):
    progress = []
    scores = onnx_teacher.score(PAIRS, on_progress=lambda done, total: progress.append((done, total)))
    assert scores.shape == (4,) and scores.dtype == np.float32
    assert scores[0] > scores[1] + 3 and scores[3] > scores[2] + 3  # logits, far apart for such pairs
    assert progress == [(2, 4), (4, 4)]
    # Batches are sorted by length and padded per batch: scores still come back in input order, and a pair
    # scores (nearly) the same alone as beside longer ones (the int8 model quantises activations per batch).
    alone = np.array([onnx_teacher.score([pair])[0] for pair in PAIRS])
    # How near depends on the CPU's int8 kernels: 0.25 logits apart (3.8%) with AVX-512 VNNI, under 0.15 on AVX2.
    np.testing.assert_allclose(scores, alone, rtol=0.05, atol=0.15)


def test_onnx_teacher_truncates_long_passages(onnx_teacher):
    long_passage = PAIRS[0][1] + " Berlin" * 2000
    encoding = onnx_teacher.tokenizer.encode(PAIRS[0][0], long_passage)
    assert len(encoding.ids) == 256
    assert np.isfinite(onnx_teacher.score([(PAIRS[0][0], long_passage)])).all()


def test_no_teacher_names():
    assert load_teacher("") is None and load_teacher(" none ") is None


def test_other_names_load_a_sentence_transformers_cross_encoder():
    # No torch cross-encoder ships offline: a BERT checkpoint with a fresh one-logit head exercises the path.
    from finetune_assets.core.offline_models import minilm_path
    from finetune_assets.core.teachers.teacher import SentenceTransformersCrossEncoder

    teacher = load_teacher(str(minilm_path()), max_length=64, batch_size=1)
    assert isinstance(teacher, SentenceTransformersCrossEncoder)
    progress = []
    scores = teacher.score(PAIRS, on_progress=lambda done, total: progress.append((done, total)))
    assert scores.shape == (4,) and np.isfinite(scores).all() and progress == [(4, 4)]
    # Raw logits, not sigmoid probabilities: the same numbers the model's own predict gives with no activation.
    import torch

    raw = teacher.model.predict([list(p) for p in PAIRS], activation_fn=torch.nn.Identity(), convert_to_numpy=True)
    # Batches of 1 and of 4 pad differently, so float32 sums differ in the last bits (logits here are about 0.01):
    # an absolute tolerance far below any sigmoid's 0.5.
    np.testing.assert_allclose(scores, raw, rtol=1e-4, atol=1e-6)


class OverlapTeacher:
    """Scores a pair by shared words, so the expected columns are easy to derive; counts its calls."""

    name = "overlap"

    def __init__(self):
        self.calls = []

    def score(self, pairs, *, on_progress=None):
        self.calls.append(len(pairs))
        return np.array([len(set(q.split()) & set(p.split())) for q, p in pairs], dtype=np.float32)


def test_add_teacher_scores_adds_a_column_per_candidate_in_one_pass():
    rows = [
        {"query": "red apple pie", "positive": "apple pie with red apple", "negative_1": "pie crust",
         "negative_1_id": "d2", "negative_2": "red red car", "negative_2_id": "d3"},
        {"query": "blue sky", "positive": "the sky is blue", "negative_1": "blue sky blue sky",
         "negative_1_id": "d5", "negative_2": "grass", "negative_2_id": "d6"},
    ]
    assert negative_columns(rows[0]) == ["negative_1", "negative_2"]
    teacher = OverlapTeacher()
    scoring = add_teacher_scores(rows, teacher)
    assert teacher.calls == [6]
    assert [(r["teacher_positive_score"], r["teacher_negative_1_score"], r["teacher_negative_2_score"])
            for r in rows] == [(3.0, 1.0, 1.0), (2.0, 2.0, 0.0)]
    assert scoring.pairs == 6
    assert scoring.mean_margin == pytest.approx(((3 - 1) + (3 - 1) + (2 - 2) + (2 - 0)) / 4)
    assert scoring.negatives_above_positive == 0
    rows[1]["positive"] = "nothing shared"
    del rows[1]["teacher_positive_score"]
    assert add_teacher_scores(rows, teacher).negatives_above_positive == 1  # "blue sky blue sky" beats it


def test_scores_the_rows_already_hold_are_kept():
    rows = [{"query": "red apple", "positive": "red apple", "negative_1": "apple", "teacher_positive_score": 9.0}]
    teacher = OverlapTeacher()
    scoring = add_teacher_scores(rows, teacher)
    assert teacher.calls == [1] and (scoring.pairs, scoring.reused) == (1, 1)
    assert (rows[0]["teacher_positive_score"], rows[0]["teacher_negative_1_score"]) == (9.0, 1.0)
    assert add_teacher_scores(rows, teacher).pairs == 0 and teacher.calls == [1]


def test_mined_negatives_asset_scores_with_the_default_teacher(onnx_teacher):
    from dagster import build_asset_context

    from finetune_assets.stages.training.mined_negatives import score_with_teacher

    rows = [{"query": q, "positive": relevant, "negative_1": irrelevant}
            for (q, relevant), (_, irrelevant) in [(PAIRS[0], PAIRS[1]), (PAIRS[3], PAIRS[2])]]
    assert score_with_teacher(build_asset_context(), None, rows) == {}  # mined_negatives teacher "" = none
    assert "teacher_positive_score" not in rows[0]
    metadata = score_with_teacher(build_asset_context(), onnx_teacher, rows)
    assert metadata["teacher_pairs_scored"] == 4 and metadata["teacher_pairs_per_second"] > 0
    assert metadata["teacher_mean_margin"] > 3 and metadata["teacher_negatives_above_positive"] == 0
    assert all(r["teacher_positive_score"] > r["teacher_negative_1_score"] for r in rows)
