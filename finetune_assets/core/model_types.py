"""The kinds of retrieval model the graph can train, and how to tell them apart on disk.

dense           a sentence-transformers bi-encoder (kNN vectors, OpenSearch TEXT_EMBEDDING)
sparse          SPLADE: the same MLM encoder for queries and documents (OpenSearch SPARSE_ENCODING)
inference_free  documents through SPLADE, queries through a static token-weight table (IDF), so a query
                costs no model inference (OpenSearch SPARSE_ENCODING for documents + SPARSE_TOKENIZE for queries)
"""
from __future__ import annotations

import json
from pathlib import Path

from finetune_assets.core.offline_models import DEFAULT_DENSE_MODEL, DEFAULT_SPARSE_MODEL

MODEL_TYPES = ("dense", "sparse", "inference_free")


def check_model_type(model_type: str) -> str:
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model_type {model_type!r}; use one of {', '.join(MODEL_TYPES)}")
    return model_type


def default_base_model(model_type: str) -> str:
    """Both sparse kinds start from a SPLADE model: inference_free keeps its document side."""
    return DEFAULT_DENSE_MODEL if check_model_type(model_type) == "dense" else DEFAULT_SPARSE_MODEL


def is_sparse_type(model_type: str) -> bool:
    return check_model_type(model_type) != "dense"


def detect_model_type(model_dir: str | Path) -> str:
    """Read a saved model folder's modules.json: a Router means inference_free, SpladePooling means sparse."""
    modules_file = Path(model_dir) / "modules.json"
    if not modules_file.is_file():
        raise FileNotFoundError(f"{modules_file} not found: {model_dir} is not a saved sentence-transformers model")
    types = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in json.loads(modules_file.read_text(encoding="utf-8"))]
    if "Router" in types:
        return "inference_free"
    if "SpladePooling" in types:
        return "sparse"
    return "dense"
