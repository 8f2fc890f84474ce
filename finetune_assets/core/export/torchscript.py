"""Trace a model to TorchScript the way ml-commons runs it, save it reproducibly and run the saved file.

* TORCH_SCRIPT text embedding (`framework_type: sentence_transformers`): DJL feeds ONE sentence,
  tokenized with `tokenizer.json`, as a dict `{"input_ids": [1, L], "attention_mask": [1, L]}`
  (tensor names `input1.input_ids`, `input1.attention_mask`) and reads the output dict's
  `sentence_embedding`. Pooling and normalisation must happen inside the traced model.
* TORCH_SCRIPT sparse encoding: same dict input; the output dict's `output` is a `[1, vocab]` tensor
  of token weights; ml-commons turns every non-zero entry into `{token: weight}` by decoding the id
  with `tokenizer.json` (special tokens decode to "" and are dropped).

(Read from ml-commons' SentenceTransformerTextEmbeddingTranslator and SparseEncodingTranslator, and
opensearch-py-ml's SentenceTransformerModel.save_as_pt / NeuralSparseModel, which trace with a
`{"input_ids", "attention_mask"}` dict and `strict=False`.)

Reproducible: TorchScript is traced in a fresh compilation unit (no `___torch_mangle_N` renames on a second
export in one process) and saved without its `*.debug_pkl` records, which hold the tracing call stack
(absolute paths, caller line numbers). torch.jit.save is otherwise deterministic.
"""
from __future__ import annotations

import io
import zipfile
from typing import Sequence

from finetune_assets.core.export.package import ExportError
from finetune_assets.core.export.tokenization import encode_one, example_features


def _trace(module, example: dict):
    """torch.jit.trace in a fresh TorchScript compilation unit, without storing the example inputs.

    TorchScript registers every traced class under its qualified name in one process-wide compilation
    unit and renames repeats (`___torch_mangle_N`), so a second export in the same process would
    otherwise serialise other code file names and get another SHA-256. `torch.jit._state._python_cu`
    is private API: when it is missing the trace still works, only without that guarantee.
    """
    import torch
    import torch.jit._state as jit_state

    kwargs = dict(strict=False, check_trace=False, _store_inputs=False)
    if not hasattr(jit_state, "_python_cu"):
        return torch.jit.trace(module, (example,), **kwargs)
    saved = jit_state._python_cu
    unit = torch._C.CompilationUnit()
    jit_state._python_cu = unit
    try:
        return torch.jit.trace(module, (example,), _compilation_unit=unit, **kwargs)
    finally:
        jit_state._python_cu = saved


def _save_script(traced) -> bytes:
    """torch.jit.save, then drop the `*.debug_pkl` records.

    Those hold the Python call stack seen while tracing (absolute file paths and the caller's line
    numbers), so they differ between two exports of the same model and leak local paths. The loader
    only reads them when present (they feed error messages). The archive is rewritten with torch's
    own PyTorchFileWriter, which recomputes `.data/serialization_id` from the remaining records.
    """
    import torch

    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    raw = buffer.getvalue()
    reader = torch._C.PyTorchFileReader(io.BytesIO(raw))
    stripped = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(stripped)
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        records = [info.filename.split("/", 1)[1] for info in archive.infolist()]
    for record in records:
        if record.endswith(".debug_pkl") or record == ".data/serialization_id":
            continue
        data = reader.get_record(record)
        writer.write_record(record, data, len(data))
    writer.write_end_of_file()
    return stripped.getvalue()


def trace_dense(model, sample_sentences: Sequence[str]) -> bytes:
    import torch

    class DenseForOpenSearch(torch.nn.Module):
        """dict(input_ids, attention_mask) -> dict(sentence_embedding), what ml-commons' TorchScript
        sentence-transformers translator feeds and reads."""

        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            out = self.encoder({"input_ids": features["input_ids"], "attention_mask": features["attention_mask"]})
            return {"sentence_embedding": out["sentence_embedding"]}

    example = example_features(model, sample_sentences)
    traced = _trace(DenseForOpenSearch(model).eval(), example)
    return _save_script(traced)


def trace_sparse(model, sample_sentences: Sequence[str], special_ids: list[int], vocab_size: int) -> bytes:
    import torch

    keep = torch.ones(vocab_size)
    keep[special_ids] = 0.0

    class SparseForOpenSearch(torch.nn.Module):
        """dict(input_ids, attention_mask) -> dict(output=[batch, vocab] token weights), the format of
        OpenSearch's neural-sparse TorchScript models."""

        def __init__(self, encoder, keep_mask):
            super().__init__()
            self.encoder = encoder
            self.register_buffer("keep_mask", keep_mask)

        def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            out = self.encoder({"input_ids": features["input_ids"], "attention_mask": features["attention_mask"]})
            return {"output": out["sentence_embedding"] * self.keep_mask}

    example = example_features(model, sample_sentences)
    traced = _trace(SparseForOpenSearch(model, keep).eval(), example)
    return _save_script(traced)


def run_torchscript(model_bytes: bytes, tokenizer_json: str, texts: list[str], output_key: str):
    """Run the saved TorchScript file like ml-commons does: one text at a time, no padding."""
    import numpy as np
    import torch
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    try:
        scripted = torch.jit.load(io.BytesIO(model_bytes), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"the saved TorchScript file does not load back: {exc}") from exc
    # A handful of calls: skip the JIT's profiling/fusion passes, which cost seconds and change nothing here.
    with torch.jit.optimized_execution(False):
        rows = [_run_scripted(scripted, tokenizer, text, output_key) for text in texts]
    return np.stack(rows)


def _run_scripted(scripted, tokenizer, text: str, output_key: str):
    import torch

    ids, mask, _ = encode_one(tokenizer, text)
    features = {"input_ids": torch.tensor([ids], dtype=torch.long), "attention_mask": torch.tensor([mask], dtype=torch.long)}
    try:
        output = scripted(features)
    except Exception as exc:  # noqa: BLE001 - e.g. more tokens than position embeddings
        raise ExportError(f"the packaged TorchScript model fails on a {len(ids)}-token input: {exc}") from exc
    if not isinstance(output, dict) or output_key not in output:
        raise ExportError(f"the traced model returned {type(output).__name__} without {output_key!r}")
    return output[output_key][0].float().numpy()
