"""model_package: the tuned model exported as a zip OpenSearch ml-commons can register."""

from typing import Literal

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from finetune_assets.core.export.dense import export_dense_model
from finetune_assets.core.export.sparse import export_sparse_model
from finetune_assets.core.export.tokenizer_export import export_inference_free_model
from finetune_assets.core.model_types import detect_model_type
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.run_config import check_run_config


class ModelPackageConfig(Config):
    model_format: Literal["TORCH_SCRIPT", "ONNX"] = Field(default="TORCH_SCRIPT", description="Format of a dense "
                                                          "model in the package (sparse models are always traced).")


@asset(partitions_def=index_partitions, group_name="deploy", deps=["trained_model"], kinds={"opensearch"})
def model_package(context: AssetExecutionContext, config: ModelPackageConfig,
                  storage: ArtifactStorage) -> MaterializeResult:
    """A zip OpenSearch ml-commons can register: traced model, tokenizer.json, model_config and SHA-256.

    By model type: dense -> TEXT_EMBEDDING; sparse -> SPARSE_ENCODING; inference_free -> document/ (SPARSE_ENCODING)
    plus query/ (SPARSE_TOKENIZE: tokenizer.json + idf.json).
    """
    check_run_config(context)
    index = context.partition_key
    model_dir = storage.fetch(index, "trained_model") / "model"
    folder = storage.artifact_dir(index, "model_package", run_id=context.run.run_id)
    model_type = detect_model_type(model_dir)
    name, about = f"finetune-assets/{index}", f"fine-tuned on index '{index}' by finetune-assets"
    extra = {}
    if model_type == "dense":
        package = export_dense_model(model_dir, folder, model_format=config.model_format, name=name, version="1",
                                     description=f"dense retrieval model {about}")
    elif model_type == "sparse":
        package = export_sparse_model(model_dir, folder, name=name, version="1", description=f"SPLADE model {about}")
    else:
        pair = export_inference_free_model(model_dir, folder, name=name, version="1",
                                           description=f"inference-free sparse model {about}")
        package = pair.document
        extra = {"query_zip": MetadataValue.path(str(pair.query.zip_path)), "query_sha256": pair.query.sha256,
                 "idf_tokens": pair.query.manifest["idf_tokens"]}
    uri = storage.publish(index, "model_package", folder)
    return MaterializeResult(metadata={
        "path": MetadataValue.path(uri),
        "model_type": model_type,
        "function_name": package.function_name,
        "zip": MetadataValue.path(str(package.zip_path)),
        "sha256": package.sha256,
        "size_mb": round(package.size_bytes / 2**20, 2),
        "model_format": package.model_format,
        "embedding_dimension": package.embedding_dimension,
        "export_cosine_vs_original": package.cosine,
        **extra,
    })
