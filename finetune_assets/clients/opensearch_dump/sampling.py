"""Keep the documents of each slice while streaming (all, or a seeded reservoir) and merge the slices' samples."""
from __future__ import annotations

import random
from collections.abc import Sequence

from finetune_assets.clients.opensearch_dump.fields import FieldSpec


class SliceSink:
    """Documents of one slice: all of them, or a reservoir (Algorithm R) of ``capacity``."""

    def __init__(self, spec: FieldSpec, capacity: int | None, rng: random.Random):
        self.spec, self.capacity, self.rng = spec, capacity, rng
        self.documents: list[dict] = []
        self.skipped: list[dict] = []
        self.seen = self.eligible = self.pages = 0

    def add_page(self, hits: Sequence[dict]) -> None:
        self.pages += 1
        for hit in hits:
            self.seen += 1
            doc, reason = self.spec.extract(hit)
            if doc is None:
                self.skipped.append({"id": hit.get("_id"), "reason": reason})
                continue
            index = self.eligible
            self.eligible += 1
            if self.capacity is None or index < self.capacity:
                self.documents.append(doc)
            else:
                j = self.rng.randint(0, index)
                if j < self.capacity:
                    self.documents[j] = doc


def slice_sink(spec: FieldSpec, capacity: int | None, seed: int, slice_id: int, slices: int) -> SliceSink:
    """The sink for one slice, its reservoir seeded from the dump's seed and the slice's place among all."""
    rng = random.Random(seed) if slices == 1 else random.Random(f"{seed}:{slice_id}/{slices}")
    return SliceSink(spec, capacity, rng)


def merge_samples(sinks: list[SliceSink], k: int, rng: random.Random) -> list[dict]:
    """A uniform sample of k from the union of per-slice reservoirs (each uniform over its slice).

    The number taken from each slice follows the multivariate hypergeometric law (k draws without
    replacement from all eligible documents); each slice's share is then drawn from its reservoir.
    """
    remaining = [s.eligible for s in sinks]
    total = sum(remaining)
    if total <= k:
        return [doc for s in sinks for doc in s.documents]
    take = [0] * len(sinks)
    for _ in range(k):
        pick = rng.randrange(total)
        for i, count in enumerate(remaining):
            if pick < count:
                take[i] += 1
                remaining[i] -= 1
                total -= 1
                break
            pick -= count
    merged: list[dict] = []
    for sink, n in zip(sinks, take):
        chosen = sorted(rng.sample(range(len(sink.documents)), n))
        merged.extend(sink.documents[i] for i in chosen)
    return merged
