"""Every asset's Config in a run, built from the run config and checked together.

Dagster checks a run config's types and choices (Literal fields) before the run starts, but a field's range and a
Config's validators only when the step that takes the Config begins. Each asset therefore checks the whole run's
config first (`check_run_config`), so a bad value for any asset fails the run's first step, before any work.
"""

from collections.abc import Mapping
from typing import Any

from dagster import AssetExecutionContext, Config
from pydantic import ValidationError


def config_classes() -> dict[str, type[Config]]:
    """Each asset's Config class by op name (imported here, since the asset modules import this one)."""
    from finetune_assets.stages.corpus.cost_estimate import CostEstimateConfig
    from finetune_assets.stages.corpus.raw_corpus import RawCorpusConfig
    from finetune_assets.stages.deploy.model_endpoint import ModelEndpointConfig
    from finetune_assets.stages.deploy.model_package import ModelPackageConfig
    from finetune_assets.stages.deploy.search_pipeline import SearchPipelineConfig
    from finetune_assets.stages.evaluation.evaluation_report import EvaluationReportConfig
    from finetune_assets.stages.queries.bedrock_batch_outputs import QueryGenerationConfig
    from finetune_assets.stages.training.mined_negatives import MinedNegativesConfig
    from finetune_assets.stages.training.trained_model import TrainedModelConfig
    from finetune_assets.stages.training.training_pairs import TrainingPairsConfig

    return {"raw_corpus": RawCorpusConfig, "cost_estimate": CostEstimateConfig,
            "bedrock_batch_outputs": QueryGenerationConfig, "training_pairs": TrainingPairsConfig,
            "mined_negatives": MinedNegativesConfig, "trained_model": TrainedModelConfig,
            "evaluation_report": EvaluationReportConfig, "model_package": ModelPackageConfig,
            "model_endpoint": ModelEndpointConfig, "search_pipeline": SearchPipelineConfig}


def op_config(run_config: Mapping[str, Any] | None, op: str) -> Config:
    """`op`'s Config as this run config sets it (its defaults where it sets nothing); a bad value is an error that
    names the asset, the field, the value and the valid range."""
    values = ((run_config or {}).get("ops") or {}).get(op, {}).get("config") or {}
    try:
        return config_classes()[op](**values)
    except ValidationError as exc:
        raise ValueError(invalid_config_message(op, exc)) from None


def invalid_config_message(op: str, error: ValidationError) -> str:
    problems = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        problems.append(f"{field}={problem['input']!r}: {message}" if field else message)
    return f"invalid config for {op}: " + "; ".join(problems)


def check_run_config(context: AssetExecutionContext) -> None:
    """Build every Config this run sets, so a bad value for any asset stops the run before any work."""
    run_config = context.run.run_config
    for op in (run_config.get("ops") or {}):
        if op in config_classes():
            op_config(run_config, op)
