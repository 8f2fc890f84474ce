"""Reusing the base model's saved document embeddings: only matching rows are reused, the rest encoded."""
from __future__ import annotations

import json

import numpy as np
import pytest

from finetune_assets.core.jsonl import write_jsonl
from finetune_assets.core.retrieval.saved_embeddings import (
    EMBEDDINGS_FILE,
    embeddings_reusing_saved,
    model_identity,
    save_embeddings,
)

DOCUMENTS = "documents.jsonl"
IDENTITY = model_identity("local:bge-small-en", 256)


def fake_encode(texts):
    """A deterministic stand-in: each text's vector is its length and its first character's code."""
    return np.asarray([[len(t), ord(t[0])] for t in texts], dtype=np.float32)


def saved_folder(tmp_path, documents: dict[str, str]):
    write_jsonl(tmp_path / DOCUMENTS, [{"id": i, "text": t} for i, t in documents.items()])
    save_embeddings(tmp_path, fake_encode(list(documents.values())) + 1000, IDENTITY)  # + 1000: marks saved rows
    return tmp_path


def test_matching_rows_are_reused_and_the_rest_encoded(tmp_path):
    folder = saved_folder(tmp_path, {"a": "alpha", "b": "beta", "c": "gamma"})
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return fake_encode(texts)

    # "d" was never saved (a held-out document); "b" has a changed text; "a" and "c" are unchanged
    vectors, reused = embeddings_reusing_saved(folder, DOCUMENTS, IDENTITY, ["c", "d", "b", "a"],
                                               ["gamma", "delta", "beta, edited", "alpha"], encode)
    assert reused == 2
    assert calls == [["delta", "beta, edited"]]  # one call, only the rows not reusable
    np.testing.assert_array_equal(vectors, [[1005, 1103], [5, 100], [12, 98], [1005, 1097]])
    assert vectors.dtype == np.float32


@pytest.mark.parametrize("identity", [model_identity("local:all-MiniLM-L6-v2", 256),
                                      model_identity("local:bge-small-en", 128)])
def test_embeddings_of_another_model_or_token_limit_are_not_reused(tmp_path, identity):
    folder = saved_folder(tmp_path, {"a": "alpha"})
    assert embeddings_reusing_saved(folder, DOCUMENTS, identity, ["a"], ["alpha"], fake_encode) is None


def test_nothing_saved_gives_none(tmp_path):
    write_jsonl(tmp_path / DOCUMENTS, [{"id": "a", "text": "alpha"}])  # a sparse run saves documents only
    assert embeddings_reusing_saved(tmp_path, DOCUMENTS, IDENTITY, ["a"], ["alpha"], fake_encode) is None


def test_a_truncated_file_is_an_error_that_names_it(tmp_path):
    folder = saved_folder(tmp_path, {"a": "alpha", "b": "beta"})
    np.save(folder / EMBEDDINGS_FILE, np.zeros((1, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=EMBEDDINGS_FILE + ".*2 documents.*mined_negatives"):
        embeddings_reusing_saved(folder, DOCUMENTS, IDENTITY, ["a"], ["alpha"], fake_encode)


def test_a_model_of_another_dimension_is_an_error(tmp_path):
    folder = saved_folder(tmp_path, {"a": "alpha"})
    with pytest.raises(ValueError, match="2-dimensional"):
        embeddings_reusing_saved(folder, DOCUMENTS, IDENTITY, ["z"], ["zeta"],
                                 lambda texts: np.zeros((len(texts), 3), dtype=np.float32))


def test_the_identity_is_written_beside_the_vectors(tmp_path):
    folder = saved_folder(tmp_path, {"a": "alpha", "b": "beta"})
    info = json.loads((folder / "base_document_embeddings.json").read_text())
    assert info == {"model": "local:bge-small-en", "max_seq_length": 256}
