"""raw_corpus: the partition's documents, validated, deduplicated and sampled reproducibly."""

import json
import time
from typing import Literal

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
from pydantic import Field, field_validator

from finetune_assets.core.data.corpus_io import (
    RAW_MAX_CHARS,
    CorpusReadResult,
    QuarantinedRecord,
    deduplicate,
    duplicate_reason,
    read_corpus,
    write_quarantine,
)
from finetune_assets.core.data.index_names import validate_index_name
from finetune_assets.core.data.sampling import sample_documents
from finetune_assets.core.jsonl import read_json, read_jsonl, write_json, write_jsonl
from finetune_assets.core.offline_models import resolve_model
from finetune_assets.core.redact import redact, redacted_errors
from finetune_assets.partitions import index_partitions
from finetune_assets.resources.base_model import BaseModelResource
from finetune_assets.resources.opensearch import OpenSearchResource
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.metadata import table
from finetune_assets.stages.run_config import check_run_config


class RawCorpusConfig(Config):
    source: str = Field(default="", description="File or folder with the corpus ('' = <storage>/corpora/<index>/).")
    id_field: str = Field(default="", description="Field holding the document id ('' = _id, id or doc_id).")
    text_fields: list[str] = Field(default=["text"], min_length=1, description="Fields joined into the document "
                                   "text; dotted paths reach nested fields.")
    title_field: str = Field(default="title", description="Field holding the document title ('' = none).")
    txt_mode: Literal["line", "file"] = Field(default="line", description="Plain text files: line = a document per "
                                              "line, file = a document per file.")
    max_documents: int = Field(default=2000, ge=0, description="Size of the reproducible sample (0 = every "
                               "document).")
    seed: int = Field(default=0, ge=0, description="Seed of the sample.")
    from_opensearch: bool = Field(default=False, description="Dump the OpenSearch index named by the partition "
                                  "instead of reading files.")
    opensearch_query: dict = Field(default={}, description="Query that filters the index dump ({} = every "
                                   "document).")
    slices: int = Field(default=1, ge=1, le=1024, description="Parallel slices of the index dump, at most "
                        "OpenSearch's default index.max_slices_per_pit.")

    @field_validator("text_fields")
    @classmethod
    def _named_fields(cls, names: list[str]) -> list[str]:
        empty = [number for number, name in enumerate(names, 1) if not name.strip()]
        if empty:
            raise ValueError(f"text_fields entry {empty[0]} is empty; name a field such as 'text' or 'body.content'")
        return names


def _count_over_max_length(documents: list[dict], base_model: BaseModelResource) -> int:
    """Documents the model will truncate: they are kept, but only their start is trained on."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(base_model.model_name))
    lengths = tokenizer([d["text"] for d in documents], add_special_tokens=True, truncation=False,
                        return_length=True, verbose=False)["length"]
    return sum(1 for n in lengths if n > base_model.max_seq_length)


COUNTS_FILE = "counts.json"  # records read, valid, sampled and quarantined: what few_records_quarantined divides


def _dump_index(context, index: str, config: RawCorpusConfig, opensearch: OpenSearchResource) -> CorpusReadResult:
    """The index itself as the corpus: PIT + search_after, sampled while streaming; duplicates resolved as for files."""
    from finetune_assets.clients.opensearch_dump.dump import dump_index

    source = f"{opensearch.display_url}/{index}"
    context.log.info(f"dumping index '{index}' from {opensearch.display_url} (fields {config.text_fields})")
    with redacted_errors():  # a cluster's or proxy's error text may echo the URL or an Authorization header
        dump = dump_index(opensearch.client(), index, text_fields=config.text_fields,
                          title_field=config.title_field or None, query=config.opensearch_query or None,
                          max_documents=config.max_documents or None, seed=config.seed, slices=config.slices)
    quarantined = [QuarantinedRecord(source=source, line=None, record_id=s["id"],
                                     reason=s["reason"], raw="", kind="missing text") for s in dump.skipped]
    # An alias or pattern can span indices that share ids, and indices hold repeated texts.
    documents, dropped = deduplicate([{**d, "title": d.get("title") or ""} for d in dump.documents])
    quarantined += [QuarantinedRecord(source=source, line=None, record_id=lost["id"],
                                      reason=duplicate_reason(lost, kept, kind, why, f"_id '{kept['id']}'"),
                                      raw=json.dumps(lost, ensure_ascii=False)[:RAW_MAX_CHARS], kind=kind)
                    for lost, kept, kind, why in dropped]
    context.log.info(f"read {dump.seen} documents from '{index}', kept a sample of {len(documents)}")
    kinds = [kind for _, _, kind, _ in dropped]
    return CorpusReadResult(documents=documents, quarantined=quarantined, files=[source], records_read=dump.seen,
                            duplicate_ids=kinds.count("duplicate id"), duplicate_texts=kinds.count("duplicate text"))


@asset(partitions_def=index_partitions, group_name="corpus", kinds={"python"})
def raw_corpus(context: AssetExecutionContext, config: RawCorpusConfig, storage: ArtifactStorage,
               base_model: BaseModelResource, opensearch: OpenSearchResource) -> MaterializeResult:
    """Documents of one index/corpus: JSON Lines, a JSON array, plain text or parquet; bad records are quarantined
    with a reason, and duplicates resolved by an order-independent rule (longest text, then smallest SHA-256)."""
    check_run_config(context)
    index = validate_index_name(context.partition_key)
    started = time.perf_counter()
    if config.from_opensearch:
        result = _dump_index(context, index, config, opensearch)
    else:
        location = config.source or storage.corpus_location(index)
        context.log.info(f"reading corpus for index '{index}' from {redact(location)}")
        result = read_corpus(location, id_field=config.id_field or None, text_fields=config.text_fields,
                             title_field=config.title_field or None, txt_mode=config.txt_mode,
                             max_documents=config.max_documents or None, seed=config.seed)
    sample = sample_documents(result.documents, config.max_documents or None, config.seed)
    folder = storage.artifact_dir(index, "raw_corpus", run_id=context.run.run_id)
    write_jsonl(folder / "documents.jsonl", sample)
    write_quarantine(folder / "quarantine.jsonl", result.quarantined)
    valid = len(result.documents) + result.not_sampled  # duplicates removed where the sample met them
    write_json(folder / COUNTS_FILE, {"records_read": result.records_read, "documents_valid": valid,
                                      "documents_sampled": len(sample), "quarantined": len(result.quarantined)})
    for entry in result.quarantined[:20]:
        where = entry.source if entry.line is None else f"{entry.source}:{entry.line}"
        context.log.warning(redact(f"quarantined {where} ({entry.record_id}): {entry.reason}"))
    over_length = _count_over_max_length(sample, base_model)
    if over_length:
        context.log.warning(f"{over_length} of {len(sample)} sampled documents are longer than "
                            f"{base_model.max_seq_length} tokens; the model reads only their beginning")
    uri = storage.publish(index, "raw_corpus", folder)
    return MaterializeResult(metadata={
        "path": MetadataValue.path(uri),
        "records_read": result.records_read,
        "documents_valid": valid,
        "documents_sampled": len(sample),
        "quarantined": len(result.quarantined),
        "duplicate_ids": result.duplicate_ids,
        "duplicate_texts": result.duplicate_texts,
        "documents_over_max_length": over_length,
        "quarantine_reasons": MetadataValue.json(dict(result.quarantine_counts())),
        "source_files": MetadataValue.json(redact([str(f) for f in result.files[:50]])),
        "mean_document_chars": round(sum(len(d["text"]) for d in sample) / len(sample), 1),
        "seconds": round(time.perf_counter() - started, 2),
        "preview": table(sample[:5], ["id", "title", "text"]),
    })


@asset_check(asset=raw_corpus, partitions_def=index_partitions,
             description="Warns when more than a fifth of the records read were quarantined.")
def few_records_quarantined(context: AssetCheckExecutionContext, storage: ArtifactStorage) -> AssetCheckResult:
    """Quarantined records over all records read (not over the sample, which max_documents makes small)."""
    folder = storage.fetch(context.partition_key, "raw_corpus")
    if (folder / COUNTS_FILE).is_file():
        counts = read_json(folder / COUNTS_FILE)
        records_read, quarantined, sampled = counts["records_read"], counts["quarantined"], counts["documents_sampled"]
        note = ""
    else:  # materialized before counts.json was written: only the sample and the quarantine are known
        sampled = sum(1 for _ in read_jsonl(folder / "documents.jsonl"))
        quarantined = sum(1 for _ in read_jsonl(folder / "quarantine.jsonl"))
        records_read = sampled + quarantined
        note = f" (no {COUNTS_FILE}: counted over the sample; materialize raw_corpus again for the exact share)"
    share = quarantined / max(1, records_read)
    return AssetCheckResult(passed=share <= 0.2, severity=AssetCheckSeverity.WARN,
                            description=f"{quarantined} of {records_read} records read were quarantined "
                                        f"({share:.1%}); {sampled} documents sampled{note}",
                            metadata={"quarantined_share": share, "records_read": records_read,
                                      "quarantined": quarantined})
