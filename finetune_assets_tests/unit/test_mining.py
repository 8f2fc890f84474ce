import numpy as np
import pytest

from finetune_assets.core.mining import MiningSettings, mine_hard_negatives


class VectorModel:
    """Encodes each known text to a fixed vector, so ranks and scores are known exactly."""

    def __init__(self, vectors):
        self.vectors = vectors

    def encode(self, texts, **_):
        rows = np.array([self.vectors[t] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _angle(degrees):
    radians = np.deg2rad(degrees)
    return [np.cos(radians), np.sin(radians)]


DOCS = {"pos": 0, "near": 1, "close": 10, "mid": 30, "far": 60, "opposite": 170}


def test_guard_skips_top_ranks_and_too_close_candidates():
    vectors = {name: _angle(angle) for name, angle in DOCS.items()} | {"query": _angle(0)}
    pairs = [{"query": "query", "positive": "pos", "doc_id": "pos"}]
    result = mine_hard_negatives(VectorModel(vectors), pairs, list(DOCS), list(DOCS),
                                 MiningSettings(num_negatives=2, range_min=2, range_max=6, relative_margin=0.05))
    row = result.rows[0]
    # rank 0 is the positive, rank 1 ("near") is inside the skipped top ranks, "close" (cos 0.985) is within
    # 5% of the positive's score, so the first two kept are "mid" and "far".
    assert (row["negative_1_id"], row["negative_2_id"]) == ("mid", "far")
    assert result.removed == {"positive": 1, "top-rank skip": 1, "margin guard": 1}
    assert row["negative_1_score"] == pytest.approx(np.cos(np.deg2rad(30)), abs=1e-4)
    assert result.pairs_without_negative == 0


def test_rows_short_of_candidates_get_random_fill_and_zero_negatives_is_a_no_op():
    vectors = {name: _angle(angle) for name, angle in DOCS.items()} | {"query": _angle(0)}
    pairs = [{"query": "query", "positive": "pos", "doc_id": "pos"}]
    strict = MiningSettings(num_negatives=2, range_min=0, range_max=6, relative_margin=0.999)
    result = mine_hard_negatives(VectorModel(vectors), pairs, list(DOCS), list(DOCS), strict, seed=3)
    row = result.rows[0]
    assert result.pairs_without_negative == 1 and result.random_fill >= 1
    assert {row["negative_1_id"], row["negative_2_id"]}.isdisjoint({"pos"})
    assert row["negative_1_id"] != row["negative_2_id"]
    untouched = mine_hard_negatives(None, pairs, list(DOCS), list(DOCS), MiningSettings(num_negatives=0))
    assert untouched.rows == pairs and untouched.candidates_seen == 0
    with pytest.raises(ValueError, match="corpus of 1 documents"):
        mine_hard_negatives(VectorModel(vectors), pairs, ["pos"], ["pos"], MiningSettings(num_negatives=1))
