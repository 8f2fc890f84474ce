"""Turn generated queries into clean (query, document) training pairs, split by document."""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from finetune_assets.core.languages import dominant_script, repetition_tokens, word_count

_WORD = re.compile(r"\w+", re.UNICODE)


def normalize(text: str) -> str:
    return " ".join(text.casefold().split())


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


@dataclass
class QueryFilter:
    """Rules that drop queries a small generator often gets wrong.

    Lengths are in words, with every two characters of Korean, Chinese, Japanese or Thai text counted as a
    word (`languages.word_count`): "倒排索引是什么" has no space but is 4 words long, like "what is an inverted index".
    """

    min_words: int = 2
    max_words: int = 32
    max_chars: int = 300
    # A query that repeats one word this often is degenerate output ("the the the ...").
    max_repeated_word_fraction: float = 0.5
    # A query copied from the document (a sentence or the title) teaches only lexical overlap.
    copy_min_words: int = 6

    def problem(self, query: str, document: dict) -> str | None:
        """Why `query` is unusable for `document`, or None when it is a good query."""
        words = _words(query)
        if not words:
            return "empty"
        length = word_count(query)
        if length < self.min_words:
            return "too short"
        if length > self.max_words or len(query) > self.max_chars:
            return "too long"
        tokens = repetition_tokens(query)
        most_common = Counter(tokens).most_common(1)[0][1]
        if len(tokens) >= 4 and most_common / len(tokens) > self.max_repeated_word_fraction:
            return "repeated word"
        norm_query = " ".join(words)
        title = " ".join(_words(document.get("title") or ""))
        if title and norm_query == title:
            return "copy of the title"
        if length >= self.copy_min_words and norm_query in " ".join(_words(document["text"])):
            return "copy of the document"
        return None


@dataclass
class PairsResult:
    train: list[dict]
    held_out: list[dict]
    dropped: Counter = field(default_factory=Counter)
    dropped_examples: list[dict] = field(default_factory=list)
    queries_in: int = 0


def _in_held_out(doc_id: str, fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"split:{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def build_pairs(
    generated: Iterable[tuple[str, str, str]],
    documents: dict[str, dict],
    *,
    held_out_fraction: float = 0.2,
    seed: int = 0,
    query_filter: QueryFilter | None = None,
    max_examples: int = 20,
) -> PairsResult:
    """Clean `(doc_id, query, query_type)` triples and split them by document.

    The split is by document, never by query: a document whose queries are held out never appears
    as a positive in training, so the held-out score measures generalisation, not memory.
    """
    query_filter = query_filter or QueryFilter()
    result = PairsResult(train=[], held_out=[])
    seen: set[str] = set()
    scripts: dict[str, str] = {}
    for doc_id, query, query_type in generated:
        result.queries_in += 1
        query = " ".join(query.split())
        document = documents.get(doc_id)
        if document is None:
            reason = "unknown document id"
        else:
            reason = query_filter.problem(query, document)
            if reason is None and normalize(query) in seen:
                reason = "duplicate query"
        if reason:
            result.dropped[reason] += 1
            if len(result.dropped_examples) < max_examples:
                result.dropped_examples.append({"doc_id": doc_id, "query": query, "reason": reason})
            continue
        seen.add(normalize(query))
        positive = _document_text(document)
        if doc_id not in scripts:
            scripts[doc_id] = dominant_script(positive)
        pair = {"query": query, "positive": positive, "doc_id": doc_id, "query_type": query_type,
                "script": scripts[doc_id]}
        (result.held_out if _in_held_out(doc_id, held_out_fraction, seed) else result.train).append(pair)
    return result


def title_pairs(documents: Iterable[dict], *, held_out_fraction: float = 0.2, seed: int = 0,
                query_filter: QueryFilter | None = None, seen: set[str] | None = None) -> list[dict]:
    """Each train-split document's title as a query for its body: pairs that cost no generation at all.

    Titles read like short topical queries, and a corpus has one per document rather than one per generated
    document, so they add pairs over the whole sample. The positive is the body alone (a title matching
    itself teaches nothing); a document without a title, with no body beyond it, with a title too short
    or too long for `query_filter`, or in the held-out split (whose queries must stay unseen) gives none.
    """
    query_filter = query_filter or QueryFilter()
    seen = set() if seen is None else seen
    pairs = []
    for document in documents:
        title = " ".join((document.get("title") or "").split())
        body = " ".join(document["text"].split())
        if title and body[:len(title)].casefold() == title.casefold():  # Cranfield repeats the title
            body = body[len(title):].lstrip(" .:;-")
        if not title or not body or _in_held_out(str(document["id"]), held_out_fraction, seed):
            continue
        length = word_count(title)
        if length < query_filter.min_words or length > query_filter.max_words or normalize(title) in seen:
            continue
        seen.add(normalize(title))
        pairs.append({"query": title, "positive": body, "doc_id": str(document["id"]), "query_type": "title",
                      "script": dominant_script(body)})
    return pairs


def _document_text(document: dict) -> str:
    title = (document.get("title") or "").strip()
    text = document["text"].strip()
    # Titles carry much of a document's meaning; prepend unless the text already starts with it.
    if title and not normalize(text).startswith(normalize(title)):
        return f"{title}\n{text}"
    return text


document_text = _document_text
