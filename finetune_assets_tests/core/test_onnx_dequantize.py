"""bge-small-en, packaged only as int8 ONNX, becomes a trainable sentence-transformers model that encodes as the ONNX
export does."""
from pathlib import Path

import numpy as np
import pytest

from finetune_assets.core.offline_models import bge_small_onnx_dir, resolve_base_model, resolve_model
from finetune_assets.core.onnx_dequantize import (
    DequantizeError,
    dequantized_state_dict,
    sentence_transformer_from_quantized_onnx,
)
from finetune_assets.core.teachers.onnx_encoder import OnnxDenseEncoder

TEXTS = ["the scramjet inlet keeps the shock at the cowl lip at hypersonic speed",
         "laminar boundary layer transition on a heated flat plate",
         "heat transfer coefficients for turbulent flow in smooth pipes",
         "buckling of thin cylindrical shells under axial compression"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return sentence_transformer_from_quantized_onnx(bge_small_onnx_dir(), tmp_path_factory.mktemp("bge") / "st")


def test_the_dequantised_model_encodes_as_the_onnx_export_and_trains(converted):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(converted), device="cpu")
    ours = model.encode(TEXTS, normalize_embeddings=True)
    onnx = OnnxDenseEncoder(bge_small_onnx_dir()).encode(TEXTS)
    assert ours.shape == onnx.shape == (4, 384)
    assert float(np.min(np.sum(ours * onnx, axis=1))) > 0.99  # int8 activations in the ONNX run differ slightly
    # The same ranking of the documents for a query (no instruction on either side).
    query = ["shock position in a hypersonic inlet"]
    assert np.argmax(model.encode(query) @ ours.T) == np.argmax(
        OnnxDenseEncoder(bge_small_onnx_dir()).encode(query, role="document") @ onnx.T) == 0
    parameters = list(model.parameters())
    assert parameters and all(p.requires_grad and p.dtype.is_floating_point for p in parameters)
    assert model[1].pooling_mode == "cls"  # BGE's pooling, which ml-commons registers as CLS
    # Every saved tensor comes from the export: no randomly initialised pooler head, so conversions are identical.
    from safetensors import safe_open

    with safe_open(str(converted / "model.safetensors"), "np") as saved:
        names = set(saved.keys())
    assert names == set(dequantized_state_dict(bge_small_onnx_dir() / "model.onnx"))
    assert not any(name.startswith("pooler.") for name in names)


def test_a_tensor_missing_from_the_export_is_named(tmp_path):
    import onnx

    graph_model = onnx.load(str(bge_small_onnx_dir() / "model.onnx"))
    kept = [i for i in graph_model.graph.initializer if i.name != "embeddings.position_embeddings.weight_scale"]
    del graph_model.graph.initializer[:]
    graph_model.graph.initializer.extend(kept)
    onnx.save(graph_model, str(tmp_path / "model.onnx"))
    with pytest.raises(DequantizeError, match="embeddings.position_embeddings.weight_scale"):
        dequantized_state_dict(tmp_path / "model.onnx")


def test_the_alias_is_onnx_for_teachers_and_a_cached_trainable_folder_for_training(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_ASSETS_CACHE_DIR", str(tmp_path))
    assert resolve_model("local:bge-small-en") == str(bge_small_onnx_dir())
    folder = resolve_base_model("local:bge-small-en")
    assert Path(folder).parent == tmp_path and (Path(folder) / "modules.json").is_file()
    written = (Path(folder) / "model.safetensors").stat().st_mtime_ns
    assert resolve_base_model("LOCAL:bge-small-en") == folder  # converted once, then read from the cache
    assert (Path(folder) / "model.safetensors").stat().st_mtime_ns == written
    assert not list(tmp_path.glob("*.tmp-*"))  # no half-written folder left behind
    assert resolve_base_model("local:splade-tiny") == resolve_model("local:splade-tiny")
