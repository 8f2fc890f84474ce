import numpy as np
import pytest
import torch

from finetune_assets.core.teachers.teacher_top_k import TeacherTopK, build_top_k
from finetune_assets.core.training.batch_distillation import (
    TailAverage,
    batch_kl_loss,
    check_inputs,
    freeze_lower_layers,
    length_sorted_chunks,
    parameter_groups,
    set_attention_dropout,
    set_dropout,
    spread_ratio,
    student_candidates,
    teacher_top_k,
    token_lengths,
    top_candidates,
    train_batch_kl,
    untie_output_embeddings,
)
from finetune_assets.core.training.dense_training import Hyperparameters


class BlockTeacher:
    """A bound teacher with fixed scores: `block` rows of a matrix, `top_k` as HybridTeacher builds it."""

    def __init__(self, matrix):
        self.matrix = np.asarray(matrix, dtype=np.float64)

    def block(self, rows):
        return self.matrix[rows].copy()

    def top_k(self, masked, *, k, folder=None, on_progress=None):
        return build_top_k(self.block, *self.matrix.shape, k, masked=masked, folder=folder, on_progress=on_progress)


def test_the_store_masks_only_the_source_of_span_and_title_rows():
    rows = [{"query": "a", "doc_id": "d1", "exclude_source": True}, {"query": "b", "doc_id": "d2"},
            {"query": "c", "doc_id": "d0", "query_type": "title"}, {"query": "d", "doc_id": "d0", "query_type": "factoid"}]
    store = teacher_top_k(BlockTeacher([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [1.0, 1.0, 1.0]]),
                          rows, ["d0", "d1", "d2"])
    assert store.scores.dtype == np.float16
    assert store.masked(0).tolist() == [1] and store.candidates(0, 3).tolist() == [2, 0]
    assert store.candidates(1, 3).tolist() == [2, 1, 0] and store.masked(1).size == 0
    assert store.masked(2).tolist() == [0] and store.candidates(2, 3).tolist() == [2, 1]
    assert store.masked(3).size == 0  # a generated query keeps its source
    with pytest.raises(ValueError, match="training row 1 .* masks its source 'zz'"):
        teacher_top_k(BlockTeacher([[1.0, 2.0]]), [{"query": "a", "doc_id": "zz", "exclude_source": True}],
                      ["d0", "d1"])


def test_top_candidates_are_best_first_and_never_masked():
    scores = np.array([[0.1, -np.inf, 3.0, 2.0], [5.0, 4.0, -np.inf, -np.inf]], dtype=np.float16)
    assert [c.tolist() for c in top_candidates(TeacherTopK.from_matrix(scores), 2)] == [[2, 3], [0, 1]]


def test_student_candidates_are_its_own_best_documents_by_index_never_masked_ones():
    # Documents are encoded shortest first; the ranking must come back in document order all the same.
    vectors = {"q0": [1.0, 0.0], "q1": [0.0, 1.0], "long a": [0.9, 0.1], "b": [0.2, 0.8], "c c c": [0.5, 0.5],
               "d": [0.95, 0.0]}

    def embed(texts):
        return torch.tensor([vectors[t] for t in texts])

    texts, lengths = ["long a", "b", "c c c", "d"], [9, 1, 5, 2]
    scores = np.zeros((2, 4), dtype=np.float16)
    scores[0, 3] = -np.inf  # q0's best by the student, but the teacher masks it (its own source)
    store = TeacherTopK.from_matrix(scores, k=2)  # the masked document is kept even beyond k
    found = student_candidates(embed, ["q0", "q1"], texts, lengths, store, 2)
    assert found.tolist() == [[0, 2], [1, 2]]
    assert student_candidates(embed, ["q0", "q1"], texts, lengths, store, 9).shape == (2, 4)


def test_batch_kl_is_zero_when_the_student_matches_and_ignores_masked_cells():
    teacher = torch.tensor([[2.0, 1.0, -float("inf")], [0.0, 3.0, 1.0]])
    matching = torch.tensor([[4.0, 2.0, 9.0], [0.0, 6.0, 2.0]])  # teacher / 0.5, any value where masked
    assert batch_kl_loss(matching, teacher, temperature=0.5).item() == pytest.approx(0.0, abs=1e-6)
    other_mask_value = matching.clone()
    other_mask_value[0, 2] = -50.0
    assert batch_kl_loss(other_mask_value, teacher, temperature=0.5).item() == pytest.approx(0.0, abs=1e-6)
    reversed_order = torch.tensor([[2.0, 4.0, 0.0], [6.0, 0.0, 2.0]])
    assert batch_kl_loss(reversed_order, teacher, temperature=0.5).item() > 0.5


def test_bad_inputs_are_named():
    rows = [{"query": "a"}, {"query": "b"}]
    docs = [{"id": "x", "text": "x"}]
    hp = Hyperparameters(loss="batch_kl")
    with pytest.raises(ValueError, match="re-materialize mined_negatives"):
        check_inputs(rows, docs, TeacherTopK.from_matrix(np.zeros((2, 2), dtype=np.float16)), hp)
    with pytest.raises(ValueError, match="training row 2 has no query"):
        check_inputs([{"query": "a"}, {"query": " "}], docs, TeacherTopK.from_matrix(np.zeros((2, 1))), hp)
    with pytest.raises(ValueError, match="training row 2 has no scored document"):
        check_inputs(rows, docs, TeacherTopK.from_matrix(np.array([[0.0], [-np.inf]])), hp)
    scores = TeacherTopK.from_matrix(np.zeros((2, 1), dtype=np.float16))
    with pytest.raises(ValueError, match="applies to sparse models"):
        check_inputs(rows, docs, scores, Hyperparameters(loss="batch_kl", output_bias_learning_rate=0.01))
    with pytest.raises(ValueError, match="untie_output_embeddings applies to sparse models"):
        check_inputs(rows, docs, scores, Hyperparameters(loss="batch_kl", untie_output_embeddings=True))
    # Ranges fail as the Hyperparameters are built, before any input is read.
    with pytest.raises(ValueError, match=r"dropout must be >= 0 and < 1 \(null = the model's own\), got 1.0"):
        check_inputs(rows, docs, scores, Hyperparameters(loss="batch_kl", dropout=1.0))
    for fraction in (1.0, -0.1):
        with pytest.raises(ValueError, match=f"average_weights_from must be >= 0 and < 1.*got {fraction}"):
            check_inputs(rows, docs, scores, Hyperparameters(loss="batch_kl", average_weights_from=fraction))
    with pytest.raises(ValueError, match="student_candidates_every must be >= 0"):
        check_inputs(rows, docs, scores, Hyperparameters(loss="batch_kl", student_candidates_every=-1))
    with pytest.raises(ValueError, match="student_candidates_every is 40 but student_candidates_per_query is 0"):
        check_inputs(rows, docs, scores, Hyperparameters(loss="batch_kl", student_candidates_every=40))
    with pytest.raises(ValueError, match=r"output_bias_learning_rate must be > 0 \(null = learning_rate\)"):
        check_inputs(rows, docs, scores, Hyperparameters(model_type="sparse", loss="batch_kl",
                                                         output_bias_learning_rate=-1.0))


def _mean_kl(model, rows, texts, scores, scale=20.0):
    queries = torch.from_numpy(model.encode([r["query"] for r in rows], normalize_embeddings=True))
    docs = torch.from_numpy(model.encode(texts, normalize_embeddings=True))
    return batch_kl_loss(queries @ docs.T * scale, torch.from_numpy(scores.astype(np.float32))).item()


@pytest.mark.slow
@pytest.mark.parametrize("base_model", ["local:all-MiniLM-L6-v2", "local:bge-small-en"])
def test_training_moves_the_dense_student_towards_the_teacher(tmp_path, monkeypatch, base_model):
    """The default base model, and bge-small-en, which ships as int8 ONNX and trains from its dequantised weights."""
    from sentence_transformers import SentenceTransformer

    from finetune_assets.core.offline_models import resolve_base_model

    monkeypatch.setenv("FINETUNE_ASSETS_CACHE_DIR", str(tmp_path / "cache"))

    texts = ["heat transfer to a flat plate in hypersonic flow", "buckling of thin cylindrical shells under load",
             "flutter of a wing at transonic speed", "boundary layer transition on a cone",
             "stress in a rotating disk", "shock wave reflection from a wall"]
    rows = [{"query": q} for q in ("shells", "flow", "wing", "disk", "wall", "cone")]
    # A teacher that prefers an arbitrary, fixed document per query (not what the base model would pick).
    scores = np.full((6, 6), -2.0, dtype=np.float16)
    for r, d in enumerate([4, 1, 5, 0, 2, 3]):
        scores[r, d] = 4.0
    documents = [{"id": str(i), "text": t} for i, t in enumerate(texts)]
    base = SentenceTransformer(resolve_base_model(base_model), device="cpu")
    before = _mean_kl(base, rows, texts, scores)
    hp = Hyperparameters(loss="batch_kl", epochs=8, batch_size=3, learning_rate=3e-4, candidates_per_query=2,
                         max_seq_length=32, logging_steps=4, base_model=base_model)
    logged = []
    outcome = train_batch_kl(rows, documents, TeacherTopK.from_matrix(scores), hp, tmp_path / "model",
                             on_log=logged.append)
    tuned = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    after = _mean_kl(tuned, rows, texts, scores)
    assert outcome.steps == 16 and logged and logged[-1]["step"] == 16
    assert logged[-1]["score_scale"] == hp.cosine_scale  # dense: the fixed cosine scale
    assert after < before * 0.7, (before, after)
    assert tuned.max_seq_length == 32


def test_bf16_only_where_the_cpu_runs_it_natively(monkeypatch):
    from finetune_assets.core.training import batch_distillation

    monkeypatch.setattr(batch_distillation, "cpu_has_bf16", lambda: False)
    assert batch_distillation.training_precision("auto", "cpu") == "fp32"
    assert batch_distillation.training_precision("bf16", "cpu") == "bf16"  # asked for: honoured, even if slow
    monkeypatch.setattr(batch_distillation, "cpu_has_bf16", lambda: True)
    assert batch_distillation.training_precision("auto", "cpu") == "bf16"
    assert batch_distillation.training_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        batch_distillation.training_precision("int4", "cpu")


def test_spread_ratio_puts_the_student_on_the_teachers_scale_over_the_cells_the_teacher_scores():
    teacher = torch.tensor([[4.0, 0.0, -4.0, float("-inf")], [2.0, 0.0, -2.0, 1.0]])
    student = teacher.nan_to_num(neginf=0.0) * 2.5
    student[0, 3] = 1000.0  # a masked cell: ignored
    ratio = spread_ratio(student, teacher)
    assert ratio == pytest.approx(1 / 2.5)
    assert spread_ratio(student * ratio, teacher) == pytest.approx(1.0)
    assert spread_ratio(torch.zeros(2, 4), teacher) == 1.0  # a flat student: left as it is


def test_pool_chunks_run_shortest_first_so_padding_stays_within_similar_lengths():
    lengths = [200, 12, 40, 12, 256, 30, 90]
    chunks = length_sorted_chunks([0, 1, 2, 3, 4, 5, 6], lengths, chunk=3)
    assert chunks == [[1, 3, 5], [2, 6, 0], [4]]  # ties keep index order, the last chunk takes the rest
    assert length_sorted_chunks([4, 1], lengths, chunk=3) == [[1, 4]]
    assert sorted(c for chunk in length_sorted_chunks(range(7), lengths, chunk=2) for c in chunk) == list(range(7))


def test_token_lengths_count_special_tokens_and_stop_at_the_training_length():
    from transformers import AutoTokenizer

    from finetune_assets.core.offline_models import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    lengths = token_lengths(tokenizer, ["flutter", "flow " * 100], max_length=32)
    assert lengths == [3, 32]  # [CLS] flutter [SEP]; the long text truncated


def _sparse(path=None):
    """SPLADE-tiny as packaged, or a trained copy of it."""
    from sentence_transformers import SparseEncoder

    from finetune_assets.core.offline_models import splade_tiny_path

    return SparseEncoder(str(path or splade_tiny_path()), device="cpu")


def _four_query_task(margin: float):
    """Four one-word queries, each with one document the teacher scores `margin` above, and `margin` below, the rest."""
    texts = ["heat transfer to a flat plate in hypersonic flow", "buckling of thin cylindrical shells under load",
             "flutter of a wing at transonic speed", "boundary layer transition on a cone"]
    rows = [{"query": q} for q in ("shells", "flow", "wing", "cone")]
    scores = np.full((4, 4), -margin, dtype=np.float16)
    for r, d in enumerate([1, 0, 2, 3]):
        scores[r, d] = margin
    return rows, [{"id": str(i), "text": t} for i, t in enumerate(texts)], scores


def test_only_the_vocabulary_bias_gets_its_own_learning_rate():
    model = _sparse()
    bias = model[0].auto_model.get_output_embeddings().bias
    assert len(parameter_groups(model, Hyperparameters(model_type="sparse", learning_rate=5e-4))) == 1
    rest, own = parameter_groups(model, Hyperparameters(model_type="sparse", learning_rate=5e-4,
                                                        output_bias_learning_rate=0.02))
    assert own["params"] == [bias] and own["lr"] == 0.02 and own["weight_decay"] == 0.0
    assert rest["lr"] == 5e-4 and all(p is not bias for p in rest["params"])
    assert len(rest["params"]) + 1 == len(list(model.parameters()))  # nothing dropped, nothing twice


@pytest.mark.slow
def test_a_raised_bias_rate_moves_term_weights_while_the_encoder_barely_moves(tmp_path):
    rows, documents, scores = _four_query_task(margin=3.0)
    hp = Hyperparameters(model_type="sparse", loss="batch_kl", epochs=4, batch_size=2, learning_rate=1e-7,
                         output_bias_learning_rate=0.05, candidates_per_query=2, max_seq_length=32,
                         warmup_ratio=0.0)
    train_batch_kl(rows, documents, TeacherTopK.from_matrix(scores), hp, tmp_path / "model")
    base, tuned = _sparse()[0].auto_model, _sparse(tmp_path / "model")[0].auto_model
    bias_moved = (tuned.get_output_embeddings().bias - base.get_output_embeddings().bias).abs().max()
    layer = "bert.encoder.layer.0.attention.self.query.weight"
    encoder_moved = (tuned.get_parameter(layer) - base.get_parameter(layer)).abs().max()
    assert bias_moved > 0.05, bias_moved  # several Adam steps of 0.05 (decaying) on the active terms
    assert encoder_moved < 1e-5, encoder_moved


@pytest.mark.slow
def test_a_learned_score_scale_sharpens_towards_a_sharper_teacher_and_stays_fixed_without_a_rate(tmp_path):
    rows, documents, scores = _four_query_task(margin=8.0)  # far sharper than the student's scores at scale 1

    def logged_scales(rate):
        hp = Hyperparameters(model_type="sparse", loss="batch_kl", epochs=4, batch_size=2, learning_rate=1e-7,
                             score_scale_learning_rate=rate, sparse_score_scale=1.0, candidates_per_query=4,
                             max_seq_length=32, warmup_ratio=0.0, logging_steps=1)
        logged = []
        train_batch_kl(rows, documents, TeacherTopK.from_matrix(scores), hp, tmp_path / f"model-{rate}",
                       on_log=logged.append)
        return [entry["score_scale"] for entry in logged]

    fixed, learned = logged_scales(None), logged_scales(0.1)  # None: the scale stays fixed
    assert fixed == [1.0] * 8
    assert learned[-1] > learned[0] > 1.0  # Adam steps of up to 0.1 in log space, each one upwards


@pytest.mark.slow
def test_the_students_own_candidates_are_mined_before_the_first_step_and_again_on_schedule(tmp_path):
    rows, documents, scores = _four_query_task(margin=3.0)

    def mined_at(every):
        hp = Hyperparameters(model_type="sparse", loss="batch_kl", epochs=4, batch_size=2, learning_rate=1e-4,
                             candidates_per_query=1, student_candidates_per_query=2, student_candidates_every=every,
                             max_seq_length=32, logging_steps=1)
        logged = []
        train_batch_kl(rows, documents, TeacherTopK.from_matrix(scores), hp, tmp_path / f"model-{every}",
                       on_log=logged.append)
        return [entry["step"] for entry in logged if entry.get("student_candidates_seconds")]

    assert mined_at(0) == [1]
    assert mined_at(3) == [1, 4, 7]


def test_the_tail_average_is_the_mean_of_the_weights_after_each_step_from_the_start_on():
    model = torch.nn.Linear(2, 1)
    average = TailAverage(model, start=2)
    for step, value in enumerate([1.0, 2.0, 3.0, 4.0, 8.0]):
        with torch.no_grad():
            model.weight.fill_(value)
            model.bias.fill_(-value)
        average.update(step)
    average.apply()
    assert model.weight.tolist() == [[5.0, 5.0]]  # steps 2, 3, 4: (3 + 4 + 8) / 3
    assert model.bias.tolist() == [-5.0]
    untouched = torch.nn.Linear(2, 1)
    before = untouched.weight.detach().clone()
    TailAverage(untouched, start=10).apply()  # nothing averaged yet: the weights stay
    assert torch.equal(untouched.weight, before)


def test_untying_gives_the_head_its_own_copy_and_refuses_an_untied_model():
    model = _sparse()
    auto_model = model[0].auto_model
    embeddings = auto_model.get_input_embeddings().weight
    assert auto_model.get_output_embeddings().weight is embeddings  # BERT ties them
    untie_output_embeddings(model)
    head = auto_model.get_output_embeddings().weight
    assert head is not embeddings and torch.equal(head, embeddings)
    assert auto_model.config.tie_word_embeddings is False
    with pytest.raises(ValueError, match="nothing to untie"):
        untie_output_embeddings(model)


@pytest.mark.slow
def test_an_untied_head_trains_apart_from_the_input_embeddings_and_is_saved_untied(tmp_path):
    rows, documents, scores = _four_query_task(margin=3.0)
    hp = Hyperparameters(model_type="sparse", loss="batch_kl", epochs=4, batch_size=2, learning_rate=1e-3,
                         untie_output_embeddings=True, average_weights_from=0.5, candidates_per_query=2,
                         max_seq_length=32, warmup_ratio=0.0)
    train_batch_kl(rows, documents, TeacherTopK.from_matrix(scores), hp, tmp_path / "model")
    base, tuned = _sparse()[0].auto_model, _sparse(tmp_path / "model")[0].auto_model
    head, embeddings = tuned.get_output_embeddings().weight, tuned.get_input_embeddings().weight
    start = base.get_input_embeddings().weight
    assert (head - start).abs().max() > 1e-4 and (embeddings - start).abs().max() > 1e-4  # both trained
    assert (head - embeddings).abs().max() > 1e-4  # and apart, after a reload
    # The vocabulary bias survives the reload (an untied config once loaded it as zeros) and was trained.
    bias, start_bias = tuned.get_output_embeddings().bias, base.get_output_embeddings().bias
    assert torch.equal(bias, tuned.cls.predictions.bias)
    assert 0 < (bias - start_bias).abs().max() < 0.1


def test_dropout_is_set_on_every_layer_and_makes_training_forwards_deterministic_at_zero():
    model = _sparse()
    model.train()
    features = model.preprocess(["boundary layer transition on a cone"])
    noisy = [model(dict(features))["sentence_embedding"] for _ in range(2)]
    assert not torch.equal(noisy[0], noisy[1])  # BERT's own dropout, 0.1
    assert set_dropout(model, 0.0) >= 5  # embeddings, attention and output of each of the 2 layers
    quiet = [model(dict(features))["sentence_embedding"] for _ in range(2)]
    assert torch.equal(quiet[0], quiet[1])



def test_attention_dropout_changes_only_the_attention_probabilities_and_the_forward_reads_it():
    model = _sparse()
    model.train()
    attention = [m.dropout for m in model.modules() if type(m).__name__ == "BertSelfAttention"]
    others = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and not any(m is a for a in attention)]
    assert set_attention_dropout(model, 0.0) == len(attention) == 2  # one per layer of SPLADE-tiny
    assert all(layer.p == 0.0 for layer in attention) and all(layer.p == 0.1 for layer in others)
    features = model.preprocess(["boundary layer transition on a cone"])
    set_dropout(model, 0.0)
    set_attention_dropout(model, 0.5)  # only the attention probabilities drop now
    noisy = [model(dict(features))["sentence_embedding"] for _ in range(2)]
    assert not torch.equal(noisy[0], noisy[1])
    set_attention_dropout(model, 0.0)
    quiet = [model(dict(features))["sentence_embedding"] for _ in range(2)]
    assert torch.equal(quiet[0], quiet[1])

@pytest.mark.slow
def test_gradient_checkpointing_trains_the_same_model(tmp_path):
    from finetune_assets.core.training.batch_distillation import enable_gradient_checkpointing

    rows, documents, scores = _four_query_task(margin=3.0)

    def losses(checkpointing):
        hp = Hyperparameters(model_type="sparse", loss="batch_kl", epochs=2, batch_size=2, learning_rate=1e-4,
                             candidates_per_query=2, max_seq_length=32, warmup_ratio=0.0, logging_steps=1,
                             dropout=0.1, gradient_checkpointing=checkpointing)
        logged = []
        train_batch_kl(rows, documents, TeacherTopK.from_matrix(scores), hp, tmp_path / f"model-{checkpointing}",
                       on_log=logged.append)
        return [entry["loss"] for entry in logged]

    kept, recomputed = losses(False), losses(True)
    # Dropout on: the recomputed forward pass replays the same masks, so every step's loss is the one kept
    # activations give, and the weights after each step too (the next step's loss depends on them).
    assert len(kept) == 4 and kept == pytest.approx(recomputed, rel=1e-4)
    model = _sparse()
    assert enable_gradient_checkpointing(model) == 1 and model[0].auto_model.is_gradient_checkpointing


@pytest.mark.slow
def test_frozen_layers_keep_the_lowest_blocks_at_the_base_weights_and_train_the_rest(tmp_path):
    rows, documents, scores = _four_query_task(margin=3.0)
    hp = Hyperparameters(model_type="sparse", loss="batch_kl", epochs=4, batch_size=2, learning_rate=1e-3,
                         candidates_per_query=2, max_seq_length=32, warmup_ratio=0.0, frozen_layers=2)
    train_batch_kl(rows, documents, TeacherTopK.from_matrix(scores), hp, tmp_path / "model")
    base, tuned = (dict(m[0].auto_model.named_parameters()) for m in (_sparse(), _sparse(tmp_path / "model")))
    # SPLADE-tiny: the embedding layer and the first of its 2 transformer layers are the 2 lowest blocks.
    frozen = [n for n in base if ".embeddings." in n or ".encoder.layer.0." in n]
    trained = [n for n in base if ".encoder.layer.1." in n]
    assert frozen and trained
    assert all(torch.equal(base[n], tuned[n]) for n in frozen)
    assert max((base[n] - tuned[n]).abs().max().item() for n in trained) > 1e-4
    model = _sparse()
    assert freeze_lower_layers(model, 1) == sum(p.numel() for p in model[0].auto_model.bert.embeddings.parameters())
    assert [p for p in parameter_groups(model, hp)[0]["params"] if not p.requires_grad] == []
    with pytest.raises(ValueError, match="frozen_layers is 3, but this model has the embedding layer and 2 "
                                         "transformer layers.*use at most 2"):
        freeze_lower_layers(_sparse(), 3)
    with pytest.raises(ValueError, match="frozen_layers must be >= 0"):
        Hyperparameters(loss="batch_kl", frozen_layers=-1)
