"""How well each teacher signal and each weighted fusion of them ranks the real queries of BEIR collections.

    .venv/bin/python -m benchmarks.teacher_signals ../shared/ir-data/cranfield ../shared/ir-data/cacm \
        --out benchmarks/results/teacher-signals-DATE.json

Signals: BM25 (bm25s, as the hybrid teacher tokenizes), all-MiniLM-L6-v2 cosine and SPLADE-tiny dot products,
each z-normalised per query over the whole corpus and summed with the listed weights, exactly as
core/hybrid_teacher.py fuses them. This is the ceiling a distilled student can approach; it picks the teacher's
weights, so it reads the test qrels: the student's own gain is measured by `finetune-assets benchmark`.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from finetune_assets.benchmark import read_beir
from finetune_assets.core.offline_models import DEFAULT_DENSE_MODEL, DEFAULT_SPARSE_MODEL
from finetune_assets.core.retrieval.metrics import evaluate_run
from finetune_assets.core.retrieval.protocol import require_development
from finetune_assets.core.retrieval.retrieval import bm25_index
from finetune_assets.core.teachers.hybrid_teacher import companion_scores

# (bm25, dense, sparse) weights; the three-signal default of core/hybrid_teacher.py is (0.3, 0.4, 0.3).
WEIGHTS = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (0.5, 0.5, 0), (0.4, 0.6, 0), (0.5, 0, 0.5), (0.4, 0, 0.6),
           (1 / 3, 1 / 3, 1 / 3), (0.3, 0.4, 0.3), (0.4, 0.3, 0.3), (0.3, 0.3, 0.4), (0.25, 0.5, 0.25)]


def _standardise(scores: np.ndarray) -> np.ndarray:
    std = scores.std(axis=1, keepdims=True)
    return (scores - scores.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)


def signal_scores(beir_dir: Path) -> tuple[dict[str, np.ndarray], list[str], list[str], dict]:
    corpus, queries, qrels = read_beir(beir_dir)
    query_ids = [q for q in queries if q in qrels]
    doc_ids = [str(d["_id"]) for d in corpus]
    texts = [f"{d.get('title', '')} {d['text']}".strip() for d in corpus]
    query_texts = [queries[q] for q in query_ids]
    retriever, tokenize = bm25_index(texts)
    lexical = []
    for tokens in tokenize(query_texts, return_ids=False):
        known = [t for t in tokens if t in retriever.vocab_dict]
        lexical.append(np.asarray(retriever.get_scores(known)) if known else np.zeros(len(texts)))
    signals = {"bm25": np.stack(lexical)}
    for kind, model in (("dense", DEFAULT_DENSE_MODEL), ("sparse", DEFAULT_SPARSE_MODEL)):
        signals[kind], _ = companion_scores(model, query_texts, texts)
    return {k: _standardise(v.astype(np.float64)) for k, v in signals.items()}, query_ids, doc_ids, qrels


def fusion_table(beir_dir: Path) -> list[dict]:
    signals, query_ids, doc_ids, qrels = signal_scores(beir_dir)
    judged = {q: qrels[q] for q in query_ids}
    rows = []
    for weights in WEIGHTS:
        fused = sum(w * signals[k] for w, k in zip(weights, ("bm25", "dense", "sparse")))
        ranked = np.argsort(-fused, axis=1)[:, :100]
        run = {q: [doc_ids[i] for i in ranked[row]] for row, q in enumerate(query_ids)}
        metrics = evaluate_run(run, judged)
        rows.append({"bm25": round(weights[0], 3), "dense": round(weights[1], 3), "sparse": round(weights[2], 3),
                     **{k: round(v, 4) for k, v in metrics.items()}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("beir_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for beir_dir in args.beir_dirs:  # this probe reads test qrels to choose teacher weights: development only
        try:
            require_development(beir_dir, "benchmarks/teacher_signals.py")
        except ValueError as exc:
            parser.error(str(exc))
    report = {"machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
              "signals": {"bm25": "bm25s lucene k1=1.2 b=0.75, stemmed", "dense": DEFAULT_DENSE_MODEL,
                          "sparse": DEFAULT_SPARSE_MODEL}, "collections": {}}
    for beir_dir in args.beir_dirs:
        started = time.perf_counter()
        report["collections"][beir_dir.name] = {"fusions": fusion_table(beir_dir),
                                                "seconds": round(time.perf_counter() - started, 1)}
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    names = list(report["collections"])
    print("| BM25 | dense | sparse | " + " | ".join(f"{n} nDCG@10" for n in names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for i, weights in enumerate(WEIGHTS):
        cells = [f"{report['collections'][n]['fusions'][i]['ndcg@10']:.4f}" for n in names]
        print(f"| {weights[0]:.2f} | {weights[1]:.2f} | {weights[2]:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
