import pytest
import torch

from finetune_assets.core.retrieval import splade_pooling
from finetune_assets.core.retrieval.splade_pooling import fast_pooling_head, splade_embeddings

TEXTS = ["heat transfer to a flat plate in hypersonic flow at high mach numbers and low reynolds numbers",
         "buckling of thin cylindrical shells", "flutter", "boundary layer transition on a cone " * 4,
         "the effect of wall cooling on skin friction", "x"]


def _splade_without_dropout():
    from sentence_transformers import SparseEncoder

    from finetune_assets.core.offline_models import splade_tiny_path

    model = SparseEncoder(str(splade_tiny_path()), device="cpu")
    model.train()  # SpladePooling's training branch (no in-place ops), dropout off so two passes agree
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def _values_and_gradients(model, embed):
    model.zero_grad()
    features = model.preprocess(TEXTS)
    embeddings = embed(features)
    # A loss that weighs every term differently, so a gradient routed to the wrong token or term shows.
    weights = torch.linspace(0.5, 1.5, embeddings.shape[1])
    (embeddings * weights).pow(2).sum().backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return embeddings.detach(), gradients


@pytest.mark.slow
def test_fast_pooling_gives_splade_poolings_values_and_gradients():
    model = _splade_without_dropout()
    assert fast_pooling_head(model) is not None
    expected, expected_grads = _values_and_gradients(model, lambda f: model(f)["sentence_embedding"])
    actual, actual_grads = _values_and_gradients(model, lambda f: splade_embeddings(model, f))
    assert actual.shape == expected.shape
    assert torch.allclose(actual, expected, atol=1e-5)
    assert (actual > 0).sum() > 100  # the texts do activate terms: the comparison is not of zeros
    assert set(actual_grads) == set(expected_grads)
    # Tolerance from the largest gradient anywhere: some (attention key biases) are zero up to rounding.
    scale = max(float(g.abs().max()) for g in expected_grads.values())
    for name, grad in expected_grads.items():
        assert torch.allclose(actual_grads[name], grad, rtol=1e-4, atol=1e-6 * scale), name


@pytest.mark.slow
def test_the_backward_pass_gives_the_same_gradients_in_small_pieces(monkeypatch):
    model = _splade_without_dropout()
    _, whole = _values_and_gradients(model, lambda f: splade_embeddings(model, f))
    monkeypatch.setattr(splade_pooling, "GRADIENT_ENTRIES_PER_CHUNK", 7)
    _, pieces = _values_and_gradients(model, lambda f: splade_embeddings(model, f))
    scale = max(float(g.abs().max()) for g in whole.values())
    for name, grad in whole.items():
        assert torch.allclose(pieces[name], grad, rtol=1e-4, atol=1e-6 * scale), name


@pytest.mark.slow
def test_padding_never_wins_the_max():
    """A short text padded to a long one's length: its vector is the one it has alone."""
    model = _splade_without_dropout()
    with torch.no_grad():
        alone = splade_embeddings(model, model.preprocess(["flutter"]))
        padded = splade_embeddings(model, model.preprocess(["flutter", "boundary layer transition " * 10]))
    assert torch.allclose(padded[0], alone[0], atol=1e-5)


@pytest.mark.slow
def test_bf16_autocast_stays_close_to_float32():
    model = _splade_without_dropout()
    with torch.no_grad():
        exact = splade_embeddings(model, model.preprocess(TEXTS))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded = splade_embeddings(model, model.preprocess(TEXTS))
    assert rounded.dtype == torch.float32
    assert (rounded - exact).abs().max() < 0.05 * exact.abs().max()


@pytest.mark.slow
def test_other_model_shapes_keep_sentence_transformers_pooling():
    model = _splade_without_dropout()
    model[1].pooling_strategy = "sum"
    assert fast_pooling_head(model) is None
    features = model.preprocess(TEXTS[:2])
    with torch.no_grad():
        assert torch.equal(splade_embeddings(model, dict(features)), model(dict(features))["sentence_embedding"])
