"""cost_estimate: what the AWS path would cost for this partition's corpus, computed before anything is spent."""

from typing import Optional

from dagster import AssetExecutionContext, Config, Failure, MaterializeResult, MetadataValue, asset
from pydantic import Field

from finetune_assets.clients.bedrock_batch import estimate_batch_plan
from finetune_assets.core.cost import cost, smart_defaults
from finetune_assets.core.cost.cost import CostEstimate, TrainSettings, estimate_cost
from finetune_assets.core.jsonl import read_jsonl, write_json
from finetune_assets.core.querygen.prompts import document_text
from finetune_assets.core.training.batch_distillation import MODEL_TYPES as BATCH_KL_MODEL_TYPES
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.query_generator import QueryGeneratorResource
from finetune_assets.resources.sagemaker_pipes import SageMakerTrainingResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.queries.bedrock_batch_outputs import QueryGenerationConfig
from finetune_assets.stages.training.mined_negatives import MinedNegativesConfig
from finetune_assets.stages.training.trained_model import TrainedModelConfig
from finetune_assets.stages.training.training_pairs import TrainingPairsConfig

COST_GROUPS = ("bedrock", "training")
PLAN_FIELDS = ("mode", "num_documents", "num_jobs", "records_per_job", "concurrent_job_quota_exceeded")


def _default(config: type[Config], name: str):
    return config.model_fields[name].default


class CostEstimateConfig(Config):
    """What the AWS path would cost, checked before any spend. Mirror fields default to the other assets' defaults:
    set them to the values those assets run with."""

    max_cost_usd: float = Field(default=0.0, description="Fail before any spend when the enforced estimate exceeds "
                                                         "this many USD (0 = no limit)")
    enforce_for: list[str] = Field(default=["auto"], description="Cost groups checked against max_cost_usd: "
                                   "'bedrock', 'training'. 'auto' = 'bedrock' when the query generator's backend is "
                                   "bedrock, plus 'training' when training defaults to SageMaker (FINETUNE_MODE=aws); "
                                   "list 'training' yourself when you pick backend: sagemaker per run")
    bedrock_model_id: str = Field(default="", description="Model to price ('' = the query generator's model_id)")
    batch: bool = Field(default=True, description="Bedrock batch prices (on-demand below the batch minimum)")
    training_instance_type: str = Field(default=cost.DEFAULT_TRAINING_INSTANCE, description="SageMaker training instance")
    training_instance_count: int = 1
    training_rows_per_second: float = Field(default=0.0, description="Measured training throughput (a trained_model "
                                            "run's samples_per_second on that instance); 0 = the price table's default")
    endpoint_instance_type: str = Field(default=cost.DEFAULT_ENDPOINT_INSTANCE, description="Real-time endpoint instance")
    serverless_memory_mb: int = Field(default=cost.DEFAULT_SERVERLESS_MEMORY_MB,
                                      description="Serverless endpoint memory: 1024-6144 in 1024 steps")
    requests_per_month: int = Field(default=cost.DEFAULT_REQUESTS_PER_MONTH, description="Expected endpoint requests per month")
    queries_per_type: Optional[int] = _default(QueryGenerationConfig, "queries_per_type")
    generate_for_documents: int = _default(QueryGenerationConfig, "max_documents")
    max_document_chars: int = _default(QueryGenerationConfig, "max_document_chars")
    held_out_fraction: float = _default(TrainingPairsConfig, "held_out_fraction")
    num_negatives: Optional[int] = _default(MinedNegativesConfig, "num_negatives")
    epochs: Optional[float] = _default(TrainedModelConfig, "epochs")
    batch_size: Optional[int] = _default(TrainedModelConfig, "batch_size")
    loss: str = _default(TrainedModelConfig, "loss")
    max_steps: Optional[int] = _default(TrainedModelConfig, "max_steps")
    max_seq_length: Optional[int] = _default(TrainedModelConfig, "max_seq_length")
    candidates_per_query: Optional[int] = _default(TrainedModelConfig, "candidates_per_query")
    soup_size: int = _default(TrainedModelConfig, "soup_size")
    student_candidates_per_query: int = _default(TrainedModelConfig, "student_candidates_per_query")
    span_queries: int = _default(TrainingPairsConfig, "span_queries")



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


def mirrored_settings(config: CostEstimateConfig, model_type: str, num_documents: int) -> dict:
    """The mirror fields, with those left at None filled as the other assets fill them: from the smart-defaults
    table's batch_kl entry when trained_model's loss will be batch_kl, else from its rows."""
    chosen = {"queries_per_type": config.queries_per_type, "num_negatives": config.num_negatives,
              "epochs": config.epochs, "batch_size": config.batch_size}
    settings = smart_defaults.resolve(chosen, model_type, num_documents)[0]
    # loss auto picks batch_kl for the model types it trains, from the matrix mined_negatives' default teacher writes
    loss = config.loss if config.loss != "auto" else ("batch_kl" if model_type in BATCH_KL_MODEL_TYPES else "mnrl")
    settings.update(loss=loss, max_steps=config.max_steps or 0, max_seq_length=config.max_seq_length,
                    candidates_per_query=config.candidates_per_query or TrainSettings.candidates_per_query)
    if loss == "batch_kl":
        settings.update(smart_defaults.resolve_batch_kl(
            {"epochs": config.epochs, "batch_size": config.batch_size, "max_steps": config.max_steps,
             "max_seq_length": config.max_seq_length, "candidates_per_query": config.candidates_per_query},
            model_type)[0])
    settings["soup_size"] = config.soup_size
    settings["student_candidates_per_query"] = config.student_candidates_per_query
    return settings


def train_settings(config: CostEstimateConfig, max_seq_length: int, settings: dict,
                   sampled_documents: int) -> TrainSettings:
    """What trained_model will run, for pricing; `sampled_documents` (raw_corpus's sample) give the span queries."""
    batch_kl = settings["loss"] == "batch_kl"
    return TrainSettings(epochs=settings["epochs"], batch_size=settings["batch_size"],
                         num_negatives=settings["num_negatives"], held_out_fraction=config.held_out_fraction,
                         max_seq_length=min(max_seq_length, settings["max_seq_length"] or max_seq_length),
                         loss=settings["loss"], max_steps=settings["max_steps"],
                         candidates_per_query=settings["candidates_per_query"],
                         soup_size=settings["soup_size"],
                         student_candidates_per_query=settings["student_candidates_per_query"],
                         span_rows=sampled_documents * (1 - config.held_out_fraction) * config.span_queries
                         if batch_kl else 0.0)


def plan_summary(plan: dict) -> str:
    text = f"Bedrock {plan['mode']}: {plan['num_documents']:,} records in {plan['num_jobs']} batch job(s)"
    if plan["records_per_job"]:
        text += f" of {', '.join(f'{n:,}' for n in plan['records_per_job'])} records"
    if plan["concurrent_job_quota_exceeded"]:
        text += " (more jobs than the concurrent-job quota: they queue)"
    return text


def enforced_groups(enforce_for: list[str], query_generator: QueryGeneratorResource,
                    training_default: str = "local") -> list[str]:
    """The cost groups max_cost_usd applies to: those whose backend this deployment actually runs on AWS."""
    groups = set()
    for name in enforce_for:
        if name == "auto":
            if query_generator.backend.strip().lower() == "bedrock":
                groups.add("bedrock")
            if training_default == "sagemaker":
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
    index = context.partition_key
    groups = enforced_groups(config.enforce_for, query_generator, sagemaker_training.default_backend)
    documents = list(read_jsonl(storage.fetch(index, "raw_corpus") / "documents.jsonl"))
    settings = mirrored_settings(config, base_model.model_type, len(documents))
    train = train_settings(config, base_model.max_seq_length, settings, sampled_documents=len(documents))
    documents = documents[:config.generate_for_documents or None]  # as bedrock_batch_outputs generates
    estimate, plan = estimate_with_batch_plan(
        documents, queries_per_type=settings["queries_per_type"], max_document_chars=config.max_document_chars,
        batch=config.batch, bedrock_model_id=config.bedrock_model_id or query_generator.model_id,
        train=train, training_instance_type=config.training_instance_type, training_instance_count=config.training_instance_count,
        training_rows_per_second=config.training_rows_per_second or None,
        endpoint_instance_type=config.endpoint_instance_type, serverless_memory_mb=config.serverless_memory_mb,
        requests_per_month=config.requests_per_month)
    enforced_usd = estimate.group_usd(*groups)
    limit = config.max_cost_usd
    exceeded = limit > 0 and enforced_usd > limit
    if groups:
        title = "Cost estimate"
        enforcement = (f"max_cost_usd {usd(limit)} applies to {', '.join(groups)}: {usd(enforced_usd)} USD"
                       if limit > 0 else f"no max_cost_usd set ({', '.join(groups)} run on AWS)")
    else:
        title = "What the AWS path would cost"
        enforcement = (f"this run spends nothing on AWS (query generator backend '{query_generator.backend}', "
                       f"training not listed in enforce_for), so max_cost_usd is not enforced")
    markdown = estimate.to_markdown(title, [plan_summary(plan), enforcement])

    folder = storage.artifact_dir(index, "cost_estimate")
    write_json(folder / "estimate.json", {**estimate.to_dict(), "bedrock_batch_plan": plan, "max_cost_usd": limit,
                                          "enforced_for": groups, "enforced_usd": enforced_usd,
                                          "exceeds_max_cost": exceeded})
    (folder / "estimate.md").write_text(markdown, encoding="utf-8")
    uri = storage.publish(index, "cost_estimate")
    if exceeded:
        biggest = estimate.biggest_item(groups)
        raise Failure(
            description=f"estimated AWS spend {usd(enforced_usd)} USD ({' + '.join(groups)}) exceeds max_cost_usd "
                        f"{usd(limit)} USD; biggest line item: {biggest.name}, {usd(biggest.usd)} USD. Nothing was "
                        f"spent. Raise max_cost_usd, price a cheaper model or instance, or sample fewer documents "
                        f"(raw_corpus max_documents). Estimate: {uri}",
            metadata={"estimate": MetadataValue.md(markdown), "enforced_usd": enforced_usd, "max_cost_usd": limit})
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
        "estimate": MetadataValue.md(markdown),
    })
