"""SPARSE_TOKENIZE export of an inference-free model: zip layout, idf.json format, and the self-check."""
from __future__ import annotations

import json
import zipfile

import pytest

from finetune_assets.core.export import tokenizer_export
from finetune_assets.core.export.package import ExportError
from finetune_assets.core.export.tokenizer_export import (
    export_inference_free_model,
    export_sparse_tokenizer,
    sparse_tokenize,
)
from finetune_assets.core.offline_models import splade_tiny_path
from finetune_assets.core.training.sparse_training import inference_free_model, load_splade

DOCUMENTS = ["Sorting a list in Python with sorted() and list.sort().", "Reading files with open() in Python.",
             "Bananas are yellow.", "Threads run code concurrently."]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inference-free") / "model"
    inference_free_model(load_splade("local:splade-tiny", 64, "cpu"), DOCUMENTS).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def model(model_dir):
    from sentence_transformers import SparseEncoder

    return SparseEncoder(str(model_dir), device="cpu")


def query_tokens(model, text: str) -> dict[str, float]:
    vector = model.encode_query([text], convert_to_tensor=True).to_dense()[0]
    tokenizer = model[0].sub_modules["query"][0].tokenizer
    return {tokenizer.convert_ids_to_tokens(i): vector[i].item() for i in vector.nonzero().flatten().tolist()}


def test_sparse_tokenize_package_layout_and_idf_json(model_dir, model, tmp_path):
    package = export_sparse_tokenizer(model_dir, tmp_path / "query", name="finetune-assets/tiny-query", version="1")
    body = json.loads(package.register_body_path.read_text())
    assert body["function_name"] == "SPARSE_TOKENIZE" and body["model_format"] == "TORCH_SCRIPT"
    assert "model_config" not in body and body["total_chunks"] == 1
    with zipfile.ZipFile(package.zip_path) as archive:
        assert sorted(archive.namelist()) == ["idf.json", "tokenizer.json"]   # at the zip root, no model file
        idf = json.loads(archive.read("idf.json"))
        tokenizer_json = archive.read("tokenizer.json").decode()
    weights = model[0].sub_modules["query"][0].weight.detach()
    vocab = model[0].sub_modules["query"][0].tokenizer.get_vocab()
    # token -> float for every non-special vocabulary token (ml-commons would give a missing token 1.0).
    assert all(isinstance(k, str) and isinstance(v, float) for k, v in idf.items())
    assert len(idf) == len(vocab) - 5 and "[CLS]" not in idf and "[UNK]" not in idf
    assert idf["bananas"] == pytest.approx(weights[vocab["bananas"]].item())
    assert idf["##s"] == pytest.approx(weights[vocab["##s"]].item())
    # Replaying ml-commons on the packaged files gives the model's query vector.
    for text in ["yellow bananas", "how do threads work?", "naïve café ☃"]:
        assert sparse_tokenize(tokenizer_json, idf, text) == pytest.approx(query_tokens(model, text))
    assert package.manifest["verification"]["max_abs_diff"] == 0.0
    assert package.manifest["verification"]["token_counts"][-1] == 66   # 64 content tokens + [CLS] + [SEP]


def test_self_check_rejects_an_idf_json_that_changes_query_weights(model_dir, tmp_path, monkeypatch):
    real = tokenizer_export.idf_table

    def without_python(tokenizer_json, weights):
        table = real(tokenizer_json, weights)
        del table["python"]       # ml-commons would then weight "python" 1.0
        return table

    monkeypatch.setattr(tokenizer_export, "idf_table", without_python)
    with pytest.raises(ExportError, match="weights differ"):
        export_sparse_tokenizer(model_dir, tmp_path / "query", sample_sentences=["python sorting"])


def test_plain_splade_has_no_query_tokenizer(tmp_path):
    with pytest.raises(ExportError, match="not an inference-free model"):
        export_sparse_tokenizer(splade_tiny_path(), tmp_path / "query")


def test_inference_free_export_writes_both_packages(model_dir, tmp_path):
    pair = export_inference_free_model(model_dir, tmp_path / "package", name="finetune-assets/tiny", version="1")
    assert (pair.document.function_name, pair.query.function_name) == ("SPARSE_ENCODING", "SPARSE_TOKENIZE")
    assert pair.document.out_dir == tmp_path / "package" / "document"
    assert pair.query.out_dir == tmp_path / "package" / "query"
    assert pair.document.cosine > 0.999 and pair.document.manifest["modules"] == ["Transformer", "SpladePooling"]
    assert pair.query.register_body["name"] == "finetune-assets/tiny-query-tokenizer"
