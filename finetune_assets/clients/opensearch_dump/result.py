"""What a dump returns: the documents, the skipped ones with reasons, and the counts for logs and metadata."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class DumpResult:
    """Documents read from the index and what happened on the way.

    ``documents``: ``{"id": _id, "text": ..., "title": ... or None}``. ``skipped``: ``{"id", "reason"}``
    for every document without usable text. ``seen`` hits read; ``eligible`` of them had text;
    ``kept`` = len(documents) (smaller than ``eligible`` only when sampled).
    """

    index: str
    documents: list[dict]
    skipped: list[dict]
    seen: int
    eligible: int
    kept: int
    pages: int
    seconds: float
    method: str                      # "pit" or "scroll"
    slices: int                      # slices actually used
    sampled: bool
    seed: int
    expected: int | None = None      # hits the PIT/scroll reported for the query
    retries: int = 0
    pit_reopens: int = 0
    scroll_restarts: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def skipped_count(self) -> int:
        return len(self.skipped)

    @property
    def docs_per_second(self) -> float:
        return self.seen / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict:
        """Counts for logs and asset metadata (no documents)."""
        reasons = Counter(entry["reason"] for entry in self.skipped)
        return {
            "index": self.index, "seen": self.seen, "eligible": self.eligible, "kept": self.kept,
            "skipped": self.skipped_count, "skipped_reasons": dict(reasons.most_common(10)),
            "pages": self.pages, "seconds": round(self.seconds, 3), "docs_per_second": round(self.docs_per_second, 1),
            "method": self.method, "slices": self.slices, "sampled": self.sampled, "seed": self.seed,
            "expected": self.expected, "retries": self.retries, "pit_reopens": self.pit_reopens,
            "scroll_restarts": self.scroll_restarts, "warnings": list(self.warnings),
        }
