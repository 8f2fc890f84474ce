"""The SageMaker inference handler with real local models: MiniLM (dense) and SPLADE-tiny (sparse)."""
from __future__ import annotations

import json
from inspect import signature

import numpy as np
import pytest

from finetune_assets.core.offline_models import minilm_path, splade_tiny_path
from finetune_assets.serving.inference import (
    DENSE,
    SPARSE,
    BadRequest,
    input_fn,
    model_fn,
    model_kind,
    output_fn,
    predict_fn,
)

JSON = "application/json"
TEXTS = ["The cat sat on the mat.", "A cat is sitting on a rug.", "Stock markets fell sharply on Monday."]


def serve(model, body: bytes | str, content_type: str = JSON, accept: str = JSON):
    """The toolkit's order of calls; the answer decoded as the client would."""
    return json.loads(output_fn(predict_fn(input_fn(body, content_type), model), accept))


@pytest.fixture(scope="module")
def minilm():
    return model_fn(str(minilm_path()))


@pytest.fixture(scope="module")
def splade():
    return model_fn(str(splade_tiny_path()))


def test_model_kind_from_the_folder(tmp_path):
    assert model_kind(minilm_path()) == DENSE                 # modules.json: Transformer, Pooling, Normalize
    assert model_kind(splade_tiny_path()) == SPARSE           # bare BertForMaskedLM folder, no modules.json
    saved = tmp_path / "saved-sparse"                         # what SparseEncoder.save writes (6.2)
    saved.mkdir()
    (saved / "config_sentence_transformers.json").write_text(json.dumps({"model_type": "SparseEncoder"}))
    (saved / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
        {"idx": 1, "name": "1", "path": "1_SpladePooling",
         "type": "sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling"}]))
    assert model_kind(saved) == SPARSE
    (saved / "config_sentence_transformers.json").unlink()   # modules.json alone decides too
    assert model_kind(saved) == SPARSE
    with pytest.raises(FileNotFoundError, match="expected modules.json or config.json"):
        model_kind(tmp_path / "empty")


def test_dense_answer_is_one_unit_vector_per_text(minilm):
    vectors = serve(minilm, json.dumps(TEXTS).encode())
    hidden = json.loads((minilm_path() / "config.json").read_text())["hidden_size"]
    assert len(vectors) == len(TEXTS) and {len(v) for v in vectors} == {hidden}
    matrix = np.array(vectors)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-4)   # the model's Normalize module
    similarity = matrix @ matrix.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2                    # cat/mat closer to cat/rug than to stocks


def test_object_forms_give_the_same_vectors(minilm):
    plain = serve(minilm, json.dumps(TEXTS[:2]))                          # str body, as the HF toolkit passes it
    for key in ("texts", "inputs"):
        wrapped = serve(minilm, json.dumps({key: TEXTS[:2]}).encode(), content_type="application/json; charset=utf-8")
        assert np.allclose(np.array(wrapped), np.array(plain), atol=1e-5)


def test_sparse_answer_is_token_weights_without_zeros_or_special_tokens(splade):
    rows = serve(splade, json.dumps(TEXTS).encode(), accept="*/*")
    assert len(rows) == len(TEXTS) and all(isinstance(row, dict) and row for row in rows)
    special = set(splade.tokenizer.all_special_tokens)
    vocabulary = splade.tokenizer.get_vocab()
    for text, row in zip(TEXTS, rows, strict=True):
        assert all(weight > 0 for weight in row.values())
        assert not special & set(row) and set(row) <= set(vocabulary)
        full = splade.encode([text], convert_to_tensor=True).to_dense()[0]
        nonzero = {int(i) for i in full.nonzero().flatten()} - set(splade.tokenizer.all_special_ids)
        assert len(row) == len(nonzero)                                  # every non-zero weight, nothing else
    assert "cat" in rows[0] and "cat" not in rows[2]                      # the text's own terms carry weight
    assert {"stock", "monday"} <= set(rows[2]) and "mat" not in rows[2]


@pytest.mark.parametrize("body, content_type, message", [
    (b'{"text": ["a"]}', JSON, "expected a JSON list of strings, or an object with a 'texts' or 'inputs' list"),
    (b'"just one text"', JSON, "request body must be a JSON list of strings, not a string"),
    (b'{"texts": "one"}', JSON, "'texts' must be a JSON list of strings, not a string"),
    (b"[]", JSON, "request body is an empty list"),
    (b'["fine", 3]', JSON, "request body item 1 is a number, not a string"),
    (b'{"inputs": ["fine", null]}', JSON, "'inputs' item 1 is null, not a string"),
    (b"[not json", JSON, "request body is not valid JSON"),
    (b'["caf\xe9"]', JSON, "request body is not UTF-8"),
    (b"a,b", "text/csv", "content type 'text/csv' is not supported"),
])
def test_bad_requests_get_400_errors_that_say_what_is_wrong(body, content_type, message):
    with pytest.raises(BadRequest) as caught:
        input_fn(body, content_type)
    assert message in str(caught.value) and caught.value.status_code == 400


def test_unsupported_accept_type_is_a_bad_request():
    with pytest.raises(BadRequest, match="accept type 'text/csv' is not supported"):
        output_fn([[0.5]], "text/csv")


def test_handlers_take_the_arguments_the_toolkits_pass():
    # Both toolkits call the user function without their context when it has one parameter fewer than theirs.
    assert [len(signature(f).parameters) for f in (model_fn, input_fn, predict_fn, output_fn)] == [1, 2, 2, 2]
