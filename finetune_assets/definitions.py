"""The code location: assets, checks, jobs and resources. No logic of its own."""

import os

from dagster import AssetSelection, Definitions, EnvVar, PipesSubprocessClient, define_asset_job

from finetune_assets import checks
from finetune_assets.assets.corpus import raw_corpus
from finetune_assets.assets.cost import cost_estimate
from finetune_assets.assets.endpoint import model_endpoint
from finetune_assets.assets.evaluation import evaluation_report
from finetune_assets.assets.negatives import mined_negatives
from finetune_assets.assets.pairs import training_pairs
from finetune_assets.assets.queries import bedrock_batch_outputs
from finetune_assets.assets.registration import model_package, registered_model_id
from finetune_assets.assets.training import trained_model
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.opensearch import OpenSearchResource
from finetune_assets.resources.query_generator import DEFAULT_BEDROCK_MODEL_ID, QueryGeneratorResource
from finetune_assets.resources.sagemaker_endpoint import SageMakerEndpointResource
from finetune_assets.resources.sagemaker_pipes import SageMakerTrainingResource
from finetune_assets.sensors import opensearch_index_sensor, s3_corpus_sensor
from finetune_assets.resources.storage import ArtifactStorage, default_storage

all_assets = [raw_corpus, cost_estimate, bedrock_batch_outputs, training_pairs, mined_negatives, trained_model,
              evaluation_report, model_package, model_endpoint, registered_model_id]

finetune_job = define_asset_job(
    "finetune", selection=AssetSelection.assets(*all_assets),
    description="Corpus to registered model for one index: the whole graph.",
)


# FINETUNE_MODE=aws switches every backend's default to AWS at once (Bedrock queries, SageMaker training,
# a serverless endpoint); each can still be set on its own. Storage must then be s3:// (FINETUNE_STORAGE_ROOT).
MODE = os.environ.get("FINETUNE_MODE", "local").strip().lower()
if MODE not in ("local", "aws"):
    raise ValueError(f"FINETUNE_MODE must be 'local' or 'aws', not {MODE!r}")
ON_AWS = MODE == "aws"


def _secret(name: str) -> str | EnvVar:
    # EnvVar keeps secrets out of the UI and run config; only used when the variable is set.
    return EnvVar(name) if os.environ.get(name) else ""


defs = Definitions(
    assets=all_assets,
    asset_checks=[checks.tuned_not_worse_than_base, checks.few_records_quarantined, checks.held_out_documents_unseen],
    jobs=[finetune_job],
    sensors=[s3_corpus_sensor, opensearch_index_sensor],
    resources={
        "storage": default_storage(),
        "base_model": BaseModelResource(model_type=os.environ.get("FINETUNE_MODEL_TYPE", "dense")),
        "query_generator": QueryGeneratorResource(
            backend=os.environ.get("FINETUNE_QUERY_GENERATOR", "bedrock" if ON_AWS else "smollm2"),
            base_url=os.environ.get("FINETUNE_OPENAI_BASE_URL", ""),
            model=os.environ.get("FINETUNE_OPENAI_MODEL", ""),
            api_key=_secret("FINETUNE_OPENAI_API_KEY"),
            model_id=os.environ.get("FINETUNE_BEDROCK_MODEL_ID") or DEFAULT_BEDROCK_MODEL_ID,
            region_name=os.environ.get("AWS_REGION", ""),
            role_arn=os.environ.get("FINETUNE_BEDROCK_ROLE_ARN", ""),
        ),
        "opensearch": OpenSearchResource(
            url=os.environ.get("OPENSEARCH_URL", ""),
            username=os.environ.get("OPENSEARCH_USERNAME", ""),
            password=_secret("OPENSEARCH_PASSWORD"),
        ),
        "pipes_subprocess_client": PipesSubprocessClient(),
        "sagemaker_training": SageMakerTrainingResource(
            default_backend="sagemaker" if ON_AWS else "local",
            region_name=os.environ.get("AWS_REGION", ""),
            bucket=os.environ.get("FINETUNE_SAGEMAKER_BUCKET", ""),
            role_arn=os.environ.get("FINETUNE_SAGEMAKER_ROLE_ARN", ""),
        ),
        "sagemaker_endpoint": SageMakerEndpointResource(
            default_deployment="serverless" if ON_AWS else "none",
            region_name=os.environ.get("AWS_REGION", ""),
            bucket=os.environ.get("FINETUNE_SAGEMAKER_BUCKET", ""),
            role_arn=os.environ.get("FINETUNE_SAGEMAKER_ROLE_ARN", ""),
            connector_role_arn=os.environ.get("FINETUNE_OPENSEARCH_CONNECTOR_ROLE_ARN", ""),
        ),
    },
)
