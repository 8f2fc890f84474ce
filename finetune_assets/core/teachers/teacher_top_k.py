"""The teacher's scores as its top K documents per training query: memory-mapped .npy files, linear in queries.

The hybrid teacher z-scores each signal per query over every training document (so a query's scores have the
same scale as the dense matrix of queries x documents they replace) and keeps only each query's K best
documents with their scores. What the K best leave out is summed up per query by two figures computed from the
whole row before it is dropped: the mean and the standard deviation of the scores of the documents not kept.
Training reads a kept score as it is. A document the query did not keep (another query's candidate in the
batch's pool) reads as the score whose softmax weight is the expected weight of a left-out document, mean +
variance / (2 x temperature) for normally spread scores, never above the row's lowest kept score; its spread
enters the teacher's per-query standard deviation (batch_distillation.spread_ratio), so the score scale is the
one the full matrix gave. With K at least the number of documents the store is exact.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Documents kept per training query: exact up to this many sampled documents (the default sample is 2,000), so
# the defaults train on the scores the full matrix gave; the files take rows x K x 6 bytes.
TEACHER_TOP_K = 2048
INDICES_FILE = "teacher_top_indices.npy"  # int32 [rows, K]: document indices, best first; -1 = empty slot
SCORES_FILE = "teacher_top_scores.npy"  # float16 [rows, K]: their scores; -inf = masked (the row's source)
REST_FILE = "teacher_top_rest.npy"  # float32 [rows, 2]: mean and standard deviation of the scores not kept
# Rows x documents cells of one block of queries scored at once while building: bounds its memory (64 MB per
# float64 signal) whatever the corpus size.
BLOCK_CELLS = 1 << 23


@dataclass
class TeacherTopK:
    """Per training row, the teacher's K best documents (indices into the documents list) and their scores."""

    indices: np.ndarray  # int32 [rows, K]
    scores: np.ndarray  # float16 [rows, K]
    rest: np.ndarray  # float32 [rows, 2]: (mean, std) of the row's scores outside its kept documents
    documents: int  # how many documents the indices point into

    def __post_init__(self) -> None:
        rows = self.indices.shape[0]
        if self.indices.shape != self.scores.shape or self.rest.shape != (rows, 2):
            raise ValueError(f"teacher top-K files disagree: indices {self.indices.shape}, scores "
                             f"{self.scores.shape}, rest {self.rest.shape} (expected [{rows}, 2])")

    @property
    def rows(self) -> int:
        return self.indices.shape[0]

    @property
    def k(self) -> int:
        return self.indices.shape[1]

    @classmethod
    def load(cls, folder: str | Path, documents: int) -> TeacherTopK:
        """The three files of `folder`, memory-mapped (only the rows training reads come into memory)."""
        folder = Path(folder)
        missing = [name for name in (INDICES_FILE, SCORES_FILE, REST_FILE) if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {missing}: re-materialize mined_negatives")
        store = cls(np.load(folder / INDICES_FILE, mmap_mode="r"), np.load(folder / SCORES_FILE, mmap_mode="r"),
                    np.load(folder / REST_FILE, mmap_mode="r"), documents)
        if store.rows and int(np.max(store.indices)) >= documents:
            raise ValueError(f"{INDICES_FILE} points at document {int(np.max(store.indices))} but there are "
                             f"{documents} documents: re-materialize mined_negatives")
        return store

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, k: int = TEACHER_TOP_K) -> TeacherTopK:
        """The store of a small in-memory [rows, documents] score matrix (-inf = masked), e.g. for tests."""
        matrix = np.asarray(matrix, dtype=np.float32)
        indices, scores, rest = keep_top_k(matrix, k)
        return cls(indices, scores.astype(np.float16), rest, matrix.shape[1])

    def candidates(self, row: int, k: int) -> np.ndarray:
        """The row's k best documents, best first; masked (-inf) and empty slots never."""
        kept = self.indices[row][np.isfinite(self.scores[row].astype(np.float32)) & (self.indices[row] >= 0)]
        return np.asarray(kept[:k], dtype=np.int64)

    def masked(self, row: int) -> np.ndarray:
        """Documents the row masks (its source, for a span or title query)."""
        return np.asarray(self.indices[row][np.isneginf(self.scores[row].astype(np.float32))], dtype=np.int64)

    def lookup(self, rows: Sequence[int], columns: Sequence[int], temperature: float | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """float32 [rows, columns] teacher scores, and the variance each cell stands for: 0 for a kept score; for a
        document the row did not keep, the variance of the scores it left out, and as score their mean (what the
        row's spread is computed from) or, given the softmax temperature, mean + variance / (2 x temperature),
        the expected softmax weight of a left-out document, never above the row's lowest kept score."""
        columns = np.asarray(columns, dtype=np.int64)
        order = np.argsort(columns, kind="stable")
        ordered = columns[order]
        scores = np.empty((len(rows), len(columns)), dtype=np.float32)
        variance = np.empty_like(scores)
        for i, row in enumerate(rows):
            mean, std = (float(v) for v in self.rest[row])
            kept_scores = self.scores[row].astype(np.float32)
            finite = kept_scores[np.isfinite(kept_scores)]
            ceiling = float(finite.min()) if len(finite) else np.inf
            fill = mean if temperature is None else min(mean + std * std / (2 * temperature), ceiling)
            scores[i], variance[i] = fill, std * std
            kept = np.asarray(self.indices[row], dtype=np.int64)
            place = np.minimum(np.searchsorted(ordered, kept), max(len(ordered) - 1, 0))
            found = (kept >= 0) & (ordered[place] == kept) if len(ordered) else np.zeros(len(kept), bool)
            where = order[place[found]]
            scores[i, where] = kept_scores[found]
            variance[i, where] = 0.0
        return scores, variance


def reached_rows(total: int, limit: int, seed: int = 0) -> np.ndarray:
    """The training rows mined and scored, ascending: every row when `limit` is 0 or covers them all, else `limit`
    rows drawn by a seeded shuffle, so a row training cannot reach is neither encoded nor scored."""
    if limit < 0:
        raise ValueError(f"max_rows must be >= 0 (0 = every row), got {limit}")
    if not limit or limit >= total:
        return np.arange(total, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).permutation(total)[:limit]).astype(np.int64)


def keep_top_k(combined: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of a [rows, documents] block (-inf = masked): the k best documents' indices and scores, best
    first, with every masked cell kept after them (so training still sees it masked), and the mean and standard
    deviation of the finite scores not kept (0, 0 when every document is kept)."""
    rows, documents = combined.shape
    k = min(k, documents)
    finite = np.isfinite(combined)
    # Masked cells rank first for the partition (always kept), last in the order (-inf sorts after the scores).
    ranking = np.where(finite, combined, np.inf)
    part = (np.argpartition(-ranking, k - 1, axis=1)[:, :k] if k < documents
            else np.tile(np.arange(documents), (rows, 1)))
    order = np.argsort(-np.take_along_axis(combined, part, axis=1), axis=1, kind="stable")
    indices = np.take_along_axis(part, order, axis=1)
    scores = np.take_along_axis(combined, indices, axis=1)
    values = np.where(finite, combined, 0).astype(np.float64)
    kept = np.where(np.isfinite(scores), scores, 0).astype(np.float64)
    count = finite.sum(axis=1) - np.isfinite(scores).sum(axis=1)
    safe = np.maximum(count, 1)
    mean = (values.sum(axis=1) - kept.sum(axis=1)) / safe
    variance = np.maximum(((values ** 2).sum(axis=1) - (kept ** 2).sum(axis=1)) / safe - mean ** 2, 0.0)
    rest = np.where((count > 0)[:, None], np.stack([mean, np.sqrt(variance)], axis=1), 0.0).astype(np.float32)
    return indices.astype(np.int32), scores, rest


def build_top_k(score_block: Callable[[np.ndarray], np.ndarray], rows: int, documents: int, k: int = TEACHER_TOP_K,
                *, masked: Sequence[int | None] | None = None, folder: str | Path | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> TeacherTopK:
    """Score the rows a block at a time (`score_block(row indices) -> float [len, documents]`), mask each row's
    `masked[row]` document (its source, or None), and keep each row's top k. With `folder`, the arrays are
    memory-mapped files there as they fill, so memory stays one block whatever the number of rows."""
    if rows < 1 or documents < 1:
        raise ValueError(f"the teacher needs at least one training row and one document, got {rows} and {documents}")
    k = min(k, documents)
    if folder is not None:
        folder = Path(folder)
        indices = np.lib.format.open_memmap(folder / INDICES_FILE, mode="w+", dtype=np.int32, shape=(rows, k))
        scores = np.lib.format.open_memmap(folder / SCORES_FILE, mode="w+", dtype=np.float16, shape=(rows, k))
        rest = np.lib.format.open_memmap(folder / REST_FILE, mode="w+", dtype=np.float32, shape=(rows, 2))
    else:
        indices = np.empty((rows, k), np.int32)
        scores = np.empty((rows, k), np.float16)
        rest = np.empty((rows, 2), np.float32)
    for block_rows in blocks(rows, documents):
        block = np.asarray(score_block(block_rows), dtype=np.float32)
        if block.shape != (len(block_rows), documents):
            raise ValueError(f"teacher block for rows {block_rows[0]}..{block_rows[-1]} has shape {block.shape}, "
                             f"expected {(len(block_rows), documents)}")
        if masked is not None:
            for i, row in enumerate(block_rows):
                if masked[row] is not None:
                    block[i, masked[row]] = -np.inf
        indices[block_rows], kept, rest[block_rows] = keep_top_k(block, k)
        scores[block_rows] = kept.astype(np.float16)
        if on_progress:
            on_progress(int(block_rows[-1]) + 1, rows)
    for array in (indices, scores, rest):
        if isinstance(array, np.memmap):
            array.flush()
    return TeacherTopK(indices, scores, rest, documents)


def blocks(rows: int, documents: int) -> Iterable[np.ndarray]:
    """Row index arrays whose blocks of `documents` columns hold at most BLOCK_CELLS cells (at least one row)."""
    chunk = max(1, BLOCK_CELLS // max(documents, 1))
    for start in range(0, rows, chunk):
        yield np.arange(start, min(start + chunk, rows))
