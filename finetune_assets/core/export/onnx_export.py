"""Export a dense model's token embeddings to ONNX and run the file with ml-commons' own pooling.

ONNX text embedding: ml-commons feeds `input_ids`, `attention_mask` and, for `model_type` bert or
albert only, `token_type_ids`; it takes output 0 as token embeddings `[1, L, H]` and applies
`pooling_mode` and `normalize_result` itself (ONNXSentenceTransformerTextEmbeddingTranslator). So only
Transformer + Pooling (+ Normalize) models can be exported to ONNX.
"""
from __future__ import annotations

import io
import math
from typing import Sequence

from finetune_assets.core.export.package import ExportError
from finetune_assets.core.export.tokenization import encode_one, example_features

# ml-commons' ONNX translator adds token_type_ids only for these model types.
_ONNX_TOKEN_TYPE_MODEL_TYPES = ("bert", "albert")


def onnx_dense(model, sample_sentences: Sequence[str], model_type: str) -> bytes:
    import torch

    with_token_types = model_type.lower() in _ONNX_TOKEN_TYPE_MODEL_TYPES
    auto_model = model[0].auto_model.eval()

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            return self.backbone(**kwargs, return_dict=False)[0]

    example = example_features(model, sample_sentences)
    args = [example["input_ids"], example["attention_mask"]]
    names = ["input_ids", "attention_mask"]
    if with_token_types:
        args.append(torch.zeros_like(example["input_ids"]))
        names.append("token_type_ids")
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    buffer = io.BytesIO()
    try:
        # The TorchScript-based exporter (dynamo=False) writes a single self-contained file and needs
        # only the onnx package; opset 15 is what opensearch-py-ml exports with.
        torch.onnx.export(
            TokenEmbeddings(auto_model),
            tuple(args),
            buffer,
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=15,
            dynamo=False,
        )
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
    return buffer.getvalue()


def run_onnx_dense(model_bytes: bytes, tokenizer_json: str, texts: list[str], info: dict):
    """Run the ONNX file and pool like ml-commons' ONNXSentenceTransformerTextEmbeddingTranslator."""
    import numpy as np
    import onnxruntime
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    rows = []
    for text in texts:
        ids, mask, type_ids = encode_one(tokenizer, text)
        feed = {"input_ids": np.array([ids], dtype=np.int64), "attention_mask": np.array([mask], dtype=np.int64)}
        if info["model_type"].lower() in _ONNX_TOKEN_TYPE_MODEL_TYPES:
            feed["token_type_ids"] = np.array([type_ids], dtype=np.int64)
        if set(feed) != wanted:
            raise ExportError(f"ONNX inputs {sorted(wanted)} differ from what ml-commons feeds {sorted(feed)}")
        try:
            tokens = session.run(None, feed)[0][0].astype(np.float64)  # [L, H]
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"the packaged ONNX model fails on a {len(ids)}-token input: {exc}") from exc
        rows.append(_ml_commons_pool(tokens, np.array(mask, dtype=np.float64), info["pooling_mode"], info["normalize_result"]))
    return np.stack(rows)


def _ml_commons_pool(tokens, mask, pooling_mode: str, normalize: bool):
    import numpy as np

    m = mask[:, None]
    if pooling_mode == "MEAN":
        vector = (tokens * m).sum(0) / max(mask.sum(), 1e-9)
    elif pooling_mode == "MEAN_SQRT_LEN":
        vector = (tokens * m).sum(0) / math.sqrt(max(mask.sum(), 1e-9))
    elif pooling_mode == "MAX":
        vector = np.where(m > 0, tokens, -1e9).max(0)
    elif pooling_mode == "WEIGHTED_MEAN":
        weights = np.arange(1, tokens.shape[0] + 1, dtype=np.float64)[:, None] * m
        vector = (tokens * weights).sum(0) / weights.sum(0)
    elif pooling_mode == "CLS":
        vector = tokens[0]
    else:  # guarded in describe_dense
        raise ExportError(f"no ONNX pooling for {pooling_mode}")
    if normalize:
        vector = vector / max(np.linalg.norm(vector), 1e-12)
    return vector
