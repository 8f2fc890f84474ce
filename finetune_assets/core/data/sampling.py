"""Reproducible document sampling. Pure logic: nothing here imports Dagster or boto3."""
from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def sample_key(seed: int, doc_id: str) -> int:
    """The document's place in every sample of this seed (smaller is sampled first): sha256(f"{seed}:{id}")."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{doc_id}".encode("utf-8", errors="surrogatepass")).digest(), "big")


def _rank(seed: int, document: dict) -> tuple[str, str, str]:
    doc_id = str(document["id"])
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode("utf-8", errors="surrogatepass")).hexdigest()
    return digest, doc_id, str(document.get("text", ""))  # id and text only break ties (duplicate ids)


def sample_documents(documents: list[dict], max_documents: int | None, seed: int) -> list[dict]:
    """The `max_documents` documents with the smallest sha256(f"{seed}:{id}"), in that hash order.

    The result depends only on the set of documents and the seed, never on their input order; a document
    in the sample of size n stays in every larger sample. None (or a size >= len) keeps every document.
    """
    if max_documents is not None and max_documents < 0:
        raise ValueError(f"max_documents must be >= 0 or None, not {max_documents}")
    ranked = [(_rank(seed, document), index) for index, document in enumerate(documents)]
    if max_documents is None or max_documents >= len(documents):
        chosen = sorted(ranked)
    else:
        chosen = heapq.nsmallest(max_documents, ranked)
    return [documents[index] for _, index in chosen]


def reservoir_sample(iterable: Iterable[T], k: int, seed: int) -> list[T]:
    """k items drawn uniformly from a stream of unknown length (Algorithm R), reproducible for a seed.

    Fewer than k items in the stream: all of them, in stream order.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, not {k}")
    rng = random.Random(seed)
    reservoir: list[T] = []
    if k == 0:
        return reservoir
    for index, item in enumerate(iterable):
        if index < k:
            reservoir.append(item)
        else:
            slot = rng.randint(0, index)
            if slot < k:
                reservoir[slot] = item
    return reservoir
