"""Export to an OpenSearch ml-commons local-model package, checked against the real all-MiniLM-L6-v2 and
SPLADE-tiny models that ship in registry packages (no download)."""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from finetune_assets.core.export import dense as dense_export
from finetune_assets.core.export import package
from finetune_assets.core.export.dense import export_dense_model
from finetune_assets.core.export.package import ExportError
from finetune_assets.core.export.sparse import export_sparse_model
from finetune_assets.core.offline_models import minilm_path, splade_tiny_path

pytestmark = pytest.mark.slow

LONG_TEXT = " ".join(f"word{i % 50} about retrieval" if i % 7 == 0 else "document" for i in range(1000))
TEXTS = ["what is a neural sparse query?", "Dagster assets can be partitioned by date.", LONG_TEXT]


def _cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _zip_entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    return export_dense_model(minilm_path(), tmp_path_factory.mktemp("dense"), name="minilm-finetuned", version="2.0.1")


@pytest.fixture(scope="module")
def st_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path()), device="cpu")


def test_zip_holds_one_torchscript_file_and_tokenizer_at_the_root(dense):
    assert dense.zip_path.name == "minilm-finetuned-2.0.1-torch_script.zip"
    with zipfile.ZipFile(dense.zip_path) as archive:
        infos = archive.infolist()
    assert sorted(i.filename for i in infos) == ["minilm-finetuned.pt", "tokenizer.json"]
    for info in infos:
        assert info.date_time == package.ZIP_DATE_TIME
        assert info.compress_type == zipfile.ZIP_STORED
        assert not info.flag_bits & 0x08  # no data descriptor: Java's ZipInputStream rejects those on STORED
    assert sorted(p.name for p in dense.out_dir.iterdir()) == sorted(
        [dense.zip_path.name, "ml_commons_register.json", "package.json"]
    )


def test_register_body_follows_ml_commons(dense):
    body = json.loads(dense.register_body_path.read_text())
    assert body == dense.register_body
    assert body["name"] == "minilm-finetuned" and body["version"] == "2.0.1"
    assert body["function_name"] == "TEXT_EMBEDDING"
    assert body["model_format"] == "TORCH_SCRIPT"
    assert body["description"]
    config = body["model_config"]
    assert config["model_type"] == "bert"
    assert config["embedding_dimension"] == 384
    assert config["framework_type"] == "sentence_transformers"
    assert config["pooling_mode"] == "MEAN"  # ml-commons upper-cases the value and looks up its enum
    assert config["normalize_result"] is True
    assert config["model_max_length"] == 256
    assert json.loads(config["all_config"]) == json.loads((minilm_path() / "config.json").read_text())
    assert body["total_chunks"] == -(-body["model_content_size_in_bytes"] // package.MODEL_CHUNK_SIZE_BYTES)


def test_hash_and_size_are_those_of_the_zip_bytes(dense):
    data = dense.zip_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert dense.sha256 == digest == dense.register_body["model_content_hash_value"] == package.sha256_file(dense.zip_path)
    assert dense.size_bytes == len(data) == dense.register_body["model_content_size_in_bytes"]
    manifest = json.loads(dense.manifest_path.read_text())
    assert manifest["zip"]["sha256"] == digest and manifest["zip"]["size_bytes"] == len(data)
    entries = _zip_entries(dense.zip_path)
    assert {e["name"]: e["sha256"] for e in manifest["zip"]["entries"]} == {
        name: hashlib.sha256(content).hexdigest() for name, content in entries.items()
    }
    assert manifest["source_model_dir"] == str(minilm_path().resolve())
    assert manifest["embedding_dimension"] == 384 and manifest["max_seq_length"] == 256
    assert manifest["verification"]["min_cosine"] >= 0.999 and dense.cosine >= 0.999


def test_packaged_tokenizer_truncates_at_max_seq_length(dense):
    from tokenizers import Tokenizer

    tokenizer_json = json.loads(_zip_entries(dense.zip_path)["tokenizer.json"])
    assert tokenizer_json["truncation"]["max_length"] == 256
    assert tokenizer_json["padding"] is None
    tokenizer = Tokenizer.from_str(json.dumps(tokenizer_json))
    ids = tokenizer.encode(LONG_TEXT).ids
    assert len(ids) == 256 and ids[-1] == tokenizer.token_to_id("[SEP]")
    assert len(tokenizer.encode("short text").ids) == 4


def test_traced_model_reproduces_sentence_transformer_embeddings(dense, st_model):
    import torch
    from tokenizers import Tokenizer

    entries = _zip_entries(dense.zip_path)
    traced = torch.jit.load(io.BytesIO(entries["minilm-finetuned.pt"]), map_location="cpu")
    tokenizer = Tokenizer.from_str(entries["tokenizer.json"].decode())
    expected = st_model.encode(TEXTS, convert_to_numpy=True)
    for text, reference in zip(TEXTS, expected):  # one text at a time, unpadded, as ml-commons feeds it
        encoding = tokenizer.encode(text)
        with torch.no_grad():
            output = traced({"input_ids": torch.tensor([encoding.ids]), "attention_mask": torch.tensor([encoding.attention_mask])})
        assert set(output) == {"sentence_embedding"}
        assert output["sentence_embedding"].shape == (1, 384)
        assert _cosine(output["sentence_embedding"][0], reference) > 0.999
    # a padded batch of different lengths also works: the trace did not freeze the sequence length
    tokenizer.enable_padding()
    batch = tokenizer.encode_batch(TEXTS[:2])
    with torch.no_grad():
        output = traced({"input_ids": torch.tensor([e.ids for e in batch]),
                         "attention_mask": torch.tensor([e.attention_mask for e in batch])})["sentence_embedding"]
    for row, reference in zip(output, expected[:2]):
        assert _cosine(row, reference) > 0.999


def test_export_is_byte_for_byte_reproducible(dense, tmp_path):
    again = export_dense_model(minilm_path(), tmp_path, name="minilm-finetuned", version="2.0.1")
    assert again.sha256 == dense.sha256
    assert again.register_body == dense.register_body


def test_directory_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        export_dense_model(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no model here")
    with pytest.raises(ExportError, match="no model in"):
        export_dense_model(tmp_path / "empty", tmp_path / "out")
    (tmp_path / "config_only").mkdir()
    (tmp_path / "config_only" / "config.json").write_text((minilm_path() / "config.json").read_text())
    with pytest.raises(ExportError, match="no model weights"):
        export_dense_model(tmp_path / "config_only", tmp_path / "out")
    with pytest.raises(ExportError, match="model_format"):
        export_dense_model(minilm_path(), tmp_path / "out", model_format="SAFETENSORS")
    assert not (tmp_path / "out").exists()


def test_export_fails_when_the_package_does_not_reproduce_the_model(tmp_path, monkeypatch):
    real = dense_export.package_tokenizer_json

    def truncating_too_early(model, model_dir, max_seq_length):
        return real(model, model_dir, 8)

    monkeypatch.setattr(dense_export, "package_tokenizer_json", truncating_too_early)
    with pytest.raises(ExportError, match="does not reproduce"):
        export_dense_model(minilm_path(), tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_onnx_without_the_onnx_package_is_a_clear_error(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(ExportError, match="pip install onnx"):
        export_dense_model(minilm_path(), tmp_path, model_format="ONNX")


def test_onnx_package_gives_token_embeddings_that_ml_commons_pools(tmp_path, st_model):
    pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package")
    import onnxruntime
    from tokenizers import Tokenizer

    package = export_dense_model(minilm_path(), tmp_path, model_format="ONNX", name="minilm")
    assert package.register_body["model_format"] == "ONNX"
    entries = _zip_entries(package.zip_path)
    assert sorted(entries) == ["minilm.onnx", "tokenizer.json"]
    session = onnxruntime.InferenceSession(entries["minilm.onnx"], providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    tokenizer = Tokenizer.from_str(entries["tokenizer.json"].decode())
    for text, reference in zip(TEXTS, st_model.encode(TEXTS, convert_to_numpy=True)):
        e = tokenizer.encode(text)
        tokens = session.run(None, {"input_ids": np.array([e.ids]), "attention_mask": np.array([e.attention_mask]),
                                    "token_type_ids": np.array([e.type_ids])})[0][0]
        mask = np.array(e.attention_mask, dtype=np.float64)[:, None]
        pooled = (tokens * mask).sum(0) / mask.sum()  # MEAN, then normalize_result
        assert _cosine(pooled / np.linalg.norm(pooled), reference) > 0.999


def test_sparse_package_outputs_token_weights_like_neural_sparse_models(tmp_path):
    import torch
    from sentence_transformers import SparseEncoder
    from tokenizers import Tokenizer

    package = export_sparse_model(splade_tiny_path(), tmp_path, name="splade-tiny-ft")
    body = package.register_body
    assert body["function_name"] == "SPARSE_ENCODING" and body["model_format"] == "TORCH_SCRIPT"
    assert "model_config" not in body
    assert body["model_content_hash_value"] == hashlib.sha256(package.zip_path.read_bytes()).hexdigest()
    entries = _zip_entries(package.zip_path)
    assert sorted(entries) == ["splade-tiny-ft.pt", "tokenizer.json"]
    traced = torch.jit.load(io.BytesIO(entries["splade-tiny-ft.pt"]), map_location="cpu")
    tokenizer = Tokenizer.from_str(entries["tokenizer.json"].decode())
    encoder = SparseEncoder(str(splade_tiny_path()), device="cpu")
    special = encoder.tokenizer.all_special_ids
    expected = encoder.encode(TEXTS, convert_to_tensor=True).to_dense()
    for text, reference in zip(TEXTS, expected):
        e = tokenizer.encode(text)
        assert len(e.ids) <= 512
        with torch.no_grad():
            output = traced({"input_ids": torch.tensor([e.ids]), "attention_mask": torch.tensor([e.attention_mask])})
        weights = output["output"][0]
        assert weights.shape == (30522,)
        assert torch.all(weights[special] == 0)
        reference = reference.clone()
        reference[special] = 0
        assert _cosine(weights, reference) > 0.999
    assert package.manifest["verification"]["sample_top_tokens"]
