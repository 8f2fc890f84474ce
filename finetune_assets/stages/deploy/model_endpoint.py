"""model_endpoint: the tuned model served from a SageMaker endpoint (real-time or serverless), or nothing; the base
model after a failed quality gate when its search beats BM25 on the held-out queries."""

import tempfile
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from finetune_assets.clients.sagemaker_endpoint import (
    MAX_SERVERLESS_CONCURRENCY,
    MODES,
    SERVERLESS_MEMORY_MB,
    EndpointSpec,
)
from finetune_assets.core.cost import cost
from finetune_assets.core.jsonl import read_json, write_json
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.sagemaker_endpoint import SageMakerEndpointResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.deploy.model_package import base_stands_in, save_baseline
from finetune_assets.stages.evaluation.evaluation_report import quality_gate
from finetune_assets.stages.run_config import check_run_config

ENDPOINT_FILE = "endpoint.json"
NOT_DEPLOYED = ("deployment is 'none' (the default outside FINETUNE_MODE=aws), so nothing was deployed and "
                "registration uses the local package. Set deployment to 'realtime' or 'serverless' (plus "
                "FINETUNE_SAGEMAKER_ROLE_ARN) to serve the model from a SageMaker endpoint.")


class ModelEndpointConfig(Config):
    deployment: Literal["auto", "none", "realtime", "serverless"] = Field(default="auto", description="none "
                                                                          "(deploy nothing), realtime (instances), "
                                                                          "serverless, or auto = serverless when "
                                                                          "FINETUNE_MODE=aws, else none.")
    instance_type: str = Field(default=cost.DEFAULT_ENDPOINT_INSTANCE, description="Real-time instance type "
                               "(ml.g* and ml.p* get the GPU image).")
    instance_count: int = Field(default=1, ge=1, description="Real-time instances.")
    memory_mb: int = Field(default=cost.DEFAULT_SERVERLESS_MEMORY_MB, ge=min(SERVERLESS_MEMORY_MB),
                           le=max(SERVERLESS_MEMORY_MB), multiple_of=1024, description="Serverless memory in MB, "
                           "1024 to 6144 in steps of 1024.")
    max_concurrency: int = Field(default=5, ge=1, le=MAX_SERVERLESS_CONCURRENCY, description="Serverless "
                                 "concurrent invocations.")
    image_uri: str = Field(default="", description="Serving image ('' = the AWS PyTorch inference DLC of the "
                           "region).")


def deployed_endpoint(storage: ArtifactStorage, index: str) -> dict | None:
    """What model_endpoint deployed for this partition, or None (nothing deployed, or never materialized)."""
    try:
        record = read_json(storage.fetch(index, "model_endpoint") / ENDPOINT_FILE)
    except FileNotFoundError:
        return None
    if not isinstance(record, dict):
        raise ValueError(f"{storage.uri(index, 'model_endpoint', ENDPOINT_FILE)} must hold a JSON object")
    return record if record.get("deployed") else None


@asset(partitions_def=index_partitions, group_name="deploy", deps=["trained_model", "evaluation_report", "raw_corpus"],
       kinds={"sagemaker"})
def model_endpoint(context: AssetExecutionContext, config: ModelEndpointConfig, storage: ArtifactStorage,
                   sagemaker_endpoint: SageMakerEndpointResource, base_model: BaseModelResource) -> MaterializeResult:
    """A SageMaker endpoint answering ml-commons' embedding requests. When the quality gate failed it serves the base
    model if its search beats BM25 on the held-out queries (as model_package packages it), else nothing."""
    check_run_config(context)
    index = context.partition_key
    report = read_json(storage.fetch(index, "evaluation_report") / "report.json")
    folder = storage.artifact_dir(index, "model_endpoint", run_id=context.run.run_id)
    deployment = sagemaker_endpoint.default_deployment if config.deployment == "auto" else config.deployment
    passed, gate = quality_gate(report)
    base = base_stands_in(report)
    if not passed and not base and deployment != "none":
        note = f"quality gate: {gate}; no endpoint was deployed"
        context.log.warning(note)
        write_json(folder / ENDPOINT_FILE, {"deployed": False, "mode": "none", "fallback": True, "note": note})
        uri = storage.publish(index, "model_endpoint", folder)
        return MaterializeResult(metadata={"deployed": False, "mode": "none", "fallback": True, "note": note,
                                           "path": MetadataValue.path(uri)})
    if deployment == "none":
        context.log.info(NOT_DEPLOYED)
        write_json(folder / ENDPOINT_FILE, {"deployed": False, "mode": "none", "note": NOT_DEPLOYED})
        uri = storage.publish(index, "model_endpoint", folder)
        return MaterializeResult(metadata={"deployed": False, "mode": "none", "note": NOT_DEPLOYED,
                                           "path": MetadataValue.path(uri)})
    if deployment not in MODES:
        raise ValueError(f"deployment must be 'none', 'realtime', 'serverless' or 'auto', not {deployment!r}")

    spec = EndpointSpec(role_arn=sagemaker_endpoint.role_arn, mode=deployment,
                        instance_type=config.instance_type, instance_count=config.instance_count,
                        memory_mb=config.memory_mb, max_concurrency=config.max_concurrency,
                        image_uri=config.image_uri)
    spec.validate()  # before any download or upload
    storage_bucket = urlparse(storage.root).netloc if storage.is_s3 else ""
    with tempfile.TemporaryDirectory(prefix="finetune-base-") as scratch:
        if base:
            context.log.warning(f"fallback to the base model: {gate}; the base model's search beats BM25 on the "
                                "held-out queries, so the endpoint serves the base model")
            model_dir = save_baseline(base_model, storage, index, Path(scratch))
        else:
            model_dir = storage.fetch(index, "trained_model") / "model"
        deployment, shape = sagemaker_endpoint.deploy(model_dir, spec, index=index, storage_bucket=storage_bucket,
                                                      on_status=context.log.info)
    record = deployment.to_dict()
    system = "base" if base else "tuned"
    context.log.info(f"endpoint {record['endpoint_name']} {deployment.action}; smoke test answered {shape}")
    write_json(folder / ENDPOINT_FILE, {"deployed": True, **record, "smoke_test": shape, "system": system,
                                        "fallback": base})
    return MaterializeResult(metadata={
        "deployed": True,
        "system": system,
        "fallback": base,
        **{key: record[key] for key in ("endpoint_name", "endpoint_arn", "mode", "action", "kind", "model_name",
                                        "endpoint_config_name")},
        "console_url": MetadataValue.url(deployment.console_url),
        "smoke_test": shape,
        "model_data": MetadataValue.path(record["model_data_uri"]),
        "ndcg@10_tuned": report["results"]["tuned"]["ndcg@10"],
        "path": MetadataValue.path(storage.publish(index, "model_endpoint", folder)),
    })
