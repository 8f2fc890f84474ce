"""model_package: the tuned model exported as a zip OpenSearch ml-commons can register (the base model when the
quality gate stopped the tuned one and the base model's search beats BM25 on the held-out queries)."""

import tempfile
from pathlib import Path
from typing import Literal

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from finetune_assets.core.data.pairs import document_text
from finetune_assets.core.export.dense import export_dense_model
from finetune_assets.core.export.sparse import export_sparse_model
from finetune_assets.core.export.tokenizer_export import export_inference_free_model
from finetune_assets.core.jsonl import read_json, read_jsonl, write_json
from finetune_assets.core.model_types import detect_model_type
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.deploy.search_pipeline import best_search
from finetune_assets.stages.evaluation.evaluation_report import REPORT_FILE, quality_gate
from finetune_assets.stages.run_config import check_run_config

PACKAGE_FILE = "packaged_model.json"  # which model the package holds (the export's own manifest is package.json)


class ModelPackageConfig(Config):
    model_format: Literal["TORCH_SCRIPT", "ONNX"] = Field(default="TORCH_SCRIPT", description="Format of a dense "
                                                          "model in the package (sparse models are always traced).")


@asset(partitions_def=index_partitions, group_name="deploy", deps=["trained_model", "evaluation_report", "raw_corpus"],
       kinds={"opensearch"})
def model_package(context: AssetExecutionContext, config: ModelPackageConfig, storage: ArtifactStorage,
                  base_model: BaseModelResource) -> MaterializeResult:
    """A zip OpenSearch ml-commons can register: traced model, tokenizer.json, model_config and SHA-256.

    By model type: dense -> TEXT_EMBEDDING; sparse -> SPARSE_ENCODING; inference_free -> document/ (SPARSE_ENCODING)
    plus query/ (SPARSE_TOKENIZE: tokenizer.json + idf.json). When the quality gate failed and the base model's best
    search (with BM25 or alone) beats BM25 on the held-out queries, the package holds the base model as
    evaluation_report scored it, so the deploy stage can still give the user that search (a stated fallback).
    """
    check_run_config(context)
    index = context.partition_key
    report = read_json(storage.fetch(index, "evaluation_report") / REPORT_FILE)
    passed, gate = quality_gate(report)
    fallback = base_stands_in(report)
    folder = storage.artifact_dir(index, "model_package", run_id=context.run.run_id)
    with tempfile.TemporaryDirectory(prefix="finetune-base-") as scratch:
        if fallback:
            model_dir = save_baseline(base_model, storage, index, Path(scratch))
            note = (f"the tuned model failed the quality gate ({gate}); packaged the base model "
                    f"{base_model.model_name}, whose search beats BM25 on the held-out queries")
            context.log.warning(note)
            name, about = f"finetune-assets/{index}-base", f"base model packaged for index '{index}' by finetune-assets"
        else:
            model_dir = storage.fetch(index, "trained_model") / "model"
            note = "" if passed else f"the tuned model failed the quality gate ({gate}); packaged all the same"
            name, about = f"finetune-assets/{index}", f"fine-tuned on index '{index}' by finetune-assets"
        package, extra = export_package(model_dir, folder, config.model_format, name, about)
    system = "base" if fallback else "tuned"
    write_json(folder / PACKAGE_FILE, {"system": system, "fallback": fallback, "note": note})
    uri = storage.publish(index, "model_package", folder)
    return MaterializeResult(metadata={
        "path": MetadataValue.path(uri),
        "system": system,
        "fallback": fallback,
        **({"note": note} if note else {}),
        "function_name": package.function_name,
        "zip": MetadataValue.path(str(package.zip_path)),
        "sha256": package.sha256,
        "size_mb": round(package.size_bytes / 2**20, 2),
        "model_format": package.model_format,
        "embedding_dimension": package.embedding_dimension,
        "export_cosine_vs_original": package.cosine,
        **extra,
    })


def base_stands_in(report: dict) -> bool:
    """Whether the deploy stage serves the base model: the tuned one failed the quality gate, and the base model's
    best search (with BM25 or alone) beats BM25 on the held-out queries."""
    return not quality_gate(report)[0] and best_search(report, "base")[0] != "bm25"


def save_baseline(base_model: BaseModelResource, storage: ArtifactStorage, index: str, scratch: Path) -> Path:
    """The base model saved as evaluation_report scored it (an inference-free one with this corpus's IDF)."""
    texts = [document_text(d) for d in read_jsonl(storage.fetch(index, "raw_corpus") / "documents.jsonl")]
    model_dir = scratch / "model"
    base_model.load_baseline(texts).save_pretrained(str(model_dir))
    return model_dir


def export_package(model_dir: Path, folder: Path, model_format: str, name: str, about: str):
    """Export a saved model by its type; returns the (document) package and the metadata of a query package."""
    model_type = detect_model_type(model_dir)
    if model_type == "dense":
        package = export_dense_model(model_dir, folder, model_format=model_format, name=name, version="1",
                                     description=f"dense retrieval model, {about}")
        return package, {"model_type": model_type}
    if model_type == "sparse":
        return export_sparse_model(model_dir, folder, name=name, version="1",
                                   description=f"SPLADE model, {about}"), {"model_type": model_type}
    pair = export_inference_free_model(model_dir, folder, name=name, version="1",
                                       description=f"inference-free sparse model, {about}")
    return pair.document, {"model_type": model_type, "query_zip": MetadataValue.path(str(pair.query.zip_path)),
                           "query_sha256": pair.query.sha256, "idf_tokens": pair.query.manifest["idf_tokens"]}
