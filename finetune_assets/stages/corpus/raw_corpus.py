"""raw_corpus: the partition's documents, validated, deduplicated and sampled reproducibly."""

import time

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from pydantic import Field

from finetune_assets.core.data.corpus_io import CorpusReadResult, QuarantinedRecord, read_corpus, write_quarantine
from finetune_assets.core.data.index_names import validate_index_name
from finetune_assets.core.data.sampling import sample_documents
from finetune_assets.core.jsonl import read_jsonl, write_jsonl
from finetune_assets.core.offline_models import resolve_model
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.opensearch import OpenSearchResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.metadata import table


class RawCorpusConfig(Config):
    source: str = Field(default="", description="File or folder with the corpus; default <storage>/corpora/<index>/")
    id_field: str = Field(default="", description="Field holding the document id (default: _id, id or doc_id)")
    text_fields: list[str] = Field(default=["text"], description="Fields joined into the document text; dotted paths allowed")
    title_field: str = Field(default="title", description="Optional title field ('' for none)")
    txt_mode: str = Field(default="line", description="Plain text files: 'line' (a document per line) or 'file'")
    max_documents: int = Field(default=2000, description="Reproducible sample size (0 = all documents)")
    seed: int = 0
    from_opensearch: bool = Field(default=False, description="Dump the OpenSearch index named by the partition")
    opensearch_query: dict = Field(default={}, description="Optional filter query for the index dump")
    slices: int = Field(default=1, description="Parallel slices for the index dump")



def _count_over_max_length(documents: list[dict], base_model: BaseModelResource) -> int:
    """Documents the model will truncate: they are kept, but only their start is trained on."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(base_model.model_name))
    lengths = tokenizer([d["text"] for d in documents], add_special_tokens=True, truncation=False,
                        return_length=True, verbose=False)["length"]
    return sum(1 for n in lengths if n > base_model.max_seq_length)


def _dump_index(context, index: str, config: RawCorpusConfig, opensearch: OpenSearchResource) -> CorpusReadResult:
    """The index itself as the corpus: PIT + search_after, sampled while streaming."""
    from finetune_assets.clients.index_dump import dump_index

    context.log.info(f"dumping index '{index}' from {opensearch.url} (fields {config.text_fields})")
    dump = dump_index(opensearch.client(), index, text_fields=config.text_fields,
                      title_field=config.title_field or None, query=config.opensearch_query or None,
                      max_documents=config.max_documents or None, seed=config.seed, slices=config.slices)
    quarantined = [QuarantinedRecord(source=f"{opensearch.url}/{index}", line=None, record_id=s["id"],
                                     reason=s["reason"], raw="", kind="missing text") for s in dump.skipped]
    documents = [{**d, "title": d.get("title") or ""} for d in dump.documents]
    context.log.info(f"read {dump.seen} documents from '{index}', kept a sample of {len(documents)}")
    return CorpusReadResult(documents=documents, quarantined=quarantined, files=[f"{opensearch.url}/{index}"],
                            records_read=dump.seen, duplicate_ids=0, duplicate_texts=0)


@asset(partitions_def=index_partitions, group_name="corpus", kinds={"python"})
def raw_corpus(context: AssetExecutionContext, config: RawCorpusConfig, storage: ArtifactStorage,
               base_model: BaseModelResource, opensearch: OpenSearchResource) -> MaterializeResult:
    """Documents of one index/corpus: JSONL, plain text or parquet; bad records are quarantined with a reason."""
    index = validate_index_name(context.partition_key)
    started = time.perf_counter()
    if config.from_opensearch:
        result = _dump_index(context, index, config, opensearch)
    else:
        location = config.source or storage.corpus_location(index)
        context.log.info(f"reading corpus for index '{index}' from {location}")
        result = read_corpus(location, id_field=config.id_field or None, text_fields=config.text_fields,
                             title_field=config.title_field or None, txt_mode=config.txt_mode)
    sample = sample_documents(result.documents, config.max_documents or None, config.seed)
    folder = storage.artifact_dir(index, "raw_corpus")
    write_jsonl(folder / "documents.jsonl", sample)
    write_quarantine(folder / "quarantine.jsonl", result.quarantined)
    for entry in result.quarantined[:20]:
        context.log.warning(f"quarantined {entry.source}:{entry.line} ({entry.record_id}): {entry.reason}")
    over_length = _count_over_max_length(sample, base_model)
    if over_length:
        context.log.warning(f"{over_length} of {len(sample)} sampled documents are longer than "
                            f"{base_model.max_seq_length} tokens; the model reads only their beginning")
    uri = storage.publish(index, "raw_corpus")
    return MaterializeResult(metadata={
        "path": MetadataValue.path(uri),
        "records_read": result.records_read,
        "documents_valid": len(result.documents),
        "documents_sampled": len(sample),
        "quarantined": len(result.quarantined),
        "duplicate_ids": result.duplicate_ids,
        "duplicate_texts": result.duplicate_texts,
        "documents_over_max_length": over_length,
        "quarantine_reasons": MetadataValue.json(dict(result.quarantine_counts())),
        "source_files": MetadataValue.json([str(f) for f in result.files[:50]]),
        "mean_document_chars": round(sum(len(d["text"]) for d in sample) / len(sample), 1),
        "seconds": round(time.perf_counter() - started, 2),
        "preview": table(sample[:5], ["id", "title", "text"]),
    })


@asset_check(asset=raw_corpus, partitions_def=index_partitions,
             description="Warns when more than a fifth of the records were quarantined.")
def few_records_quarantined(context: AssetCheckExecutionContext, storage: ArtifactStorage) -> AssetCheckResult:
    folder = storage.fetch(context.partition_key, "raw_corpus")
    kept = sum(1 for _ in read_jsonl(folder / "documents.jsonl"))
    quarantined = sum(1 for _ in read_jsonl(folder / "quarantine.jsonl"))
    share = quarantined / max(1, kept + quarantined)
    return AssetCheckResult(passed=share <= 0.2, severity=AssetCheckSeverity.WARN,
                            description=f"{quarantined} quarantined vs {kept} sampled documents ({share:.1%})",
                            metadata={"quarantined_share": share})
