"""The interface every query generator shares, and helpers the backends have in common."""
from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator

from finetune_assets.core.querygen.prompts import DEFAULT_MAX_DOCUMENT_CHARS, document_id

ProgressCallback = Callable[[int, int], None]


class QueryGenerator(abc.ABC):
    """Writes factoid and conceptual queries for documents, as Bedrock batch inference output records.

    `generate` yields one record per document, `recordId` = the document's id, in the layout of a
    Bedrock `.jsonl.out` line (see `bedrock_records`), so `parse_output_record` reads every backend's output.
    Documents are dicts with "id" (or "_id"), "text" and an optional "title".
    """

    backend: str = "base"

    @abc.abstractmethod
    def generate(self, documents: Iterable[dict], queries_per_type: int = 1, *,
                 max_document_chars: int | None = DEFAULT_MAX_DOCUMENT_CHARS,
                 progress_callback: ProgressCallback | None = None) -> Iterator[dict]:
        """Yield one Bedrock-layout output record per document."""

    def close(self) -> None:
        """Free what the generator holds (model weights, HTTP sessions)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_documents(documents: Iterable[dict]) -> list[dict]:
    """The documents as a list; refuses ones without an id and duplicate ids (a record id must be unique)."""
    documents = list(documents)
    seen: set[str] = set()
    for document in documents:
        if not isinstance(document, dict):
            raise TypeError(f"documents must be dicts, got {type(document).__name__}")
        record_id = document_id(document)
        if record_id in seen:
            raise ValueError(f"duplicate document id {record_id!r}: record ids must be unique")
        seen.add(record_id)
    return documents


def check_queries_per_type(queries_per_type: int) -> int:
    if not isinstance(queries_per_type, int) or queries_per_type < 1:
        raise ValueError(f"queries_per_type must be a positive integer, got {queries_per_type!r}")
    return queries_per_type
