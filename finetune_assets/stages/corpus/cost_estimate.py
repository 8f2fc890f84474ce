"""cost_estimate: what the AWS path would cost for this partition's corpus, computed before anything is spent."""

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field, field_validator

from finetune_assets.clients.bedrock.planning import estimate_batch_plan
from finetune_assets.core.cost import cost, smart_defaults
from finetune_assets.core.cost.cost import CostEstimate, TrainSettings, estimate_cost, generated_training_rows
from finetune_assets.core.cost.memory import (
    STEP_QUERIES,
    STEP_TOKENS,
    MemoryEstimate,
    estimate_memory,
    free_memory_mib,
    training_step_warning,
)
from finetune_assets.core.jsonl import read_jsonl, write_json
from finetune_assets.core.querygen.prompts import document_text
from finetune_assets.core.training.batch_distillation import MODEL_TYPES as BATCH_KL_MODEL_TYPES
from finetune_assets.core.training.dense_training import Hyperparameters
from finetune_assets.core.training.training_length import TrainingLength
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.query_generator import QueryGeneratorResource
from finetune_assets.resources.sagemaker_pipes import SageMakerTrainingResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.queries.bedrock_batch_outputs import QueryGenerationConfig
from finetune_assets.stages.run_config import check_run_config, op_config
from finetune_assets.stages.training.mined_negatives import MinedNegativesConfig
from finetune_assets.stages.training.trained_model import (
    TrainedModelConfig,
    planned_length,
    smart_settings,
    training_backend,
    training_hyperparameters,
)
from finetune_assets.stages.training.training_pairs import TrainingPairsConfig

COST_GROUPS = ("bedrock", "training")
PLAN_FIELDS = ("mode", "num_documents", "num_jobs", "records_per_job", "concurrent_job_quota_exceeded")
# mined_negatives teachers that write the matrix loss auto trains batch_kl from.
MATRIX_TEACHERS = ("auto", "hybrid")


class CostEstimateConfig(Config):
    """What the AWS path would cost, checked before any spend; the run's other asset configs say what it does."""

    max_cost_usd: Optional[float] = Field(default=None, gt=0, description="Fail before any spend when the enforced "
                                          "estimate exceeds this many USD (null = no limit).")
    enforce_for: list[str] = Field(default=["auto"], description="Cost groups checked against max_cost_usd: "
                                   "bedrock, training, or auto = bedrock when the query generator's backend is "
                                   "bedrock, plus training when this run's trained_model trains on SageMaker.")
    bedrock_model_id: str = Field(default="", description="Bedrock model to price ('' = the query generator's "
                                  "model_id).")
    batch: bool = Field(default=True, description="Price Bedrock batch inference where the batch plan submits "
                        "batch jobs (on-demand below the batch minimum).")
    training_instance_type: str = Field(default=cost.DEFAULT_TRAINING_INSTANCE, description="SageMaker training "
                                        "instance to price.")
    training_instance_count: int = Field(default=1, ge=1, description="SageMaker training instances.")
    endpoint_instance_type: str = Field(default=cost.DEFAULT_ENDPOINT_INSTANCE, description="Real-time endpoint "
                                        "instance to price.")
    serverless_memory_mb: int = Field(default=cost.DEFAULT_SERVERLESS_MEMORY_MB, ge=1024, le=6144,
                                      multiple_of=1024, description="Serverless endpoint memory in MB, 1024 to "
                                      "6144 in steps of 1024.")
    requests_per_month: int = Field(default=cost.DEFAULT_REQUESTS_PER_MONTH, ge=0, description="Expected "
                                    "endpoint requests per month.")

    @field_validator("enforce_for")
    @classmethod
    def _known_groups(cls, groups: list[str]) -> list[str]:
        unknown = [name for name in groups if name not in ("auto", *COST_GROUPS)]
        if unknown:
            raise ValueError(f"unknown cost group {unknown[0]!r}; use 'auto', "
                             f"{', '.join(repr(g) for g in COST_GROUPS)}")
        return groups


class RunConfigs(NamedTuple):
    """The configs of the assets whose work the estimate prices, as the run sets them."""

    query_generation: QueryGenerationConfig
    training_pairs: TrainingPairsConfig
    mined_negatives: MinedNegativesConfig
    trained_model: TrainedModelConfig


def run_configs(run_config: Mapping[str, Any] | None = None) -> RunConfigs:
    """Each priced asset's Config from a run config (its defaults where the run sets none, e.g. for the CLI)."""
    return RunConfigs(op_config(run_config, "bedrock_batch_outputs"), op_config(run_config, "training_pairs"),
                      op_config(run_config, "mined_negatives"), op_config(run_config, "trained_model"))


def estimate_with_batch_plan(documents: list[dict], *, num_documents: int | None = None, queries_per_type: int,
                             max_document_chars: int, batch: bool = True, **options) -> tuple[CostEstimate, dict]:
    """The estimate plus the Bedrock batch plan (jobs, records per job). Batch prices apply only when the planner
    would submit batch jobs: below the batch minimum the client calls on-demand Converse."""
    total = len(documents) if num_documents is None else num_documents
    average_chars = sum(len(document_text(d, None)) for d in documents) / max(len(documents), 1)
    plan = estimate_batch_plan(total, average_chars, max_document_chars=max_document_chars)
    estimate = estimate_cost(documents, num_documents=total, queries_per_type=queries_per_type,
                             max_document_chars=max_document_chars, batch=batch and plan["mode"] == "batch",
                             **options)
    return estimate, {key: plan[key] for key in PLAN_FIELDS}


def usd(amount: float) -> str:
    """Cents, or two significant digits below a cent (a 0.0001 limit must not print as 0.00)."""
    return f"{amount:,.2f}" if amount == 0 or abs(amount) >= 0.01 else f"{amount:.2g}"


def planned_training(configs: RunConfigs, base_model: BaseModelResource, num_documents: int) -> tuple[int, Hyperparameters]:
    """The queries per type bedrock_batch_outputs asks for and the Hyperparameters trained_model will train with,
    filled from the smart defaults as those assets fill them; loss auto is batch_kl when mined_negatives' teacher
    writes the matrix and the model type trains with it."""
    model_type = base_model.model_type
    upstream = smart_defaults.resolve({"queries_per_type": configs.query_generation.queries_per_type,
                                       "num_negatives": configs.mined_negatives.num_negatives},
                                      model_type, num_documents)[0]
    loss = configs.trained_model.loss
    if loss == "auto":
        matrix = configs.mined_negatives.teacher.strip().lower() in MATRIX_TEACHERS
        loss = "batch_kl" if matrix and model_type in BATCH_KL_MODEL_TYPES else "mnrl"
    unset = smart_settings(configs.trained_model, loss)
    chosen = (smart_defaults.resolve_batch_kl(unset, model_type) if loss == "batch_kl"
              else smart_defaults.resolve(unset, model_type, num_documents))[0]
    num_negatives = configs.trained_model.num_negatives
    hp = training_hyperparameters(configs.trained_model, chosen, loss=loss, base_model=base_model,
                                  num_negatives=upstream["num_negatives"] if num_negatives is None else num_negatives)
    return upstream["queries_per_type"], hp


def train_settings(hp: Hyperparameters, pairs: TrainingPairsConfig, sampled_documents: int) -> TrainSettings:
    """What trained_model will run, for pricing; `sampled_documents` (raw_corpus's sample) give the span queries."""
    span_rows = sampled_documents * (1 - pairs.held_out_fraction) * pairs.span_queries
    return TrainSettings(epochs=hp.epochs, batch_size=hp.batch_size, num_negatives=hp.num_negatives,
                         held_out_fraction=pairs.held_out_fraction, max_seq_length=hp.training_sequence_length,
                         loss=hp.loss, max_steps=hp.max_steps, candidates_per_query=hp.candidates_per_query,
                         soup_size=hp.soup_size, student_candidates_per_query=hp.student_candidates_per_query,
                         span_rows=span_rows if hp.loss == "batch_kl" else 0.0, base_model=hp.base_model)


class RunEstimate(NamedTuple):
    estimate: CostEstimate
    bedrock_plan: dict
    training: TrainingLength
    hyperparameters: Hyperparameters  # what trained_model will train with


def estimate_run(documents: list[dict], configs: RunConfigs, config: CostEstimateConfig,
                 base_model: BaseModelResource, sagemaker_training: SageMakerTrainingResource, *,
                 bedrock_model_id: str) -> RunEstimate:
    """The estimate, Bedrock batch plan and training length of the run `configs` describe, on raw_corpus's sample
    `documents`; the training rows are those the sample would give (generated queries plus span queries)."""
    queries_per_type, hp = planned_training(configs, base_model, len(documents))
    train = train_settings(hp, configs.training_pairs, sampled_documents=len(documents))
    generated = documents[:configs.query_generation.max_documents or None]  # as bedrock_batch_outputs generates
    rows = generated_training_rows(len(generated), queries_per_type, train.held_out_fraction) + train.span_rows
    length = planned_length(configs.trained_model, hp, max(1, round(rows)),
                            training_backend(configs.trained_model, sagemaker_training), sagemaker_training)
    train = dataclasses.replace(train, max_steps=length.steps)
    estimate, plan = estimate_with_batch_plan(
        generated, queries_per_type=queries_per_type, max_document_chars=configs.query_generation.max_document_chars,
        batch=config.batch, bedrock_model_id=bedrock_model_id, train=train,
        training_instance_type=config.training_instance_type, training_instance_count=config.training_instance_count,
        training_rows_per_second=configs.trained_model.training_rows_per_second,
        endpoint_instance_type=config.endpoint_instance_type, serverless_memory_mb=config.serverless_memory_mb,
        requests_per_month=config.requests_per_month)
    return RunEstimate(estimate, plan, length, hp)


def training_memory_warning(hp: Hyperparameters, available_mib: float) -> str | None:
    """The measured training step's warning (training_step_warning) when `hp` trains the dense batch_kl step shape
    with a base model whose step was measured; None otherwise or when it fits."""
    shape = (hp.batch_size, hp.training_sequence_length)
    if (hp.loss != "batch_kl" or hp.model_type != "dense" or shape != (STEP_QUERIES, STEP_TOKENS)
            or hp.student_candidates_per_query):
        return None
    return training_step_warning(hp.base_model, hp.candidates_per_query, hp.gradient_checkpointing,
                                 hp.attention_dropout == 0, available_mib)


def memory_note(memory: MemoryEstimate) -> str:
    return (f"memory: about {memory.peak_mib / 1024:.1f} GiB at the peak ({memory.stage}) for "
            f"{memory.documents:,} sampled documents; {memory.available_mib / 1024:.1f} GiB free")


def plan_summary(plan: dict) -> str:
    text = f"Bedrock {plan['mode']}: {plan['num_documents']:,} records in {plan['num_jobs']} batch job(s)"
    if plan["records_per_job"]:
        text += f" of {', '.join(f'{n:,}' for n in plan['records_per_job'])} records"
    if plan["concurrent_job_quota_exceeded"]:
        text += " (more jobs than the concurrent-job quota: they queue)"
    return text


def enforced_groups(enforce_for: list[str], query_generator: QueryGeneratorResource,
                    backend: str = "local") -> list[str]:
    """The cost groups max_cost_usd applies to: those whose backend this run actually runs on AWS."""
    groups = set()
    for name in enforce_for:
        if name == "auto":
            if query_generator.backend.strip().lower() == "bedrock":
                groups.add("bedrock")
            if backend == "sagemaker":
                groups.add("training")
        elif name in COST_GROUPS:
            groups.add(name)
        else:
            raise ValueError(f"cost_estimate enforce_for: unknown cost group {name!r}; use 'auto', "
                             f"{', '.join(repr(g) for g in COST_GROUPS)}")
    return sorted(groups)


@asset(partitions_def=index_partitions, group_name="corpus", deps=["raw_corpus"], kinds={"python"})
def cost_estimate(context: AssetExecutionContext, config: CostEstimateConfig, storage: ArtifactStorage,
                  query_generator: QueryGeneratorResource, base_model: BaseModelResource,
                  sagemaker_training: SageMakerTrainingResource) -> MaterializeResult:
    """Bedrock tokens, SageMaker training hours and endpoint cost for this corpus at the price table's prices.
    Fails, before anything downstream spends, when the enforced part exceeds max_cost_usd."""
    check_run_config(context)
    index = context.partition_key
    configs = run_configs(context.run.run_config)
    backend = training_backend(configs.trained_model, sagemaker_training)
    groups = enforced_groups(config.enforce_for, query_generator, backend)
    documents = list(read_jsonl(storage.fetch(index, "raw_corpus") / "documents.jsonl"))
    memory = estimate_memory(len(documents), free_memory_mib())
    if refusal := memory.refusal():  # before any stage that holds the sample's vectors runs out of memory
        raise Failure(description=f"{refusal}. Nothing was run after raw_corpus.",
                      metadata={"peak_memory_gib": round(memory.peak_mib / 1024, 2),
                                "free_memory_gib": round(memory.available_mib / 1024, 2)})
    estimate, plan, length, hp = estimate_run(documents, configs, config, base_model, sagemaker_training,
                                              bedrock_model_id=config.bedrock_model_id or query_generator.model_id)
    enforced_usd = estimate.group_usd(*groups)
    limit = config.max_cost_usd
    exceeded = limit is not None and enforced_usd > limit
    if groups:
        title = "Cost estimate"
        enforcement = (f"max_cost_usd {usd(limit)} applies to {', '.join(groups)}: {usd(enforced_usd)} USD"
                       if limit is not None else f"no max_cost_usd set ({', '.join(groups)} run on AWS)")
    else:
        title = "What the AWS path would cost"
        enforcement = (f"this run spends nothing on AWS (query generator backend '{query_generator.backend}', "
                       f"training backend '{backend}'), so max_cost_usd is not enforced")
    training_memory = training_memory_warning(hp, memory.available_mib)
    if training_memory:
        context.log.warning(training_memory)
    markdown = estimate.to_markdown(title, [plan_summary(plan), enforcement, memory_note(memory),
                                            f"training: {length.describe()}", *filter(None, [training_memory])])

    folder = storage.artifact_dir(index, "cost_estimate", run_id=context.run.run_id)
    write_json(folder / "estimate.json", {**estimate.to_dict(), "bedrock_batch_plan": plan, "max_cost_usd": limit,
                                          "enforced_for": groups, "enforced_usd": enforced_usd,
                                          "exceeds_max_cost": exceeded})
    (folder / "estimate.md").write_text(markdown, encoding="utf-8")
    if exceeded:  # a failed step publishes nothing: the estimate stays in its unpublished version folder
        biggest = estimate.biggest_item(groups)
        raise Failure(
            description=f"estimated AWS spend {usd(enforced_usd)} USD ({' + '.join(groups)}) exceeds max_cost_usd "
                        f"{usd(limit)} USD; biggest line item: {biggest.name}, {usd(biggest.usd)} USD. Nothing was "
                        f"spent. Raise max_cost_usd, price a cheaper model or instance, or sample fewer documents "
                        f"(raw_corpus max_documents). Estimate: {folder / 'estimate.md'}",
            metadata={"estimate": MetadataValue.md(markdown), "enforced_usd": enforced_usd, "max_cost_usd": limit})
    uri = storage.publish(index, "cost_estimate", folder)
    context.log.info(f"{title}: {estimate.total_usd:,.2f} USD one-time; {enforcement}")
    return MaterializeResult(metadata={
        "path": MetadataValue.path(uri),
        "total_usd": estimate.total_usd,
        "enforced_usd": enforced_usd,
        "enforced_for": ", ".join(groups) or "nothing (no AWS backend configured)",
        "max_cost_usd": limit,
        "bedrock_usd": estimate.group_usd("bedrock"),
        "training_usd": estimate.group_usd("training"),
        "realtime_endpoint_usd_per_month": estimate.group_usd("realtime_endpoint"),
        "serverless_endpoint_usd_per_month": estimate.group_usd("serverless_endpoint"),
        "bedrock_mode": plan["mode"],
        "bedrock_jobs": plan["num_jobs"],
        "bedrock_records": plan["num_documents"],
        "prices_as_of": estimate.prices_as_of,
        "training_steps": length.steps,
        "training_steps_set_by": length.limited_by,
        "peak_memory_gib": round(memory.peak_mib / 1024, 2),
        "peak_memory_stage": memory.stage,
        "free_memory_gib": round(memory.available_mib / 1024, 2),
        "estimate": MetadataValue.md(markdown),
    })
