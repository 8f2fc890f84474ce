"""bedrock_batch_outputs: synthetic queries per document, in Bedrock batch inference's output layout."""

import time

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from finetune_assets.assets.metadata import table
from finetune_assets.config import QueryGenerationConfig
from finetune_assets.core.jsonl import read_jsonl, write_json, write_jsonl
from finetune_assets.core.querygen.bedrock_records import parse_output_record
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.query_generator import QueryGeneratorResource
from finetune_assets.resources.storage import ArtifactStorage

OUTPUT_FILE = "documents.jsonl.out"  # Bedrock names outputs after the input file plus `.out`


@asset(partitions_def=index_partitions, group_name="finetune", deps=["raw_corpus"], kinds={"python"})
def bedrock_batch_outputs(context: AssetExecutionContext, config: QueryGenerationConfig,
                          storage: ArtifactStorage, query_generator: QueryGeneratorResource) -> MaterializeResult:
    """Factoid and conceptual queries written for each document, one record per document (`recordId` = doc id)."""
    index = context.partition_key
    documents = list(read_jsonl(storage.fetch(index, "raw_corpus") / "documents.jsonl"))
    generator = query_generator.create()
    folder = storage.artifact_dir(index, "bedrock_batch_outputs")
    started = time.perf_counter()
    last_logged = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last_logged[0] > 30 or done == total:
            last_logged[0] = now
            rate = done / max(now - started, 1e-9)
            context.log.info(f"generated queries for {done}/{total} documents ({rate:.2f} docs/s)")

    records = generator.generate(documents, queries_per_type=config.queries_per_type,
                                 max_document_chars=config.max_document_chars, progress_callback=progress)
    written = write_jsonl(folder / OUTPUT_FILE, records)
    seconds = time.perf_counter() - started
    parsed = [parse_output_record(r) for r in read_jsonl(folder / OUTPUT_FILE)]
    errors = sum(1 for p in parsed if p.error)
    manifest = {  # the same fields as Bedrock's manifest.json.out
        "totalRecordCount": written, "processedRecordCount": written,
        "successRecordCount": written - errors, "errorRecordCount": errors,
        "inputTokenCount": sum(p.input_tokens or 0 for p in parsed),
        "outputTokenCount": sum(p.output_tokens or 0 for p in parsed),
    }
    write_json(folder / "manifest.json.out", manifest)
    examples = [{"recordId": p.record_id, "queries": " / ".join(str(q) for q in p.queries)} for p in parsed[:8]]
    uri = storage.publish(index, "bedrock_batch_outputs")
    return MaterializeResult(metadata={
        "path": MetadataValue.path(uri),
        "generator": query_generator.backend,
        "records": written,
        "record_errors": errors,
        "queries": sum(len(p.queries) for p in parsed),
        "input_tokens": manifest["inputTokenCount"],
        "output_tokens": manifest["outputTokenCount"],
        "seconds": round(seconds, 1),
        "documents_per_second": round(written / seconds, 3) if seconds else 0.0,
        "examples": table(examples, ["recordId", "queries"]),
    })
