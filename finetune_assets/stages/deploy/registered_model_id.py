"""registered_model_id: the model registered and deployed in OpenSearch ml-commons; its id serves queries."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from finetune_assets.core.export.tokenizer_export import QUERY_PACKAGE_DIR
from finetune_assets.core.jsonl import read_json, read_jsonl, write_json
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.opensearch import OpenSearchResource
from finetune_assets.resources.sagemaker_endpoint import SageMakerEndpointResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.deploy.model_endpoint import deployed_endpoint
from finetune_assets.stages.deploy.model_package import PACKAGE_FILE
from finetune_assets.stages.evaluation.evaluation_report import quality_gate


@asset(partitions_def=index_partitions, group_name="deploy",
       deps=["model_package", "model_endpoint", "evaluation_report"], kinds={"opensearch"})
def registered_model_id(context: AssetExecutionContext, storage: ArtifactStorage, opensearch: OpenSearchResource,
                        sagemaker_endpoint: SageMakerEndpointResource) -> MaterializeResult:
    """The ml-commons model id to use in `neural` (dense) or `neural_sparse` queries. When the quality gate failed,
    the base model is registered from its package if model_package packaged it (its search beats BM25 on the
    held-out queries), else nothing is; either way the metadata says fallback. An inference-free sparse model also
    gets a query_model_id: its SPARSE_TOKENIZE query side.

    A model that model_endpoint deployed is registered as a remote model (connector to the endpoint); otherwise the
    exported package is uploaded to the cluster.
    """
    index = context.partition_key
    report = read_json(storage.fetch(index, "evaluation_report") / "report.json")
    passed, gate = quality_gate(report)
    fallback = not passed
    system = "base" if fallback and packaged_system(storage, index) == "base" else "tuned"
    endpoint = deployed_endpoint(storage, index)
    if endpoint and endpoint.get("system", "tuned") != system:
        endpoint = None  # an endpoint left from another run serves the other model
    package_dir = None if endpoint else storage.fetch(index, "model_package")
    folder = storage.artifact_dir(index, "registered_model_id", run_id=context.run.run_id)
    source = f"SageMaker endpoint {endpoint['endpoint_name']}" if endpoint else f"package {package_dir}"
    if fallback and system == "base":
        source = f"{source} (the base model)"
        context.log.warning(f"fallback to the base model: the tuned model failed the quality gate ({gate}), and the "
                            "base model's search beats BM25 on the held-out queries")
    elif fallback:
        message = f"fallback to BM25 search, nothing registered: {gate}"
        context.log.warning(message)
        write_json(folder / "registration.json", {"model_id": None, "system": None, "fallback": True,
                                                  "source": source, "note": message})
        uri = storage.publish(index, "registered_model_id", folder)
        return MaterializeResult(metadata={
            "model_id": MetadataValue.text("none (quality gate failed)"),
            "registered": False,
            "fallback": True,
            "ndcg@10_tuned": report["results"]["tuned"]["ndcg@10"],
            "ndcg@10_base": report["results"]["base"]["ndcg@10"],
            "note": message,
            "path": MetadataValue.path(uri),
        })
    if not opensearch.configured:
        message = (f"No OpenSearch cluster is configured, so nothing was registered. The model to register is the "
                   f"{source} (set the opensearch resource's url to register it).")
        context.log.info(message)
        write_json(folder / "registration.json", {"model_id": None, "system": system, "fallback": fallback,
                                                  "source": source, "note": message})
        uri = storage.publish(index, "registered_model_id", folder)
        return MaterializeResult(metadata={
            "model_id": MetadataValue.text("none (no cluster configured)"),
            "registered": False,
            "system": system,
            "fallback": fallback,
            "source": source,
            "ndcg@10_tuned": report["results"]["tuned"]["ndcg@10"],
            "note": message,
            "path": MetadataValue.path(uri),
        })
    from finetune_assets.clients.ml_commons.upload import register_inference_free_package, register_local_package
    from finetune_assets.clients.ml_commons.verify import verify_neural_search

    client = opensearch.client()
    query_model = None  # the SPARSE_TOKENIZE model of an inference-free package
    if endpoint:
        result = register_sagemaker_endpoint(client, endpoint, sagemaker_endpoint.connector_role_arn, index)
    elif (package_dir / QUERY_PACKAGE_DIR).is_dir():
        result, query_model = register_inference_free_package(client, package_dir, index=index)
    else:
        result = register_local_package(client, package_dir, index=index)
    context.log.info(f"registered model {result.model_id} in group {result.model_group_id} "
                     f"({'reused' if result.reused else 'new version'})")
    # One `neural` query on a scratch index proves the id works for search, not just that it exists.
    held_out = next(read_jsonl(storage.fetch(index, "training_pairs") / "held_out.jsonl"))
    distractors = [d["text"] for d in read_jsonl(storage.fetch(index, "raw_corpus") / "documents.jsonl")
                   if d["id"] != held_out["doc_id"]][:4]
    top_hit = verify_neural_search(client, result.model_id, result.function_name,
                                   [held_out["positive"], *distractors], held_out["query"],
                                   query_model_id=query_model.model_id if query_model else None)
    query_ids = {"query_model_id": query_model.model_id} if query_model else {}
    write_json(folder / "registration.json", {"model_id": result.model_id, **query_ids,
                                              "model_group_id": result.model_group_id,
                                              "connector_id": result.connector_id, "reused": result.reused,
                                              "source": source, "verification_top_hit": top_hit,
                                              "system": system, "fallback": fallback,
                                              **({"note": f"the tuned model failed the quality gate: {gate}"}
                                                 if fallback else {})})
    uri = storage.publish(index, "registered_model_id", folder)
    return MaterializeResult(metadata={
        "model_id": MetadataValue.text(result.model_id),
        **{key: MetadataValue.text(value) for key, value in query_ids.items()},
        "registered": True,
        "system": system,
        "fallback": fallback,
        "model_group_id": result.model_group_id,
        "reused_existing_model": result.reused,
        "source": source,
        "verification_query": held_out["query"],
        "verification_top_hit_is_source_document": top_hit == "doc-0",
        "ndcg@10_tuned": report["results"]["tuned"]["ndcg@10"],
        "path": MetadataValue.path(uri),
    })


def packaged_system(storage: ArtifactStorage, index: str) -> str:
    """Which model model_package exported: tuned, or base as a fallback (a package without its record is tuned)."""
    try:
        return read_json(storage.fetch(index, "model_package") / PACKAGE_FILE).get("system", "tuned")
    except FileNotFoundError:
        return "tuned"


def register_sagemaker_endpoint(client, endpoint: dict, connector_role_arn: str, index: str):
    """Register what model_endpoint deployed as an ml-commons remote model (a connector to the endpoint)."""
    from finetune_assets.clients.ml_commons.api import DENSE, SPARSE
    from finetune_assets.clients.ml_commons.connectors import SageMakerEndpoint
    from finetune_assets.clients.ml_commons.remote import register_sagemaker_model

    if not connector_role_arn:
        raise ValueError(f"SageMaker endpoint {endpoint['endpoint_name']} is deployed, but no IAM role for the "
                         "OpenSearch connector is set: set FINETUNE_OPENSEARCH_CONNECTOR_ROLE_ARN (a role the "
                         "cluster may assume, allowed sagemaker:InvokeEndpoint on the endpoint)")
    remote = SageMakerEndpoint(endpoint["endpoint_name"], endpoint["region"], role_arn=connector_role_arn,
                               function_name=SPARSE if endpoint["kind"] == "sparse" else DENSE)
    return register_sagemaker_model(client, remote, index=index)
