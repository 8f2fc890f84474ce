"""The code location: assets, checks, jobs and resources. No logic of its own."""

import os
import warnings
from pathlib import Path

from dagster import (
    AnchorBasedFilePathMapping,
    BetaWarning,
    Definitions,
    EnvVar,
    PipesSubprocessClient,
    define_asset_job,
    link_code_references_to_git,
    with_source_code_references,
)

from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.opensearch import OpenSearchResource
from finetune_assets.resources.query_generator import DEFAULT_BEDROCK_MODEL_ID, QueryGeneratorResource
from finetune_assets.resources.sagemaker_endpoint import SageMakerEndpointResource
from finetune_assets.resources.sagemaker_pipes import SageMakerTrainingResource
from finetune_assets.resources.storage import default_storage
from finetune_assets.stages import corpus, deploy, evaluation, queries, training

STAGES = (corpus, queries, training, evaluation, deploy)  # in pipeline order
all_assets = [asset for stage in STAGES for asset in stage.assets]
all_asset_checks = [check for stage in STAGES for check in stage.asset_checks]
all_sensors = [sensor for stage in STAGES for sensor in stage.sensors]


def _code_references(assets: list) -> list:
    """Each asset links to its source line in the UI; to the git host's file too when FINETUNE_GIT_URL is set."""
    with warnings.catch_warnings():  # the code-reference API is marked beta in this Dagster release
        warnings.simplefilter("ignore", BetaWarning)
        assets = with_source_code_references(assets)
    git_url = os.environ.get("FINETUNE_GIT_URL", "")
    if not git_url:
        return assets
    return link_code_references_to_git(
        assets, git_url=git_url, git_branch=os.environ.get("FINETUNE_GIT_BRANCH", "main"),
        file_path_mapping=AnchorBasedFilePathMapping(local_file_anchor=Path(__file__).parent.parent,
                                                     file_anchor_path_in_repository=""),
    )


finetune_job = define_asset_job(
    "finetune", selection=all_assets,
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
    assets=_code_references(all_assets),
    asset_checks=all_asset_checks,
    jobs=[finetune_job],
    sensors=all_sensors,
    resources={
        "storage": default_storage(),
        "base_model": BaseModelResource(model_type=os.environ.get("FINETUNE_MODEL_TYPE", "dense"),
                                        base_model=os.environ.get("FINETUNE_BASE_MODEL", "")),
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
            url=_secret("OPENSEARCH_URL"),  # may hold user:password@, which would otherwise be in the job snapshot
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
