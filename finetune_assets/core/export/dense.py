"""Export a dense SentenceTransformer as an ml-commons TEXT_EMBEDDING package (TorchScript or ONNX).

Pure logic: no Dagster, no boto3. torch / sentence-transformers / tokenizers are imported lazily
so that importing this module stays cheap.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from finetune_assets.core.export.model_dir import check_format, check_model_dir, describe_dense, load_model
from finetune_assets.core.export.onnx_export import onnx_dense, run_onnx_dense
from finetune_assets.core.export.package import TOKENIZER_FILE, ExportedPackage, safe_stem, write_package
from finetune_assets.core.export.tokenization import package_tokenizer_json
from finetune_assets.core.export.torchscript import run_torchscript, trace_dense
from finetune_assets.core.export.verify import (
    DEFAULT_MIN_COSINE,
    DEFAULT_SAMPLE_SENTENCES,
    compare_outputs,
    probe_texts,
)


def export_dense_model(
    model_dir: str | Path,
    out_dir: str | Path,
    model_format: str = "TORCH_SCRIPT",
    name: str | None = None,
    version: str = "1.0.0",
    description: str | None = None,
    model_group_id: str | None = None,
    sample_sentences: Sequence[str] = DEFAULT_SAMPLE_SENTENCES,
    min_cosine: float = DEFAULT_MIN_COSINE,
) -> ExportedPackage:
    """Export a dense `SentenceTransformer` directory as an ml-commons TEXT_EMBEDDING package in `out_dir`."""
    started = time.perf_counter()
    model_format = check_format(model_format)
    model_dir = check_model_dir(model_dir)
    warnings: list[str] = []

    import torch

    model = load_model(model_dir, sparse=False)
    info = describe_dense(model, model_dir, model_format)
    warnings += info["warnings"]
    tokenizer_json = package_tokenizer_json(model, model_dir, info["max_seq_length"])

    probes = probe_texts(sample_sentences, info["max_seq_length"])
    # prompt="" : the reference is the model on the raw text, as ml-commons will feed it (no prompt).
    reference = model.encode(
        probes, prompt="", batch_size=len(probes), convert_to_numpy=True, normalize_embeddings=False,
        show_progress_bar=False,
    )

    file_stem = safe_stem(name or model_dir.name)
    with torch.no_grad():
        if model_format == "TORCH_SCRIPT":
            model_bytes = trace_dense(model, sample_sentences)
            model_file = f"{file_stem}.pt"
            produced = run_torchscript(model_bytes, tokenizer_json, probes, "sentence_embedding")
        else:
            model_bytes = onnx_dense(model, sample_sentences, info["model_type"])
            model_file = f"{file_stem}.onnx"
            produced = run_onnx_dense(model_bytes, tokenizer_json, probes, info)
    verification = compare_outputs(
        produced, reference, probes, tokenizer_json, model.tokenizer, info["max_seq_length"], min_cosine
    )

    name = name or model_dir.name
    description = description or (
        f"Fine-tuned sentence-transformers model {name}: {info['embedding_dimension']}-dimensional "
        f"{info['pooling_mode'].lower()} pooling{', normalized' if info['normalize_result'] else ''}, "
        f"inputs truncated at {info['max_seq_length']} tokens."
    )
    model_config = {
        "model_type": info["model_type"],
        "embedding_dimension": info["embedding_dimension"],
        "framework_type": "sentence_transformers",
        "pooling_mode": info["pooling_mode"],
        "normalize_result": info["normalize_result"],
        "model_max_length": info["max_seq_length"],
        "all_config": info["all_config"],
    }
    return write_package(
        out_dir=Path(out_dir),
        kind="dense",
        model_dir=model_dir,
        zip_name=f"{file_stem}-{version}-{model_format.lower()}.zip",
        entries={model_file: model_bytes, TOKENIZER_FILE: tokenizer_json.encode("utf-8")},
        name=name,
        version=version,
        description=description,
        model_group_id=model_group_id,
        model_format=model_format,
        function_name="TEXT_EMBEDDING",
        model_config=model_config,
        embedding_dimension=info["embedding_dimension"],
        max_seq_length=info["max_seq_length"],
        extra_manifest={
            "model_type": info["model_type"],
            "pooling_mode": info["pooling_mode"],
            "normalize_result": info["normalize_result"],
            "modules": info["modules"],
        },
        verification=verification,
        warnings=warnings,
        started=started,
    )
