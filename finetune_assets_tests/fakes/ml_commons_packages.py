"""Model packages for the ml-commons tests and the call listing (ml_commons_calls.py).

Two kinds: synthetic packages shaped like export.py's output (random bytes as the model, small chunks: fast,
for tests that only look at the HTTP calls), and real packages exported from the MiniLM and SPLADE-tiny models
that ship in registry packages (slow: traced and self-checked, for the listing and the real-cluster test).
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from finetune_assets.core.export.package import MODEL_CHUNK_SIZE_BYTES, total_chunks

CHUNK = 4096                      # small chunks, so a 10 kB synthetic zip is uploaded in 3 pieces
GROUP = "finetune-assets/tiny"
# IDF weights of the synthetic query tokenizer: "bananas" outweighs the common words
SYNTHETIC_IDF = {"the": 0.0, "cat": 0.5, "bananas": 4.0}
# documents the real inference-free model's IDF table is computed from
IDF_DOCUMENTS = ["The cat sat on the mat.", "OpenSearch registers fine-tuned embedding models.",
                 "Bananas are yellow and sweet.", "Neural sparse search weights query tokens by IDF."]


@dataclass(frozen=True)
class Packages:
    """One package folder per registration path, and the chunk size their register bodies were made for."""

    dense: Path          # TEXT_EMBEDDING
    sparse: Path         # SPARSE_ENCODING
    pair: Path           # inference-free: document/ (SPARSE_ENCODING) + query/ (SPARSE_TOKENIZE)
    chunk_size: int
    kind: str            # "synthetic" or "exported"


def write_package(folder: Path, *, seed: int = 0, size: int = 10_000, function_name: str = "TEXT_EMBEDDING",
                  chunk_size: int = CHUNK, dimension: int = 32, name: str = GROUP) -> Path:
    """A package folder shaped like export.py's output, with random bytes as the 'model'."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = hashlib.shake_256(f"model-{seed}".encode()).digest(size)
    zip_name = "tiny-1-torch_script.zip"
    with zipfile.ZipFile(folder / zip_name, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("tiny.pt", payload)
        archive.writestr("tokenizer.json", "{}")
    data = (folder / zip_name).read_bytes()
    body = {"name": name, "version": "1", "description": "test package", "model_format": "TORCH_SCRIPT",
            "function_name": function_name, "model_content_hash_value": hashlib.sha256(data).hexdigest(),
            "model_content_size_in_bytes": len(data), "total_chunks": total_chunks(len(data), chunk_size)}
    if function_name == "TEXT_EMBEDDING":
        body["model_config"] = {"model_type": "bert", "embedding_dimension": dimension,
                                "framework_type": "sentence_transformers", "pooling_mode": "MEAN",
                                "normalize_result": True, "all_config": "{}"}
    (folder / "ml_commons_register.json").write_text(json.dumps(body))
    (folder / "package.json").write_text(json.dumps({"files": {"zip": zip_name}, "embedding_dimension": dimension}))
    return folder


def write_tokenizer_package(folder: Path, idf: dict[str, float], function_name: str = "SPARSE_TOKENIZE") -> Path:
    """A SPARSE_TOKENIZE package as tokenizer_export.py writes it: tokenizer.json + idf.json at the zip root."""
    from finetune_assets.core.offline_models import splade_tiny_path

    folder.mkdir(parents=True, exist_ok=True)
    zip_path = folder / "tiny-query-1-sparse_tokenize.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("tokenizer.json", (splade_tiny_path() / "tokenizer.json").read_text())
        archive.writestr("idf.json", json.dumps(idf))
    data = zip_path.read_bytes()
    body = {"name": f"{GROUP}-query-tokenizer", "version": "1", "model_format": "TORCH_SCRIPT",
            "function_name": function_name, "model_content_hash_value": hashlib.sha256(data).hexdigest(),
            "model_content_size_in_bytes": len(data), "total_chunks": total_chunks(len(data), CHUNK)}
    (folder / "ml_commons_register.json").write_text(json.dumps(body))
    (folder / "package.json").write_text(json.dumps({"files": {"zip": zip_path.name}}))
    return folder


def write_inference_free_pair(folder: Path, idf: dict[str, float] = SYNTHETIC_IDF) -> Path:
    """Synthetic document/ (SPARSE_ENCODING) + query/ (SPARSE_TOKENIZE) packages in ``folder``."""
    write_package(folder / "document", function_name="SPARSE_ENCODING")
    write_tokenizer_package(folder / "query", idf)
    return folder


def synthetic_packages(folder: Path) -> Packages:
    return Packages(dense=write_package(folder / "dense"),
                    sparse=write_package(folder / "sparse", seed=1, function_name="SPARSE_ENCODING"),
                    pair=write_inference_free_pair(folder / "pair"), chunk_size=CHUNK, kind="synthetic")


def export_dense_package(folder: Path, name: str = "finetune-assets/minilm") -> Path:
    """The bundled all-MiniLM-L6-v2 exported as a TorchScript TEXT_EMBEDDING package."""
    from finetune_assets.core.export.dense import export_dense_model
    from finetune_assets.core.offline_models import minilm_path

    return export_dense_model(minilm_path(), folder, name=name).out_dir


def exported_packages(folder: Path) -> Packages:
    """Each package exported once from the bundled models: MiniLM (dense), SPLADE-tiny (sparse), and an
    inference-free model built on SPLADE-tiny (IDF weights from IDF_DOCUMENTS for its queries)."""
    from finetune_assets.core.export.sparse import export_sparse_model
    from finetune_assets.core.export.tokenizer_export import export_inference_free_model
    from finetune_assets.core.offline_models import splade_tiny_path
    from finetune_assets.core.training.sparse_training import inference_free_model, load_splade

    dense = export_dense_package(folder / "dense")
    sparse = export_sparse_model(splade_tiny_path(), folder / "sparse", name="finetune-assets/splade-tiny").out_dir
    model_dir = folder / "inference-free-model"
    inference_free_model(load_splade("local:splade-tiny", 64, "cpu"), IDF_DOCUMENTS).save_pretrained(str(model_dir))
    export_inference_free_model(model_dir, folder / "pair", name="finetune-assets/splade-tiny-if")
    return Packages(dense=dense, sparse=sparse, pair=folder / "pair", chunk_size=MODEL_CHUNK_SIZE_BYTES,
                    kind="exported")
