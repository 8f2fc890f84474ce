"""Span queries: sentences of the corpus used as queries, for distilling a teacher's ranking at no generation cost.

A sentence copied from a document says little about that document as a positive (matching it is trivial), but
the teacher's ranking of the *other* documents for it is a graded, corpus-specific relevance signal: which
documents share its topic and its rare terms. So a span pair marks its source document `exclude_source: true`
and batch distillation (core/batch_distillation.py) masks the source out of both teacher and student scores.
A document with no usable sentence (a title-only record, as half of CACM) gives its title instead.
"""
from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable

from finetune_assets.core.data.pairs import _document_text, _in_held_out, normalize
from finetune_assets.core.languages import dominant_script, word_count

# Sentence ends: Latin punctuation followed by space (Cranfield writes " . "), or CJK full stops.
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+|(?<=[。？！])")


def sentences(text: str) -> list[str]:
    return [" ".join(s.split()) for s in _SENTENCE_END.split(text) if s.strip()]


def span_pairs(documents: Iterable[dict], *, per_document: int, min_words: int = 6, max_words: int = 30,
               held_out_fraction: float = 0.2, seed: int = 0, seen: set[str] | None = None) -> list[dict]:
    """Up to `per_document` sentences of `min_words`..`max_words` words from each train-split document, drawn
    reproducibly (seeded by the document id, so the draw does not depend on corpus order). Held-out documents
    give none: their documents never enter training."""
    if per_document < 0:
        raise ValueError(f"span queries per document must be >= 0, got {per_document}")
    seen = set() if seen is None else seen
    pairs = []
    for document in documents:
        doc_id = str(document["id"])
        if per_document == 0 or _in_held_out(doc_id, held_out_fraction, seed):
            continue
        title = " ".join((document.get("title") or "").split())
        candidates = [s for s in sentences(document.get("text") or "")
                      if min_words <= word_count(s) <= max_words and normalize(s) != normalize(title)]
        if not candidates and title and 3 <= word_count(title) <= max_words:
            candidates = [title]
        draw = random.Random(int.from_bytes(hashlib.sha256(f"span:{seed}:{doc_id}".encode()).digest()[:8], "big"))
        draw.shuffle(candidates)
        positive = _document_text(document)
        taken = 0
        for sentence in candidates:
            if taken == per_document:
                break
            if normalize(sentence) in seen:
                continue
            seen.add(normalize(sentence))
            pairs.append({"query": sentence, "positive": positive, "doc_id": doc_id, "query_type": "span",
                          "exclude_source": True, "script": dominant_script(positive)})
            taken += 1
    return pairs
