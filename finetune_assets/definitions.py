"""The code location: assets, checks, jobs and resources. No logic of its own."""

import os

from dagster import AssetSelection, Definitions, EnvVar, PipesSubprocessClient, define_asset_job

from finetune_assets import checks
from finetune_assets.assets.corpus import raw_corpus
from finetune_assets.assets.evaluation import evaluation_report
from finetune_assets.assets.negatives import mined_negatives
from finetune_assets.assets.pairs import training_pairs
from finetune_assets.assets.queries import bedrock_batch_outputs
from finetune_assets.assets.registration import model_package, registered_model_id
from finetune_assets.assets.training import trained_model
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.opensearch import OpenSearchResource
from finetune_assets.resources.query_generator import QueryGeneratorResource
from finetune_assets.resources.sagemaker_pipes import SageMakerTrainingResource
from finetune_assets.sensors import s3_corpus_sensor
from finetune_assets.resources.storage import ArtifactStorage, default_storage

all_assets = [raw_corpus, bedrock_batch_outputs, training_pairs, mined_negatives, trained_model,
              evaluation_report, model_package, registered_model_id]

finetune_job = define_asset_job(
    "finetune", selection=AssetSelection.assets(*all_assets),
    description="Corpus to registered model for one index: the whole graph.",
)


def _secret(name: str) -> str | EnvVar:
    # EnvVar keeps secrets out of the UI and run config; only used when the variable is set.
    return EnvVar(name) if os.environ.get(name) else ""


defs = Definitions(
    assets=all_assets,
    asset_checks=[checks.tuned_not_worse_than_base, checks.few_records_quarantined, checks.held_out_documents_unseen],
    jobs=[finetune_job],
    sensors=[s3_corpus_sensor],
    resources={
        "storage": default_storage(),
        "base_model": BaseModelResource(),
        "query_generator": QueryGeneratorResource(
            backend=os.environ.get("FINETUNE_QUERY_GENERATOR", "smollm2"),
            base_url=os.environ.get("FINETUNE_OPENAI_BASE_URL", ""),
            model=os.environ.get("FINETUNE_OPENAI_MODEL", ""),
            api_key=_secret("FINETUNE_OPENAI_API_KEY"),
        ),
        "opensearch": OpenSearchResource(
            url=os.environ.get("OPENSEARCH_URL", ""),
            username=os.environ.get("OPENSEARCH_USERNAME", ""),
            password=_secret("OPENSEARCH_PASSWORD"),
        ),
        "pipes_subprocess_client": PipesSubprocessClient(),
        "sagemaker_training": SageMakerTrainingResource(
            region_name=os.environ.get("AWS_REGION", ""),
            bucket=os.environ.get("FINETUNE_SAGEMAKER_BUCKET", ""),
            role_arn=os.environ.get("FINETUNE_SAGEMAKER_ROLE_ARN", ""),
        ),
    },
)
