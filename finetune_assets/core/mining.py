"""Hard-negative mining with a guard against false negatives."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from finetune_assets.core.retrieval import encode, top_k


@dataclass
class MiningSettings:
    num_negatives: int = 1
    # Skip the very top ranks: on a synthetic query they are often unjudged relevant documents.
    range_min: int = 3
    range_max: int = 50
    # Keep a candidate only if its score <= positive score * (1 - relative_margin).
    relative_margin: float = 0.05


@dataclass
class MiningResult:
    rows: list[dict]
    candidates_seen: int = 0
    removed: Counter = field(default_factory=Counter)
    pairs_without_negative: int = 0
    random_fill: int = 0


def mine_hard_negatives(
    model,
    pairs: Sequence[dict],
    doc_ids: Sequence[str],
    doc_texts: Sequence[str],
    settings: MiningSettings,
    *,
    batch_size: int = 64,
    show_progress: bool = False,
    seed: int = 0,
) -> MiningResult:
    """Add `negative_1..n` to each pair, chosen from the whole corpus by the base model.

    Unlike a pairs-only miner, the candidates are every sampled document, and the rows report why
    candidates were rejected (the positive itself, top-rank skip, too close to the positive score).
    """
    rows = [dict(p) for p in pairs]
    result = MiningResult(rows=rows)
    if settings.num_negatives <= 0 or not rows:
        return result
    if len(doc_ids) <= settings.num_negatives:
        raise ValueError(f"cannot mine {settings.num_negatives} negatives from a corpus of {len(doc_ids)} documents")
    doc_embeddings = encode(model, doc_texts, batch_size=batch_size, show_progress=show_progress)
    query_embeddings = encode(model, [r["query"] for r in rows], batch_size=batch_size, show_progress=show_progress,
                              role="query")
    rng = np.random.default_rng(seed)
    position = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    indices, scores = top_k(query_embeddings, doc_embeddings, settings.range_max)
    for row_number, row in enumerate(rows):
        positive_index = position[row["doc_id"]]
        positive_score = float(query_embeddings[row_number] @ doc_embeddings[positive_index])
        threshold = positive_score * (1 - settings.relative_margin) if positive_score > 0 else positive_score
        chosen: list[tuple[int, float]] = []
        for rank, (doc_index, score) in enumerate(zip(indices[row_number], scores[row_number])):
            if len(chosen) == settings.num_negatives:
                break
            result.candidates_seen += 1
            if doc_index == positive_index:
                result.removed["positive"] += 1
            elif rank < settings.range_min:
                result.removed["top-rank skip"] += 1
            elif score > threshold:
                result.removed["margin guard"] += 1
            else:
                chosen.append((int(doc_index), float(score)))
        if len(chosen) < settings.num_negatives:
            # Every row needs the same columns for training: fill with random (easy) negatives.
            result.pairs_without_negative += 1
            taken = {positive_index, *(i for i, _ in chosen)}
            pool = [i for i in rng.permutation(len(doc_ids))[: settings.num_negatives + len(taken)] if i not in taken]
            for doc_index in pool[: settings.num_negatives - len(chosen)]:
                score = float(query_embeddings[row_number] @ doc_embeddings[doc_index])
                chosen.append((int(doc_index), score))
                result.random_fill += 1
        for n, (doc_index, score) in enumerate(chosen, start=1):
            row[f"negative_{n}"] = doc_texts[doc_index]
            row[f"negative_{n}_id"] = doc_ids[doc_index]
            row[f"negative_{n}_score"] = round(score, 5)
        row["positive_score"] = round(positive_score, 5)
    return result
