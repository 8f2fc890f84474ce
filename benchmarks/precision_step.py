"""One training step in bf16 autocast against fp32 on this machine's CPU, the choice `precision: auto` makes.

    .venv/bin/python -m benchmarks.precision_step CORPUS_JSONL --out FILE.json [--model local:bge-small-en]

The step has the dense batch_kl default's shape (the smart-defaults table's queries a step, candidates per query
and training length; documents encoded in batch_kl's chunks; attention dropout 0): forward, backward and an AdamW
update. Steps alternate (bf16, fp32, ...) so that drift in machine load hits both; the first of each is a warm-up
and not counted. Medians and the ratio are reported.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from benchmarks.output import write_table
from finetune_assets.core.jsonl import read_jsonl


def read_texts(corpus: Path, count: int | None) -> list[str]:
    """The first `count` documents' texts (None: all of them); a bad record stops the command with its file and
    record number."""
    texts = []
    try:
        for number, record in enumerate(read_jsonl(corpus), 1):
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise SystemExit(f"{corpus}: record {number} has no 'text' string")
            texts.append(record["text"])
            if len(texts) == count:
                return texts
    except ValueError as error:  # read_jsonl names the file and line of a line that is not JSON
        raise SystemExit(str(error)) from None
    if count is None:
        return texts
    raise SystemExit(f"{corpus} has {len(texts)} documents; the step needs {count}")


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus_jsonl", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="local:bge-small-en")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    from finetune_assets.core.cost.smart_defaults import batch_kl_lookup
    from finetune_assets.core.offline_models import resolve_base_model
    from finetune_assets.core.training.batch_distillation import POOL_CHUNK, cpu_has_bf16, set_attention_dropout

    shape = batch_kl_lookup("dense")
    documents = read_texts(args.corpus_jsonl, shape.batch_size * shape.candidates_per_query)
    queries = [text[:80] for text in documents[:shape.batch_size]]  # query-length texts; the timing is what matters
    model = SentenceTransformer(resolve_base_model(args.model), device="cpu")
    model.max_seq_length = shape.max_seq_length
    set_attention_dropout(model, 0.0)  # as the dense default trains: fused attention, no stored attention matrices
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def embed(texts: list[str]):
        return torch.nn.functional.normalize(model(model.preprocess(texts))["sentence_embedding"], dim=-1)

    def step(bf16: bool) -> float:
        began = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            chunks = [embed(documents[i:i + POOL_CHUNK]) for i in range(0, len(documents), POOL_CHUNK)]
            scores = embed(queries) @ torch.cat(chunks).T
            loss = scores.float().logsumexp(-1).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - began

    step(True), step(False)  # warm-up
    seconds: dict[str, list[float]] = {"bf16": [], "fp32": []}
    for repeat in range(args.repeats):
        for name in seconds:
            seconds[name].append(step(name == "bf16"))
        print(f"repeat {repeat + 1}: bf16 {seconds['bf16'][-1]:.2f} s, fp32 {seconds['fp32'][-1]:.2f} s", flush=True)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    report = {
        "model": args.model, "queries": len(queries), "documents": len(documents),
        "max_seq_length": shape.max_seq_length,
        "repeats": args.repeats, "seconds": seconds, "median_seconds": medians,
        "fp32_over_bf16": medians["fp32"] / medians["bf16"], "cpu_has_bf16": cpu_has_bf16(),
        "machine": {"platform": platform.platform(), "cpu": cpu_name(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    write_table(args.out, "\n".join([
        f"| precision | median s per step ({args.repeats} steps) |", "|---|---|",
        *(f"| {name} | {value:.2f} |" for name, value in medians.items()),
        f"\nfp32 / bf16: {report['fp32_over_bf16']:.2f}; native bf16 on this CPU: {report['cpu_has_bf16']}"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
