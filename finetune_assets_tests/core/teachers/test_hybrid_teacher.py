import numpy as np
import pytest

from finetune_assets.core.retrieval.mining import MiningSettings, mine_hard_negatives
from finetune_assets.core.teachers.hybrid_teacher import (
    HybridTeacher,
    companion_models,
    companion_scores,
)
from finetune_assets.core.teachers.teacher import add_teacher_scores, load_teacher
from finetune_assets_tests.core.retrieval.test_mining import VectorModel, _angle

# The query's rare term "scramjet" appears in d1 only; the base model (vectors) prefers d2, which lacks it.
TEXTS = ["scramjet inlet shock position at hypersonic speed",
         "combustion in a scramjet engine",
         "supersonic inlet design for jet engines",
         "boundary layer transition on a flat plate",
         "heat transfer in laminar flow",
         "wing flutter in transonic flow"]
ANGLES = [0, 40, 10, 70, 80, 90]
QUERY = "scramjet combustion"


def _z(values):
    values = np.asarray(values, dtype=np.float64)
    return (values - values.mean()) / values.std()


def _vectors(scores):
    """Query and document vectors whose dot products are the one query's `scores` ([1, documents])."""
    return np.ones((1, 1), dtype=np.float32), np.asarray(scores, dtype=np.float32).T


def _bound(weight=0.5):
    vectors = {t: _angle(a) for t, a in zip(TEXTS, ANGLES)} | {QUERY: _angle(5)}
    model = VectorModel(vectors)
    docs, query = model.encode(TEXTS), model.encode([QUERY])
    return HybridTeacher(bm25_weight=weight).bind([QUERY], query, TEXTS, docs), docs, query


def test_scores_are_the_sum_of_per_query_z_scores_of_bm25_and_cosine():
    teacher, docs, query = _bound()
    scores = teacher.block([0])[0]
    dense = docs @ query[0]
    lexical = np.array(teacher.retriever.get_scores([t for t in teacher.query_tokens[0]
                                                      if t in teacher.retriever.vocab_dict]))
    assert scores == pytest.approx(_z(lexical) + _z(dense))
    # BM25 lifts the two documents with the query's terms above the base model's favourite.
    assert int(np.argmax(dense)) == 2
    assert list(np.argsort(-scores)[:2]) == [1, 0]
    assert teacher.score_keys([(0, 1), (0, 2)]) == pytest.approx([scores[1], scores[2]])


def test_weight_zero_is_the_base_model_alone_and_bad_weights_are_refused():
    teacher, docs, query = _bound(weight=0.0)
    assert teacher.block([0])[0] == pytest.approx(2 * _z(docs @ query[0]))
    with pytest.raises(ValueError, match="between 0 and 1"):
        HybridTeacher(bm25_weight=1.5)


def test_a_query_with_no_known_term_falls_back_to_the_base_model():
    vectors = {t: _angle(a) for t, a in zip(TEXTS, ANGLES)} | {"zzz qqq": _angle(5)}
    model = VectorModel(vectors)
    teacher = HybridTeacher().bind(["zzz qqq"], model.encode(["zzz qqq"]), TEXTS, model.encode(TEXTS))
    assert np.argmax(teacher.block([0])[0]) == 2


def test_mining_with_the_hybrid_teacher_writes_a_teacher_score_for_every_negative_without_a_guard():
    vectors = {t: _angle(a) for t, a in zip(TEXTS, ANGLES)} | {QUERY: _angle(5)}
    pairs = [{"query": QUERY, "positive": TEXTS[0], "doc_id": "d0"}]
    ids = [f"d{i}" for i in range(len(TEXTS))]
    settings = MiningSettings(num_negatives=3, range_min=0, range_max=3, relative_margin=0.0,
                              sources=("dense", "bm25"), teacher_margin=None)
    teacher = load_teacher("hybrid")
    assert isinstance(teacher, HybridTeacher)
    result = mine_hard_negatives(VectorModel(vectors), pairs, ids, TEXTS, settings, teacher=teacher)
    row = result.rows[0]
    scores = teacher.block([0])[0]
    assert row["teacher_positive_score"] == pytest.approx(scores[0], abs=1e-4)
    for k in (1, 2, 3):
        doc = ids.index(row[f"negative_{k}_id"])
        assert row[f"teacher_negative_{k}_score"] == pytest.approx(scores[doc], abs=1e-4)
    # d1 outranks the positive for the teacher: without a guard it stays, with a negative margin to learn.
    assert "d1" in {row[f"negative_{k}_id"] for k in (1, 2, 3)}
    assert "dense/teacher guard" not in result.removed and "bm25/teacher guard" not in result.removed
    assert add_teacher_scores(result.rows, teacher).pairs == 0  # nothing left to score outside mining
    guarded = mine_hard_negatives(VectorModel(vectors), pairs, ids, TEXTS,
                                  MiningSettings(num_negatives=2, range_min=0, range_max=6, relative_margin=0.0,
                                                 sources=("dense", "bm25"), teacher_margin=0.0),
                                  teacher=load_teacher("hybrid"))
    assert "d1" not in {guarded.rows[0][f"negative_{k}_id"] for k in (1, 2)}
    assert sum(v for k, v in guarded.removed.items() if k.endswith("teacher guard")) >= 1


def test_a_companion_adds_its_z_scores_with_the_weights_of_its_kind():
    teacher, docs, query = _bound()
    lexical = np.array(teacher.retriever.get_scores([t for t in teacher.query_tokens[0]
                                                      if t in teacher.retriever.vocab_dict]))
    companion = np.array([[0.0, 0.0, 0.0, 9.0, 1.0, 2.0]], dtype=np.float32)  # prefers d3
    teacher.add_companion("local:splade-tiny", "sparse", *_vectors(companion))
    expected = 2 * (0.3 * _z(lexical) + 0.4 * _z(docs @ query[0]) + 0.3 * _z(companion[0]))
    assert teacher.block([0])[0] == pytest.approx(expected)
    assert "splade-tiny 0.3" in teacher.name and "base model 0.4" in teacher.name
    # A dense companion weighs 0.4 and leaves the (sparse) base model 0.3.
    teacher.add_companion("local:all-MiniLM-L6-v2", "dense", *_vectors(companion))
    assert teacher.block([0])[0] == pytest.approx(
        2 * (0.3 * _z(lexical) + 0.3 * _z(docs @ query[0]) + 0.4 * _z(companion[0])))
    with pytest.raises(ValueError, match="vectors for 2 queries and 6 documents"):
        teacher.add_companion("x", "dense", np.zeros((2, 1), dtype=np.float32), np.zeros((6, 1), dtype=np.float32))
    # Weights set by hand: (BM25, base model, companion).
    teacher.add_companion("local:all-MiniLM-L6-v2", "dense", *_vectors(companion), weights=[0.2, 0.2, 0.6])
    assert teacher.block([0])[0] == pytest.approx(
        2 * (0.2 * _z(lexical) + 0.2 * _z(docs @ query[0]) + 0.6 * _z(companion[0])))
    assert "BM25 0.2 + base model 0.2" in teacher.name and "all-MiniLM-L6-v2 0.6" in teacher.name
    for bad in ([0.5, 0.5], [0.5, 0.6, -0.1], [0.3, 0.3, 0.3]):
        with pytest.raises(ValueError, match=r"teacher_weights are 3 weights \(BM25, base model, then each .* got"):
            teacher.add_companion("x", "dense", *_vectors(companion), weights=bad)
    # Two companions: BM25 0.2, each sparse signal 0.2 (here the base model's), the dense ones share the rest.
    bge = np.array([[3.0, 0.0, 1.0, 0.0, 0.0, 2.0]], dtype=np.float32)
    teacher.add_companions([("local:all-MiniLM-L6-v2", "dense", *_vectors(companion)),
                            ("local:bge-small-en", "dense", *_vectors(bge))],
                           base_kind="sparse")
    assert teacher.block([0])[0] == pytest.approx(2 * (0.2 * _z(lexical) + 0.2 * _z(docs @ query[0])
                                                       + 0.3 * _z(companion[0]) + 0.3 * _z(bge[0])))
    assert teacher.name.endswith("all-MiniLM-L6-v2 0.3 + local:bge-small-en 0.3, z-score)")
    teacher.add_companions([("a", "dense", *_vectors(companion)), ("b", "sparse", *_vectors(bge))],
                           [0.1, 0.2, 0.3, 0.4])
    assert teacher.block([0])[0] == pytest.approx(2 * (0.1 * _z(lexical) + 0.2 * _z(docs @ query[0])
                                                       + 0.3 * _z(companion[0]) + 0.4 * _z(bge[0])))
    with pytest.raises(ValueError, match="4 weights"):
        teacher.add_companions([("a", "dense", *_vectors(companion)), ("b", "sparse", *_vectors(bge))], [0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="no default weights"):  # nothing dense to share the rest
        teacher.add_companions([("a", "sparse", *_vectors(companion)), ("b", "sparse", *_vectors(bge))],
                               base_kind="sparse")
    # Binding new queries drops the companion: its scores belonged to the old ones.
    teacher.bind([QUERY], query, TEXTS, docs)
    assert teacher.block([0])[0] == pytest.approx(_z(lexical) + _z(docs @ query[0]))


def test_a_single_companion_setting_is_read_case_blind_and_none_means_no_companion():
    assert companion_models("AUTO", "inference_free") == ["local:all-MiniLM-L6-v2"]
    assert companion_models("", "dense") == [] and companion_models("none", "sparse") == []
    assert companion_models(" NONE ,", "dense") == []
    assert companion_models("/models/mine", "dense") == ["/models/mine"]


@pytest.mark.parametrize("name", ["local:splade-tiny", "local:all-MiniLM-L6-v2"])
def test_companion_scores_rank_the_matching_document_first(name):
    texts = ["scramjet inlet shock position at hypersonic speed", "boundary layer transition on a flat plate",
             "heat transfer in laminar flow"]
    scores, kind = companion_scores(name, ["laminar heat transfer", "scramjet shock"], texts, max_seq_length=64)
    assert kind == ("sparse" if "splade" in name else "dense")
    assert scores.shape == (2, 3) and scores.dtype == np.float32
    assert list(np.argmax(scores, axis=1)) == [2, 0]


def test_several_companions_are_read_from_a_comma_separated_setting():
    assert companion_models("local:all-MiniLM-L6-v2, local:bge-small-en", "sparse") == [
        "local:all-MiniLM-L6-v2", "local:bge-small-en"]
    assert companion_models("", "dense") == []
    # 'auto' completes the measured four-signal teacher (BM25, MiniLM, SPLADE-tiny, bge-small) beside a dense or a
    # sparse base model; an inference-free base model keeps the one packaged model of the other kind.
    assert companion_models("auto", "dense") == ["local:all-MiniLM-L6-v2", "local:splade-tiny"]
    assert companion_models("auto", "sparse") == ["local:all-MiniLM-L6-v2", "local:bge-small-en"]
    assert companion_models("auto", "inference_free") == ["local:all-MiniLM-L6-v2"]
    assert companion_models("auto, /models/mine", "dense") == ["local:all-MiniLM-L6-v2", "local:splade-tiny",
                                                               "/models/mine"]
    assert companion_models("local:splade-tiny", "dense") == ["local:splade-tiny"]
    # A model named twice counts once.
    assert companion_models("auto, local:splade-tiny", "dense") == ["local:all-MiniLM-L6-v2", "local:splade-tiny"]
    # Whichever packaged dense model is the base, 'auto' adds the other two packaged models, so the teacher stays
    # the same four signals rather than weighing one model twice; a model the table does not know gets the default's.
    assert companion_models("auto", "dense", "LOCAL:bge-small-en") == ["local:all-MiniLM-L6-v2", "local:splade-tiny"]
    assert companion_models("auto", "dense", "local:all-MiniLM-L6-v2") == ["local:splade-tiny", "local:bge-small-en"]
    assert companion_models("auto", "dense", "/models/mine") == ["local:all-MiniLM-L6-v2", "local:splade-tiny"]
    assert companion_models("auto", "inference_free", "local:splade-tiny") == ["local:all-MiniLM-L6-v2"]
    assert companion_models("auto, local:bge-small-en", "sparse") == ["local:all-MiniLM-L6-v2", "local:bge-small-en"]


def test_the_packaged_onnx_bge_ranks_the_matching_document_first_and_gets_its_query_instruction():
    from finetune_assets.core.offline_models import bge_small_onnx_dir, minilm_path
    from finetune_assets.core.teachers.onnx_encoder import BGE_QUERY_INSTRUCTION, OnnxDenseEncoder, is_onnx_encoder

    assert is_onnx_encoder(bge_small_onnx_dir()) and not is_onnx_encoder(minilm_path())
    encoder = OnnxDenseEncoder(bge_small_onnx_dir(), max_length=64)
    assert encoder.instruction == BGE_QUERY_INSTRUCTION
    vectors = encoder.encode(["short", "a much longer text about boundary layers"], batch_size=1)
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Batched shortest first, the vectors still come back in input order (int8 activations are quantised per
    # batch, so padding moves them a little: cosine, not equality).
    together = encoder.encode(["a much longer text about boundary layers", "short"])[::-1]
    agreement = together @ vectors.T
    assert agreement[0, 0] > 0.98 and agreement[1, 1] > 0.98 and agreement[0, 1] < agreement[0, 0]
    scores, kind = companion_scores("local:bge-small-en", ["laminar heat transfer", "scramjet shock"],
                                    ["heat transfer in laminar flow over a plate", "shock waves in a scramjet inlet"],
                                    max_seq_length=64)
    assert kind == "dense" and scores.shape == (2, 2)
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]
    with pytest.raises(ValueError, match="not an ONNX encoder folder"):
        OnnxDenseEncoder(minilm_path())
