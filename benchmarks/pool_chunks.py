"""How many pooled documents a batch_kl training step should encode per forward pass: time and padding by chunk size.

    .venv/bin/python -m benchmarks.pool_chunks CORPUS_JSONL [CORPUS_JSONL ...] --out FILE.json \
        [--chunks 4 8 16 32] [--pool 64] [--repeats 3] [--model local:bge-small-en]

A step encodes its pool of teacher candidates in chunks sorted by token length (batch_distillation.POOL_CHUNK), and
each chunk is padded to its longest document. Per corpus, a seeded sample of `--pool` documents (a 2-candidate
step's pool) goes through forward and backward at each chunk size, in train mode with attention dropout 0 as the
default trains; the sizes alternate within each repeat so drift in machine load hits all of them. Reported: real
and padded tokens, median seconds, and the largest embedding difference against the first size in eval mode, which
shows that the chunking changes the arithmetic's rounding only.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

from benchmarks.output import write_table
from benchmarks.precision_step import read_texts


def sample_texts(corpus: Path, pool: int, seed: int = 0) -> list[str]:
    """`pool` documents' texts drawn with `seed` from the whole corpus (bad records named as read_texts names them)."""
    texts = read_texts(corpus, None)
    if len(texts) < pool:
        raise SystemExit(f"{corpus} has {len(texts)} documents; the pool needs {pool}")
    return [texts[i] for i in random.Random(seed).sample(range(len(texts)), pool)]


def measure(model, texts: list[str], chunks: list[int], repeats: int) -> list[dict]:
    import torch
    from sentence_transformers.util import batch_to_device

    from finetune_assets.core.training.batch_distillation import length_sorted_chunks, token_lengths

    lengths = token_lengths(model.tokenizer, texts, model.max_seq_length)
    pool = list(range(len(texts)))

    def encode(chunk: int):
        parts = []
        for part in length_sorted_chunks(pool, lengths, chunk):
            features = batch_to_device(model.preprocess([texts[i] for i in part]), "cpu")
            parts.append(torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1))
        return torch.cat(parts)

    seconds = {chunk: [] for chunk in chunks}
    model.train()
    encode(chunks[0]).sum().backward()  # warm-up, not counted
    model.zero_grad()
    for repeat in range(repeats):
        for chunk in chunks[repeat % len(chunks):] + chunks[:repeat % len(chunks)]:
            began = time.perf_counter()
            encode(chunk).sum().backward()
            seconds[chunk].append(time.perf_counter() - began)
            model.zero_grad()
    model.eval()
    with torch.no_grad():
        reference = encode(chunks[0])
        differences = {chunk: float((encode(chunk) - reference).abs().max()) for chunk in chunks}
    rows = []
    for chunk in chunks:
        padded = sum(len(part) * max(lengths[i] for i in part) for part in length_sorted_chunks(pool, lengths, chunk))
        rows.append({"chunk": chunk, "tokens": sum(lengths), "padded_tokens": padded,
                     "median_s": round(statistics.median(seconds[chunk]), 3),
                     "seconds": [round(s, 3) for s in seconds[chunk]],
                     "max_embedding_difference": differences[chunk]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpora", nargs="+", type=Path, help="corpus .jsonl files (records with a 'text' string)")
    parser.add_argument("--out", type=Path, required=True, help="JSON figures; the markdown table goes beside it")
    parser.add_argument("--chunks", type=int, nargs="+", default=[32, 16, 8, 4])
    parser.add_argument("--pool", type=int, default=64, help="documents in the step's pool")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="local:bge-small-en")
    args = parser.parse_args(argv)
    if min(args.chunks) < 1 or args.pool < 1 or args.repeats < 1:
        parser.error("--chunks, --pool and --repeats must be at least 1")

    import torch
    from sentence_transformers import SentenceTransformer

    from finetune_assets.core.cost.smart_defaults import batch_kl_lookup
    from finetune_assets.core.offline_models import resolve_base_model
    from finetune_assets.core.training.batch_distillation import set_attention_dropout

    torch.manual_seed(0)
    model = SentenceTransformer(str(resolve_base_model(args.model)), device="cpu")
    set_attention_dropout(model, 0.0)
    model.max_seq_length = batch_kl_lookup("dense").max_seq_length
    report = {"model": args.model, "pool": args.pool, "repeats": args.repeats, "threads": torch.get_num_threads(),
              "max_seq_length": model.max_seq_length, "cpu_count": os.cpu_count(),
              "machine": {"platform": platform.platform(), "processor": platform.processor()}, "corpora": {}}
    lines = ["| corpus | chunk | tokens | padded tokens | median s (forward + backward) | vs the first chunk | "
             "max embedding difference |", "|---|---:|---:|---:|---:|---:|---:|"]
    for corpus in args.corpora:
        rows = measure(model, sample_texts(corpus, args.pool), args.chunks, args.repeats)
        report["corpora"][str(corpus)] = rows
        for row in rows:
            lines.append(f"| {corpus.parent.name or corpus.name} | {row['chunk']} | {row['tokens']} | "
                         f"{row['padded_tokens']} | {row['median_s']:.2f} | {row['median_s'] / rows[0]['median_s']:.2f} | "
                         f"{row['max_embedding_difference']:.1e} |")
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    write_table(args.out, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
