"""bedrock_batch_outputs: synthetic queries per document, in Bedrock batch inference's output layout."""

import time
from typing import Optional

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from finetune_assets.core.jsonl import read_jsonl, write_json, write_jsonl
from finetune_assets.core.querygen.bedrock_records import parse_output_record
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.query_generator import QueryGeneratorResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages import smart_defaults
from finetune_assets.stages.metadata import table
from finetune_assets.stages.queries.bedrock_jobs import generate_with_bedrock
from finetune_assets.stages.run_config import check_run_config

OUTPUT_FILE = "documents.jsonl.out"  # Bedrock names outputs after the input file plus `.out`
MAX_LISTED_ERRORS = 50


# Settings left at None are filled from core/cost/smart_defaults.toml, by model type and corpus size.
_SMART = "null = the smart-defaults table's value for the model type and corpus size"


class QueryGenerationConfig(Config):
    queries_per_type: Optional[int] = Field(default=None, ge=1, description="Factoid and conceptual queries asked "
                                            f"per document ({_SMART}).")
    max_documents: int = Field(default=0, ge=0, description="Generate for the first N sampled documents only (0 = "
                               "all); the rest still serve as negatives and for title and span queries.")
    max_document_chars: int = Field(default=1500, ge=1, description="Characters of each document shown to the "
                                    "generator.")


@asset(partitions_def=index_partitions, group_name="queries", deps=["raw_corpus", "cost_estimate"], kinds={"python"})
def bedrock_batch_outputs(context: AssetExecutionContext, config: QueryGenerationConfig, storage: ArtifactStorage,
                          query_generator: QueryGeneratorResource, base_model: BaseModelResource) -> MaterializeResult:
    """Factoid and conceptual queries written for each document, one record per document (`recordId` = doc id)."""
    check_run_config(context)
    index = context.partition_key
    if query_generator.is_bedrock:
        query_generator.bedrock_job_options(storage)  # configuration errors before any download
    documents = list(read_jsonl(storage.fetch(index, "raw_corpus") / "documents.jsonl"))
    # raw_corpus is in sample order, so the first N are the sample of size N at the same seed
    settings, smart_metadata = smart_defaults.fill(context, {"queries_per_type": config.queries_per_type},
                                                   base_model.model_type, len(documents))
    documents = documents[:config.max_documents or None]
    queries_per_type = settings["queries_per_type"]
    generator = None if query_generator.is_bedrock else query_generator.create()  # model load is not timed
    started = time.perf_counter()
    bedrock_metadata = {}
    tokens = None
    folder = storage.artifact_dir(index, "bedrock_batch_outputs", run_id=context.run.run_id)
    if query_generator.is_bedrock:
        result = generate_with_bedrock(context, storage, query_generator, documents, queries_per_type,
                                       config.max_document_chars, folder)
        records = result.records
        tokens = (result.input_tokens, result.output_tokens)
        bedrock_metadata = {
            "model_id": query_generator.model_id,
            "mode": result.mode,  # batch, or on_demand (Converse) below the batch minimum
            "jobs": len(result.job_arns),
            "job_arns": MetadataValue.json(result.job_arns),
            "missing_records": len(result.missing_record_ids),
            "malformed_lines": result.malformed_lines,
            "token_source": result.token_source,
        }
    else:
        records = generator.generate(
            documents, queries_per_type=queries_per_type, max_document_chars=config.max_document_chars,
            progress_callback=_progress_logger(context, started))
    written = write_jsonl(folder / OUTPUT_FILE, records)
    seconds = time.perf_counter() - started
    parsed = [parse_output_record(r) for r in read_jsonl(folder / OUTPUT_FILE)]
    error_ids = [p.record_id for p in parsed if p.error]
    if tokens is None:  # local generators: the usage fields they wrote
        tokens = (sum(p.input_tokens or 0 for p in parsed), sum(p.output_tokens or 0 for p in parsed))
    manifest = {  # the same fields as Bedrock's manifest.json.out
        "totalRecordCount": written, "processedRecordCount": written,
        "successRecordCount": written - len(error_ids), "errorRecordCount": len(error_ids),
        "inputTokenCount": tokens[0], "outputTokenCount": tokens[1],
    }
    write_json(folder / "manifest.json.out", manifest)
    if error_ids:
        context.log.warning(f"{len(error_ids)} record(s) failed, e.g. {error_ids[:10]}; the others are used")
    examples = [{"recordId": p.record_id, "queries": " / ".join(str(q) for q in p.queries)} for p in parsed[:8]]
    uri = storage.publish(index, "bedrock_batch_outputs", folder)
    return MaterializeResult(metadata={
        **smart_metadata,
        "queries_per_type": queries_per_type,
        "path": MetadataValue.path(uri),
        "generator": query_generator.backend,
        "records": written,
        "record_errors": len(error_ids),
        "record_error_ids": MetadataValue.json(error_ids[:MAX_LISTED_ERRORS]),
        "queries": sum(len(p.queries) for p in parsed),
        "input_tokens": manifest["inputTokenCount"],
        "output_tokens": manifest["outputTokenCount"],
        "seconds": round(seconds, 1),
        "documents_per_second": round(written / seconds, 3) if seconds else 0.0,
        **bedrock_metadata,
        "examples": table(examples, ["recordId", "queries"]),
    })


def _progress_logger(context: AssetExecutionContext, started: float):
    last_logged = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last_logged[0] > 30 or done == total:
            last_logged[0] = now
            rate = done / max(now - started, 1e-9)
            context.log.info(f"generated queries for {done}/{total} documents ({rate:.2f} docs/s)")

    return progress
