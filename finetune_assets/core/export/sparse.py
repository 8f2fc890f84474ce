"""Export a SPLADE SparseEncoder as an ml-commons SPARSE_ENCODING package (TorchScript).

Pure logic: no Dagster, no boto3. torch / sentence-transformers / tokenizers are imported lazily
so that importing this module stays cheap.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from finetune_assets.core.export.model_dir import check_model_dir, describe_sparse, document_side, load_model
from finetune_assets.core.export.package import TOKENIZER_FILE, ExportedPackage, safe_stem, write_package
from finetune_assets.core.export.tokenization import package_tokenizer_json
from finetune_assets.core.export.torchscript import run_torchscript, trace_sparse
from finetune_assets.core.export.verify import (
    DEFAULT_MIN_COSINE,
    DEFAULT_SAMPLE_SENTENCES,
    compare_outputs,
    probe_texts,
    top_tokens,
)


def export_sparse_model(
    model_dir: str | Path,
    out_dir: str | Path,
    name: str | None = None,
    version: str = "1.0.0",
    description: str | None = None,
    model_group_id: str | None = None,
    sample_sentences: Sequence[str] = DEFAULT_SAMPLE_SENTENCES,
    min_cosine: float = DEFAULT_MIN_COSINE,
) -> ExportedPackage:
    """Export a SPLADE `SparseEncoder` directory as an ml-commons SPARSE_ENCODING package (TorchScript).

    The traced model takes `{"input_ids", "attention_mask"}` and returns `{"output": [batch, vocab]}`,
    the format of OpenSearch's own neural-sparse models (opensearch-py-ml `NeuralSparseModel`), with the
    special tokens' weights set to 0. The plain MLM-transformer + SpladePooling layout is supported, and an
    inference-free Router model's document route (its query side is a SPARSE_TOKENIZE package, see
    tokenizer_export.py).
    """
    started = time.perf_counter()
    model_dir = check_model_dir(model_dir)
    warnings: list[str] = []

    import torch

    model = document_side(load_model(model_dir, sparse=True))
    info = describe_sparse(model, model_dir)
    tokenizer_json = package_tokenizer_json(model, model_dir, info["max_seq_length"])
    special_ids = sorted(set(int(i) for i in model.tokenizer.all_special_ids))

    probes = probe_texts(sample_sentences, info["max_seq_length"])
    reference = model.encode(probes, prompt="", batch_size=len(probes), convert_to_tensor=True, show_progress_bar=False)
    reference = reference.to_dense() if reference.is_sparse else reference
    reference = reference.clone()
    reference[:, special_ids] = 0
    reference = reference.numpy()

    file_stem = safe_stem(name or model_dir.name)
    with torch.no_grad():
        model_bytes = trace_sparse(model, sample_sentences, special_ids, info["vocab_size"])
        produced = run_torchscript(model_bytes, tokenizer_json, probes, "output")
    verification = compare_outputs(
        produced, reference, probes, tokenizer_json, model.tokenizer, info["max_seq_length"], min_cosine
    )
    verification["sample_top_tokens"] = top_tokens(produced[0], tokenizer_json, 10)

    name = name or model_dir.name
    description = description or (
        f"Fine-tuned SPLADE sparse encoder {name}: token weights over a {info['vocab_size']}-token "
        f"vocabulary, inputs truncated at {info['max_seq_length']} tokens."
    )
    return write_package(
        out_dir=Path(out_dir),
        kind="sparse",
        model_dir=model_dir,
        zip_name=f"{file_stem}-{version}-torch_script.zip",
        entries={f"{file_stem}.pt": model_bytes, TOKENIZER_FILE: tokenizer_json.encode("utf-8")},
        name=name,
        version=version,
        description=description,
        model_group_id=model_group_id,
        model_format="TORCH_SCRIPT",
        function_name="SPARSE_ENCODING",
        model_config=None,
        embedding_dimension=info["vocab_size"],
        max_seq_length=info["max_seq_length"],
        extra_manifest={"model_type": info["model_type"], "modules": info["modules"], "special_token_ids": special_ids},
        verification=verification,
        warnings=warnings,
        started=started,
    )
