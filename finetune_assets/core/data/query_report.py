"""What a set of generated queries looks like against its corpus: styles, lengths, and how easy BM25 finds them.

Training can only be as good as its queries. A set of mostly generic questions ("what is the purpose of the
study"), title copies or run-ons teaches little; a set where BM25 already ranks every source first teaches
the model to imitate BM25. This report makes both visible per run.
"""
from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

QUESTION_WORDS = frozenset("what which who whom whose when where why how is are does do did can could should "
                           "would will was were".split())
# Openings of questions that fit almost any document of a collection.
GENERIC_OPENINGS = ("what is the purpose", "what is the main", "what is the goal", "what is the topic",
                    "what does the study", "what does this", "what is this", "what are the results",
                    "what is the significance", "what is discussed")
_WORD = re.compile(r"\w+", re.UNICODE)


def query_style(query: str) -> str:
    """'question' (ends with ? or opens with a question word), 'keywords' (no verb-like glue: 4 words or fewer),
    or 'statement' (a longer declarative text, a claim)."""
    words = _WORD.findall(query.lower())
    if query.rstrip().endswith("?") or (words and words[0] in QUESTION_WORDS):
        return "question"
    return "keywords" if len(words) <= 4 else "statement"


def is_generic(query: str) -> bool:
    return query.strip().lower().startswith(GENERIC_OPENINGS)


@dataclass
class QueryReport:
    queries: int
    styles: dict[str, float]  # share of each style
    words_mean: float
    words_median: float
    words_p90: float
    generic_share: float  # share opening like a question that fits any document
    title_copy_share: float  # share equal to their document's title
    source_rank1_bm25: float  # share whose source document BM25 ranks first among the sampled documents
    source_top10_bm25: float
    bm25_checked: int  # queries ranked with BM25 for the two figures above (a seeded sample when there are many)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        styles = ", ".join(f"{name} {share:.0%}" for name, share in sorted(self.styles.items()))
        return (f"{self.queries} queries: {styles}; {self.words_mean:.1f} words on average (median "
                f"{self.words_median:g}, 90th percentile {self.words_p90:g}); {self.generic_share:.0%} generic, "
                f"{self.title_copy_share:.0%} title copies; BM25 ranks the source first for "
                f"{self.source_rank1_bm25:.0%} and in its top 10 for {self.source_top10_bm25:.0%} "
                f"({self.bm25_checked} checked)")


def _percentile(values: Sequence[int], fraction: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


def query_report(pairs: Sequence[Mapping], documents: Mapping[str, Mapping], *, doc_text=None,
                 bm25_sample: int = 500, seed: int = 0) -> QueryReport:
    """Describe `pairs` (each with query and doc_id) against `documents` (id -> record); `doc_text` turns a record
    into the indexed text (default: title + text). BM25 ranks a seeded sample of at most `bm25_sample` queries."""
    import random

    from finetune_assets.core.retrieval.retrieval import bm25_top_k

    if not pairs:
        raise ValueError("no queries to describe")
    doc_text = doc_text or (lambda d: f"{d.get('title') or ''} {d.get('text') or ''}".strip())
    lengths = [len(_WORD.findall(p["query"])) for p in pairs]
    styles = Counter(query_style(p["query"]) for p in pairs)
    titles = sum(1 for p in pairs if (documents.get(p["doc_id"], {}).get("title") or "").strip().lower()
                 == p["query"].strip().lower())
    ids = list(documents)
    position = {doc_id: i for i, doc_id in enumerate(ids)}
    checked = [p for p in pairs if p["doc_id"] in position]
    if len(checked) > bm25_sample:
        checked = random.Random(seed).sample(checked, bm25_sample)
    first = top10 = 0
    if checked:
        ranked = bm25_top_k([doc_text(documents[i]) for i in ids], [p["query"] for p in checked], 10)
        for pair, hits in zip(checked, ranked):
            order = [index for index, _ in hits]
            source = position[pair["doc_id"]]
            first += bool(order) and order[0] == source
            top10 += source in order
    count = len(pairs)
    return QueryReport(
        queries=count, styles={name: round(n / count, 3) for name, n in styles.items()},
        words_mean=round(statistics.mean(lengths), 2), words_median=statistics.median(lengths),
        words_p90=_percentile(lengths, 0.9), generic_share=round(sum(map(is_generic, (p["query"] for p in pairs)))
                                                                   / count, 3),
        title_copy_share=round(titles / count, 3),
        source_rank1_bm25=round(first / len(checked), 3) if checked else 0.0,
        source_top10_bm25=round(top10 / len(checked), 3) if checked else 0.0, bm25_checked=len(checked))
