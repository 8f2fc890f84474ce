import numpy as np
import pytest

from finetune_assets.core.jsonl import write_jsonl
from finetune_assets.core.retrieval.mining import MiningSettings, mine_hard_negatives
from finetune_assets.core.teachers.teacher import add_teacher_scores
from finetune_assets.stages.training.trained_model import mined_negative_count


class VectorModel:
    """Encodes each known text to a fixed vector, so ranks and scores are known exactly."""

    def __init__(self, vectors):
        self.vectors = vectors

    def encode(self, texts, **_):
        rows = np.array([self.vectors[t] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


class TableTeacher:
    """A cross-encoder stand-in: a fixed score per passage; records each batch it is asked to score."""

    name = "table teacher"

    def __init__(self, scores):
        self.scores, self.calls = scores, []

    def score(self, pairs, **_):
        self.calls.append(list(pairs))
        return np.array([self.scores[passage] for _, passage in pairs], dtype=np.float32)


def _angle(degrees):
    radians = np.deg2rad(degrees)
    return [np.cos(radians), np.sin(radians)]


DOCS = {"pos": 0, "near": 1, "close": 10, "mid": 30, "far": 60, "opposite": 170}
VECTORS = {name: _angle(angle) for name, angle in DOCS.items()} | {"query": _angle(0)}
PAIRS = [{"query": "query", "positive": "pos", "doc_id": "pos"}]


def test_guard_skips_top_ranks_and_too_close_candidates():
    result = mine_hard_negatives(VectorModel(VECTORS), PAIRS, list(DOCS), list(DOCS),
                                 MiningSettings(num_negatives=2, range_min=2, range_max=6, relative_margin=0.05))
    row = result.rows[0]
    # rank 0 is the positive, rank 1 ("near") is inside the skipped top ranks, "close" (cos 0.985) is within
    # 5% of the positive's score, so the first two kept are "mid" and "far".
    assert (row["negative_1_id"], row["negative_2_id"]) == ("mid", "far")
    assert result.removed == {"dense/positive": 1, "dense/top-rank skip": 1, "dense/margin guard": 1}
    assert row["negative_1_score"] == pytest.approx(np.cos(np.deg2rad(30)), abs=1e-4)
    assert (row["negative_1_source"], row["negative_2_source"]) == ("dense", "dense")
    assert result.pairs_without_negative == 0


def test_rows_short_of_candidates_get_random_fill_and_zero_negatives_is_a_no_op():
    strict = MiningSettings(num_negatives=2, range_min=0, range_max=6, relative_margin=0.999)
    result = mine_hard_negatives(VectorModel(VECTORS), PAIRS, list(DOCS), list(DOCS), strict, seed=3)
    row = result.rows[0]
    assert result.pairs_without_negative == 1 and result.random_fill >= 1
    assert {row["negative_1_id"], row["negative_2_id"]}.isdisjoint({"pos"})
    assert row["negative_1_id"] != row["negative_2_id"]
    assert "random" in (row["negative_1_source"], row["negative_2_source"])
    untouched = mine_hard_negatives(None, PAIRS, list(DOCS), list(DOCS),
                                    MiningSettings(num_negatives=0, roundtrip_top_k=0))
    assert untouched.rows == PAIRS and untouched.candidates_seen == 0
    with pytest.raises(ValueError, match="corpus of 1 documents"):
        mine_hard_negatives(VectorModel(VECTORS), PAIRS, ["pos"], ["pos"], MiningSettings(num_negatives=1))
    with pytest.raises(ValueError, match="training pair 1 .*doc_id 'gone'"):
        mine_hard_negatives(VectorModel(VECTORS), [{"query": "query", "positive": "x", "doc_id": "gone"}],
                            list(DOCS), list(DOCS), MiningSettings())


# The source document of "generic" ranks 5th: four documents are closer to the query than it.
ROUNDTRIP_DOCS = {"a": 0, "b": 4, "c": 8, "d": 12, "src": 16, "x": 40, "y": 60, "z": 80}
ROUNDTRIP_VECTORS = {name: _angle(angle) for name, angle in ROUNDTRIP_DOCS.items()} | {
    "generic": _angle(0), "specific": _angle(80)}
ROUNDTRIP_PAIRS = [{"query": "generic", "positive": "src", "doc_id": "src"},
                   {"query": "specific", "positive": "z", "doc_id": "z"}]


@pytest.mark.parametrize("top_k, kept", [(3, ["specific"]), (5, ["generic", "specific"])])
def test_round_trip_keeps_a_query_only_when_its_source_ranks_within_top_k(top_k, kept):
    docs = list(ROUNDTRIP_DOCS)
    result = mine_hard_negatives(VectorModel(ROUNDTRIP_VECTORS), ROUNDTRIP_PAIRS, docs, docs,
                                 MiningSettings(num_negatives=0, roundtrip_top_k=top_k))
    assert [r["query"] for r in result.rows] == kept
    assert list(result.roundtrip.ranks) == [5, 1]
    assert result.rows == [p for p in ROUNDTRIP_PAIRS if p["query"] in kept]  # no negative columns at n = 0
    metadata = result.roundtrip.metadata()
    assert metadata["roundtrip_queries_kept"] == len(kept)
    assert metadata["roundtrip_kept_fraction"] == len(kept) / 2
    assert metadata["roundtrip_judge"] == "base model"
    expected_dropped = [] if top_k == 5 else [{"query": "generic", "doc_id": "src", "rank": 5}]
    assert result.roundtrip.dropped_examples == expected_dropped
    # The vectors mining used stay with the result, the queries' aligned with the rows kept (for the teacher matrix).
    model = VectorModel(ROUNDTRIP_VECTORS)
    np.testing.assert_allclose(result.query_embeddings, model.encode(kept))
    np.testing.assert_allclose(result.doc_embeddings, model.encode(docs))


def test_round_trip_with_a_teacher_reranks_the_base_models_top_documents():
    docs = list(ROUNDTRIP_DOCS)
    # The teacher prefers the source document to everything, but "z" lies beyond the rerank depth for
    # "generic", so only "generic" can be rescued: its source is 5th for the base model, within depth 6.
    teacher = TableTeacher({"a": 1.0, "b": 0.5, "c": 0.2, "d": 0.1, "src": 9.0, "x": 0.0, "y": 0.0, "z": 9.5})
    pairs = ROUNDTRIP_PAIRS + [{"query": "generic", "positive": "z", "doc_id": "z"}]
    result = mine_hard_negatives(VectorModel(ROUNDTRIP_VECTORS), pairs, docs, docs,
                                 MiningSettings(num_negatives=0, roundtrip_top_k=1, roundtrip_rerank_depth=6),
                                 teacher=teacher)
    assert list(result.roundtrip.ranks) == [1, 1, 8]
    assert [(r["query"], r["doc_id"]) for r in result.rows] == [("generic", "src"), ("specific", "z")]
    assert result.roundtrip.judge == "table teacher"
    # The first two queries send their 6 candidates each; the third, whose source lies deeper, sends none.
    assert result.teacher_pairs_scored == 12


# Dense angle per text; BM25 sees the words. "efficiency ratings" and "rooftop arrays" match all three query
# terms but are longer than the positive, so BM25 ranks the positive first, then those two, then "mounting".
MIXED = {
    "solar panel efficiency": 0,
    "photovoltaic output in cold weather": 3,
    "sunlight conversion rates": 6,
    "solar panel efficiency of rooftop arrays in winter months": 9,
    "wind turbines offshore": 30,
    "hydro dams regulate rivers": 45,
    "solar panel efficiency ratings": 120,
    "solar panel mounting": 130,
}


def test_bm25_candidates_are_interleaved_by_rank_deduplicated_and_counted_per_source():
    texts = list(MIXED)
    ids = [f"d{i}" for i in range(len(texts))]
    vectors = {t: _angle(a) for t, a in MIXED.items()} | {"solar panel efficiency?": _angle(0)}
    pairs = [{"query": "solar panel efficiency?", "positive": texts[0], "doc_id": "d0"}]
    settings = MiningSettings(num_negatives=3, range_min=2, range_max=10, relative_margin=0.05, roundtrip_top_k=1,
                              sources=("dense", "bm25"))
    result = mine_hard_negatives(VectorModel(vectors), pairs, ids, texts, settings)
    row = result.rows[0]
    # dense: d0 (positive), d1 (top-rank skip), d2 (margin guard), d3 (seen first by BM25), d4, d5 chosen;
    # bm25: d0 (already seen), d6 (top-rank skip), d3 (cos 9 degrees: margin guard), d7 chosen.
    assert [(row[f"negative_{k}_id"], row[f"negative_{k}_source"]) for k in (1, 2, 3)] == [
        ("d7", "bm25"), ("d4", "dense"), ("d5", "dense")]
    assert result.removed == {"dense/positive": 1, "dense/top-rank skip": 1, "bm25/top-rank skip": 1,
                              "dense/margin guard": 1, "bm25/margin guard": 1}
    assert result.chosen_sources == {"bm25": 1, "dense": 2}
    assert row["negative_1_score"] == pytest.approx(np.cos(np.deg2rad(130)), abs=1e-4)  # dense score, any source
    dense_only = mine_hard_negatives(VectorModel(vectors), pairs, ids, texts,
                                     MiningSettings(num_negatives=3, range_min=2, sources=("dense",)))
    assert {dense_only.rows[0][f"negative_{k}_source"] for k in (1, 2, 3)} == {"dense"}
    with pytest.raises(ValueError, match="negative_sources"):
        MiningSettings(sources=("dense", "splade"))


def test_teacher_guard_drops_candidates_scored_near_the_positive_and_asks_for_replacements():
    teacher = TableTeacher({"pos": 5.0, "mid": 4.5, "far": 0.0, "opposite": -3.0})
    settings = MiningSettings(num_negatives=2, range_min=2, range_max=6, relative_margin=0.05,
                              sources=("dense",), roundtrip_top_k=0, teacher_margin=1.0)
    result = mine_hard_negatives(VectorModel(VECTORS), PAIRS, list(DOCS), list(DOCS), settings, teacher=teacher)
    row = result.rows[0]
    # "mid" scores within 1.0 of the positive: a likely false negative, replaced by the next candidate.
    assert (row["negative_1_id"], row["negative_2_id"]) == ("far", "opposite")
    assert result.removed["dense/teacher guard"] == 1
    assert [sorted(p for _, p in call) for call in teacher.calls] == [["far", "mid", "pos"], ["opposite"]]
    # The guard's scores become the distillation columns, so the asset's teacher pass scores nothing again.
    assert (row["teacher_positive_score"], row["teacher_negative_1_score"], row["teacher_negative_2_score"]) == (
        5.0, 0.0, -3.0)
    scoring = add_teacher_scores(result.rows, teacher)
    assert (scoring.pairs, scoring.reused) == (0, 3) and len(teacher.calls) == 2
    loose = MiningSettings(num_negatives=2, range_min=2, range_max=6, sources=("dense",), roundtrip_top_k=0,
                           teacher_margin=0.1)
    kept = mine_hard_negatives(VectorModel(VECTORS), PAIRS, list(DOCS), list(DOCS), loose, teacher=teacher)
    assert kept.rows[0]["negative_1_id"] == "mid" and "dense/teacher guard" not in kept.removed


def test_every_row_has_the_same_columns_and_training_counts_only_text_negatives(tmp_path):
    pairs = [{"query": "query", "positive": "pos", "doc_id": "pos", "query_type": "factoid"},
             {"query": "far", "positive": "far", "doc_id": "far", "query_type": "conceptual"}]
    # Within range_max the first row's candidates all fail the margin guard, so it gets random negatives;
    # the second row finds hard ones.
    settings = MiningSettings(num_negatives=2, range_min=1, range_max=4, relative_margin=0.2, roundtrip_top_k=0)
    result = mine_hard_negatives(VectorModel(VECTORS), pairs, list(DOCS), list(DOCS), settings)
    assert [r["negative_1_source"] for r in result.rows] == ["random", "dense"]
    assert len({tuple(sorted(r)) for r in result.rows}) == 1
    assert set(result.rows[0]) == {"query", "positive", "doc_id", "query_type", "positive_score",
                                   *(f"negative_{k}{s}" for k in (1, 2) for s in ("", "_id", "_score", "_source"))}
    write_jsonl(tmp_path / "train.jsonl", result.rows)
    assert mined_negative_count(tmp_path / "train.jsonl") == 2


def test_no_margin_guard_keeps_candidates_scored_close_to_the_positive():
    settings = MiningSettings(num_negatives=2, range_min=0, range_max=6, relative_margin=None)
    result = mine_hard_negatives(VectorModel(VECTORS), PAIRS, list(DOCS), list(DOCS), settings)
    # With the guard, "near" (1 degree) and "close" (10 degrees) would be dropped as likely false negatives.
    assert (result.rows[0]["negative_1_id"], result.rows[0]["negative_2_id"]) == ("near", "close")
    assert result.removed == {"dense/positive": 1}
