"""What exact top-k search costs beside encoding: `core/retrieval/retrieval.top_k` (blocked dot products) for the
training rows over a large sample, against the time the same machine takes to encode those documents.

    PYTHONPATH=. .venv/bin/python -m benchmarks.exact_top_k --documents 100000 --out benchmarks/results/X.json

Random unit vectors of the base model's width stand in for the embeddings: the dot products and the selection cost
the same whatever the values. The encoding rate is measured on real paragraphs (`--corpus`) with the dense base
model, so the ratio says whether an approximate index could pay off: every document is encoded anyway.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from finetune_assets.core.retrieval.retrieval import top_k


def timed(function, repeats: int) -> list[float]:
    """CPU seconds of each call."""
    seconds = []
    for _ in range(repeats):
        started = time.process_time()
        function()
        seconds.append(time.process_time() - started)
    return seconds


def unit_rows(rng, rows: int, width: int) -> np.ndarray:
    vectors = rng.standard_normal((rows, width), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def encoding_rate(corpus: Path, documents: int, max_seq_length: int) -> float:
    """CPU seconds per document for the dense base model on the corpus' first `documents` texts."""
    from sentence_transformers import SentenceTransformer

    from finetune_assets.core.jsonl import read_jsonl
    from finetune_assets.core.offline_models import minilm_path

    texts = [r["text"] for _, r in zip(range(documents), read_jsonl(corpus))]
    model = SentenceTransformer(str(minilm_path()), device="cpu")
    model.max_seq_length = max_seq_length
    model.encode(texts[:32])  # warm-up
    [seconds] = timed(lambda: model.encode(texts, batch_size=64), 1)
    return seconds / len(texts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=5_120, help="the training rows mined_negatives scores")
    parser.add_argument("--width", type=int, default=384, help="embedding width (all-MiniLM-L6-v2: 384)")
    parser.add_argument("--k", type=int, nargs="+", default=[100, 2048], help="kept per query (2,048: the "
                        "teacher's store)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corpus", type=Path, default=Path("../shared/ir-data/wiki-paragraphs/corpus.jsonl"))
    parser.add_argument("--encoded-documents", type=int, default=1_000, help="documents encoded to measure the rate")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    docs, queries = unit_rows(rng, args.documents, args.width), unit_rows(rng, args.queries, args.width)
    search = {str(k): timed(lambda k=k: top_k(queries, docs, k), args.repeats) for k in args.k}
    per_document = encoding_rate(args.corpus, args.encoded_documents, args.max_seq_length)
    encode_all = per_document * args.documents
    report = {"documents": args.documents, "queries": args.queries, "width": args.width, "repeats": args.repeats,
              "top_k_cpu_s": {k: [round(s, 2) for s in v] for k, v in search.items()},
              "top_k_cpu_s_median": {k: round(statistics.median(v), 2) for k, v in search.items()},
              "encoding_cpu_s_per_document": round(per_document, 5),
              "encoding_cpu_s_all_documents": round(encode_all, 1),
              "encoded_documents": args.encoded_documents, "max_seq_length": args.max_seq_length}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = ["| work | CPU s (median) | share of encoding the documents |", "|---|---:|---:|",
             f"| encode {args.documents:,} documents ({args.max_seq_length} tokens, rate from "
             f"{args.encoded_documents:,}) | {encode_all:,.1f} | 1 |"]
    for k, seconds in report["top_k_cpu_s_median"].items():
        lines.append(f"| exact top-{k} of {args.queries:,} queries | {seconds:,.2f} | {seconds / encode_all:.4f} |")
    table = "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
