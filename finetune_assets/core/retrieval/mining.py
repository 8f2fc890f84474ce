"""Hard-negative mining from the base model and BM25, with guards against false negatives, after a round-trip
filter on the generated queries."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from finetune_assets.core.retrieval.retrieval import bm25_top_k, encode, pair_scores, top_k
from finetune_assets.core.retrieval.roundtrip import RoundTrip, positive_ranks, reranked_ranks, round_trip_filter

SOURCES = ("dense", "bm25")


@dataclass
class MiningSettings:
    num_negatives: int = 1
    # Skip the very top ranks of each source: on a synthetic query they are often unjudged relevant documents.
    range_min: int = 3
    range_max: int = 50
    # Keep a candidate only if its dense score <= positive score * (1 - relative_margin). None = no margin guard
    # (distillation: the teacher's margin says how close a candidate is, so close ones teach the most).
    relative_margin: float | None = 0.05
    # BM25 adds lexically close documents the base model ranks low: a different kind of hard negative.
    # Off by default: with the round trip it did not help on CACM (+0.020 vs +0.026 nDCG@10, same queries).
    sources: tuple[str, ...] = ("dense",)
    # Keep a query only if its source document ranks within this many (0 = keep every query).
    roundtrip_top_k: int = 0
    # With a teacher, the round trip reranks this many of the base model's top documents (0 = base ranks only).
    roundtrip_rerank_depth: int = 10
    # With a teacher, drop a candidate it scores above the positive's score minus this (logits). None = no
    # teacher guard: every candidate keeps its teacher margin, negative or not, for MarginMSE.
    teacher_margin: float | None = 1.0

    def __post_init__(self) -> None:
        self.sources = tuple(self.sources)
        unknown = sorted(set(self.sources) - set(SOURCES))
        if unknown or (self.num_negatives > 0 and not self.sources):
            raise ValueError(f"negative_sources must be a non-empty subset of {list(SOURCES)}, "
                             f"got {list(self.sources)}")
        if self.num_negatives > 0 and self.range_max < 1:
            raise ValueError(f"range_max must be at least 1 to mine negatives, got {self.range_max}")
        if self.roundtrip_top_k < 0 or self.roundtrip_rerank_depth < 0:
            raise ValueError("roundtrip_top_k and roundtrip_rerank_depth must be >= 0")
        if 0 < self.roundtrip_rerank_depth < self.roundtrip_top_k:
            raise ValueError(f"roundtrip_rerank_depth ({self.roundtrip_rerank_depth}) must be 0 or at least "
                             f"roundtrip_top_k ({self.roundtrip_top_k})")


@dataclass
class MiningResult:
    rows: list[dict]
    candidates_seen: int = 0
    removed: Counter = field(default_factory=Counter)  # "<source>/<reason>" -> candidates
    chosen_sources: Counter = field(default_factory=Counter)  # source of each negative written
    pairs_without_negative: int = 0
    random_fill: int = 0
    roundtrip: RoundTrip | None = None
    teacher_pairs_scored: int = 0
    # The base model's vectors mining computed (queries aligned with `rows`), for the teacher matrix to reuse.
    query_embeddings: np.ndarray | None = None
    doc_embeddings: np.ndarray | None = None


class _TeacherScores:
    """Teacher scores of (query row, document index) keys, each pair scored once across round trip and guard."""

    def __init__(self, teacher, queries: Sequence[str], doc_texts: Sequence[str]) -> None:
        self.teacher, self.queries, self.doc_texts = teacher, queries, doc_texts
        # The hybrid teacher scores (row, document) keys from the mining embeddings, not text pairs.
        self.by_index = getattr(teacher, "scores_by_index", False)
        self.scores: dict[tuple[int, int], float] = {}

    def __call__(self, keys: Sequence[tuple[int, int]]) -> np.ndarray:
        missing = list(dict.fromkeys(k for k in keys if k not in self.scores))
        if missing:
            if self.by_index:
                values = self.teacher.score_keys(missing)
            else:
                values = self.teacher.score([(self.queries[row], self.doc_texts[doc]) for row, doc in missing])
            self.scores.update(zip(missing, (float(v) for v in values)))
        return np.array([self.scores[k] for k in keys], dtype=np.float64)


def _interleaved(ranked: dict[str, Sequence[int]]) -> Iterator[tuple[str, int, int]]:
    """(source, rank, document) by rank across sources, the dense source first at equal rank."""
    for rank in range(max(map(len, ranked.values()), default=0)):
        for source, documents in ranked.items():
            if rank < len(documents):
                yield source, rank, documents[rank]


def mine_hard_negatives(
    model,
    pairs: Sequence[dict],
    doc_ids: Sequence[str],
    doc_texts: Sequence[str],
    settings: MiningSettings,
    *,
    batch_size: int = 64,
    show_progress: bool | None = None,
    seed: int = 0,
    teacher=None,
) -> MiningResult:
    """Drop queries that fail the round trip, then add `negative_1..n` to each remaining pair.

    The candidates are every given document, ranked by the base model and by BM25; the result counts why
    candidates were rejected, per source. `teacher` (optional) has `score(pairs) -> scores`, as in teacher.py.
    """
    rows = [dict(p) for p in pairs]
    result = MiningResult(rows=rows)
    mining = settings.num_negatives > 0
    if not rows or not (mining or settings.roundtrip_top_k > 0):
        return result
    if mining and len(doc_ids) <= settings.num_negatives:
        raise ValueError(f"cannot mine {settings.num_negatives} negatives from a corpus of {len(doc_ids)} documents")
    position = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    for line, row in enumerate(rows, start=1):
        if row.get("doc_id") not in position:
            raise ValueError(f"training pair {line} (query {row.get('query')!r}): doc_id {row.get('doc_id')!r} "
                             "is not among the candidate documents")
    positives = np.array([position[r["doc_id"]] for r in rows])
    doc_embeddings = encode(model, doc_texts, batch_size=batch_size, show_progress=show_progress)
    query_embeddings = encode(model, [r["query"] for r in rows], batch_size=batch_size, show_progress=show_progress,
                              role="query")
    if getattr(teacher, "scores_by_index", False):  # the hybrid teacher ranks with BM25 and these embeddings
        teacher.bind([r["query"] for r in rows], query_embeddings, doc_texts, doc_embeddings)
    teacher_scores = _TeacherScores(teacher, [r["query"] for r in rows], doc_texts) if teacher is not None else None
    rerank_depth = settings.roundtrip_rerank_depth if teacher_scores is not None and settings.roundtrip_top_k else 0
    depth = max(settings.range_max if mining else 0, rerank_depth)
    dense_indices, dense_scores = top_k(query_embeddings, doc_embeddings, depth) if depth else (None, None)
    numbers = list(range(len(rows)))  # query rows that survive the round trip
    if settings.roundtrip_top_k > 0:
        ranks = positive_ranks(query_embeddings, doc_embeddings, positives)
        judge = "base model"
        if rerank_depth:
            ranks = reranked_ranks(ranks, dense_indices[:, :rerank_depth], positives, teacher_scores)
            judge = getattr(teacher, "name", "teacher")
        result.roundtrip = round_trip_filter(rows, ranks, settings.roundtrip_top_k, judge=judge)
        numbers = result.roundtrip.kept
        result.rows = [rows[n] for n in numbers]
    if mining:
        _add_negatives(result, numbers, positives, query_embeddings, doc_embeddings, dense_indices, dense_scores,
                       doc_ids, doc_texts, settings, teacher_scores, seed)
    result.teacher_pairs_scored = len(teacher_scores.scores) if teacher_scores else 0
    result.query_embeddings, result.doc_embeddings = query_embeddings[numbers], doc_embeddings
    return result


def _add_negatives(result: MiningResult, numbers: list[int], positives, query_embeddings, doc_embeddings,
                   dense_indices, dense_scores, doc_ids, doc_texts, settings: MiningSettings,
                   teacher_scores: _TeacherScores | None, seed: int) -> None:
    wanted = settings.num_negatives
    bm25 = (bm25_top_k(doc_texts, [row["query"] for row in result.rows], settings.range_max)
            if "bm25" in settings.sources and numbers else [])
    own = pair_scores(query_embeddings, doc_embeddings, numbers, positives[numbers]) if numbers else []
    positive_score = {n: float(score) for n, score in zip(numbers, own)}

    def survivors(i: int, n: int) -> Iterator[tuple[int, float, str]]:
        """Candidates of query row n that pass the guards needing no teacher, best first; counts the others."""
        ranked = {}
        if "dense" in settings.sources:
            ranked["dense"] = [int(d) for d in dense_indices[n][: settings.range_max]]
        if "bm25" in settings.sources:
            ranked["bm25"] = [d for d, _ in bm25[i]]
        dense = {int(d): float(s) for d, s in zip(dense_indices[n], dense_scores[n])}
        if settings.relative_margin is None:
            threshold = np.inf
        elif positive_score[n] > 0:
            threshold = positive_score[n] * (1 - settings.relative_margin)
        else:
            threshold = positive_score[n]
        seen: set[int] = set()
        for source, rank, doc in _interleaved(ranked):
            if doc in seen:  # found by both sources: judged once, at its better rank
                continue
            seen.add(doc)
            result.candidates_seen += 1
            score = dense[doc] if doc in dense else float(pair_scores(query_embeddings, doc_embeddings, [n], [doc])[0])
            if doc == positives[n]:
                reason = "positive"
            elif rank < settings.range_min:
                reason = "top-rank skip"
            elif score > threshold:
                reason = "margin guard"
            else:
                yield doc, score, source
                continue
            result.removed[f"{source}/{reason}"] += 1

    streams = {n: survivors(i, n) for i, n in enumerate(numbers)}
    chosen: dict[int, list[tuple[int, float, str]]] = {n: [] for n in numbers}
    open_rows = list(numbers)
    while open_rows:
        # Without a teacher one pass fills every row; with one, each pass scores what the rows still need in
        # one batch, and rows that lost candidates to the teacher guard come back for more.
        taken = {n: list(islice(streams[n], wanted - len(chosen[n]))) for n in open_rows}
        taken = {n: batch for n, batch in taken.items() if batch}
        if teacher_scores is None:
            for n, batch in taken.items():
                chosen[n] += batch
            break
        keys = [(n, int(positives[n])) for n in taken] + [(n, doc) for n, batch in taken.items() for doc, _, _ in batch]
        teacher_scores(keys)
        for n, batch in taken.items():
            if settings.teacher_margin is None:  # no teacher guard: distillation learns from every margin
                chosen[n] += batch
                continue
            limit = teacher_scores.scores[(n, int(positives[n]))] - settings.teacher_margin
            for doc, score, source in batch:
                if teacher_scores.scores[(n, doc)] >= limit:
                    result.removed[f"{source}/teacher guard"] += 1
                else:
                    chosen[n].append((doc, score, source))
        open_rows = [n for n in taken if len(chosen[n]) < wanted]

    rng = np.random.default_rng(seed)
    for row, n in zip(result.rows, numbers):
        picks = chosen[n]
        if len(picks) < wanted:
            # Every row needs the same columns for training: fill with random (easy) negatives.
            result.pairs_without_negative += 1
            taken_docs = {int(positives[n]), *(d for d, _, _ in picks)}
            pool = [int(d) for d in rng.permutation(len(doc_ids))[: wanted + len(taken_docs)] if d not in taken_docs]
            for doc in pool[: wanted - len(picks)]:
                picks.append((doc, float(pair_scores(query_embeddings, doc_embeddings, [n], [doc])[0]), "random"))
                result.random_fill += 1
        for k, (doc, score, source) in enumerate(picks, start=1):
            row[f"negative_{k}"] = doc_texts[doc]
            row[f"negative_{k}_id"] = doc_ids[doc]
            row[f"negative_{k}_score"] = round(score, 5)
            row[f"negative_{k}_source"] = source
            result.chosen_sources[source] += 1
        row["positive_score"] = round(positive_score[n], 5)
        if teacher_scores is not None and teacher_scores.by_index:
            # An index-scored teacher (hybrid) scores random fills here too: nothing is left for later.
            teacher_scores([(n, int(positives[n]))] + [(n, doc) for doc, _, _ in picks])
        if teacher_scores is not None:
            # Scores the guard already paid for become the distillation columns (teacher.add_teacher_scores
            # keeps them and scores only what is missing, such as random fills).
            scored = teacher_scores.scores
            if (n, int(positives[n])) in scored:
                row["teacher_positive_score"] = round(float(scored[(n, int(positives[n]))]), 5)
            for k, (doc, _, _) in enumerate(picks, start=1):
                if (n, doc) in scored:
                    row[f"teacher_negative_{k}_score"] = round(float(scored[(n, doc)]), 5)
