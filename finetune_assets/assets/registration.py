"""model_package and registered_model_id: the tuned model, exported for OpenSearch and registered there."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from finetune_assets.config import ModelPackageConfig
from finetune_assets.core.export import export_dense_model
from finetune_assets.core.jsonl import read_json, read_jsonl, write_json
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.opensearch import OpenSearchResource
from finetune_assets.resources.storage import ArtifactStorage


@asset(partitions_def=index_partitions, group_name="finetune", deps=["trained_model"], kinds={"opensearch"})
def model_package(context: AssetExecutionContext, config: ModelPackageConfig,
                  storage: ArtifactStorage) -> MaterializeResult:
    """A zip OpenSearch ml-commons can register: traced model, tokenizer.json, model_config and SHA-256."""
    index = context.partition_key
    model_dir = storage.fetch(index, "trained_model") / "model"
    folder = storage.artifact_dir(index, "model_package")
    package = export_dense_model(model_dir, folder, model_format=config.model_format,
                                 name=f"finetune-assets/{index}", version="1",
                                 description=f"dense retrieval model fine-tuned on index '{index}' by finetune-assets")
    uri = storage.publish(index, "model_package")
    return MaterializeResult(metadata={
        "path": MetadataValue.path(uri),
        "zip": MetadataValue.path(str(package.zip_path)),
        "sha256": package.sha256,
        "size_mb": round(package.size_bytes / 2**20, 2),
        "model_format": config.model_format,
        "embedding_dimension": package.embedding_dimension,
        "export_cosine_vs_original": package.cosine,
    })


@asset(partitions_def=index_partitions, group_name="finetune", deps=["model_package", "evaluation_report"],
       kinds={"opensearch"})
def registered_model_id(context: AssetExecutionContext, storage: ArtifactStorage,
                        opensearch: OpenSearchResource) -> MaterializeResult:
    """The ml-commons model id to use in `neural` queries; runs only when the quality gate passed."""
    index = context.partition_key
    package_dir = storage.fetch(index, "model_package")
    report = read_json(storage.fetch(index, "evaluation_report") / "report.json")
    folder = storage.artifact_dir(index, "registered_model_id")
    if not opensearch.configured:
        message = (f"No OpenSearch cluster is configured, so nothing was registered. The package to register "
                   f"is in {package_dir} (set the opensearch resource's url to register it).")
        context.log.info(message)
        write_json(folder / "registration.json", {"model_id": None, "package": str(package_dir), "note": message})
        uri = storage.publish(index, "registered_model_id")
        return MaterializeResult(metadata={
            "model_id": MetadataValue.text("none (no cluster configured)"),
            "registered": False,
            "package": MetadataValue.path(str(package_dir)),
            "ndcg@10_tuned": report["results"]["tuned"]["ndcg@10"],
            "note": message,
            "path": MetadataValue.path(uri),
        })
    from finetune_assets.clients.ml_commons import register_local_package, verify_neural_search

    client = opensearch.client()
    result = register_local_package(client, package_dir, index=index)
    context.log.info(f"registered model {result.model_id} in group {result.model_group_id} "
                     f"({'reused' if result.reused else 'new version'})")
    # One `neural` query on a scratch index proves the id works for search, not just that it exists.
    held_out = next(read_jsonl(storage.fetch(index, "training_pairs") / "held_out.jsonl"))
    distractors = [d["text"] for d in read_jsonl(storage.fetch(index, "raw_corpus") / "documents.jsonl")
                   if d["id"] != held_out["doc_id"]][:4]
    top_hit = verify_neural_search(client, result.model_id, result.function_name,
                                   [held_out["positive"], *distractors], held_out["query"])
    write_json(folder / "registration.json", {"model_id": result.model_id, "model_group_id": result.model_group_id,
                                              "reused": result.reused, "package": str(package_dir),
                                              "verification_top_hit": top_hit})
    uri = storage.publish(index, "registered_model_id")
    return MaterializeResult(metadata={
        "model_id": MetadataValue.text(result.model_id),
        "registered": True,
        "model_group_id": result.model_group_id,
        "reused_existing_model": result.reused,
        "verification_query": held_out["query"],
        "verification_top_hit_is_source_document": top_hit == "doc-0",
        "ndcg@10_tuned": report["results"]["tuned"]["ndcg@10"],
        "path": MetadataValue.path(uri),
    })
