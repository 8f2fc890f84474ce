"""Run `finetune-assets benchmark` on several collections and seeds, and write one table: dev and check marked.

    .venv/bin/python -m benchmarks.collections ../shared/ir-data/{cranfield,cacm,med,lisa} --model-type sparse \
        --seeds 0 1 2 --queries-root /tmp/queries --out benchmarks/results/collections-sparse-DATE.json

Per collection and seed: BM25, base, tuned, the hybrid rows when the benchmark reports them, the tuned - base
gain with its 95% paired-bootstrap interval, and CPU minutes. Queries are generated once per collection (into
--queries-root/<name>) and reused by every seed, so seeds differ only in training. Check collections (med, lisa)
run today's defaults: this command never changes a setting, and its figures must not be used to choose one.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.output import write_table
from finetune_assets.core.retrieval.protocol import collection_name, role

SYSTEMS = ("bm25", "base", "tuned", "hybrid_base", "hybrid_tuned")


def run_one(beir_dir: Path, out: Path, *, model_type: str, seed: int, queries_dir: Path, max_docs: int,
            extra: list[str]) -> dict:
    """One benchmark run in its own process (the figures file is its output); queries generated on first use."""
    base = [sys.executable, "-m", "finetune_assets.cli", "benchmark", str(beir_dir), "--model-type", model_type,
            "--max-docs", str(max_docs), *extra]
    from finetune_assets.benchmark import partition_name

    # Generated once: the queries are there when their stage published a version (a killed run left none).
    published = queries_dir / "storage" / "artifacts" / partition_name(beir_dir) / "bedrock_batch_outputs" / "current"
    if not published.exists():
        subprocess.run([*base, "--out", str(out.with_suffix(".queries.json")), "--work-dir", str(queries_dir),
                        "--queries-only"], check=True)
    config = {"ops": {"trained_model": {"config": {"seed": seed}}}}
    subprocess.run([*base, "--out", str(out), "--reuse-queries", str(queries_dir),
                    "--config-json", json.dumps(config)], check=True)
    return json.loads(out.read_text())


def summarise(name: str, runs: dict[int, dict]) -> dict:
    """One collection's row: the mean of each system over seeds, each seed's gain and interval, CPU minutes."""
    first = next(iter(runs.values()))
    systems = [s for s in SYSTEMS if all(s in r["results"] for r in runs.values())]
    means = {s: statistics.mean(r["results"][s]["ndcg@10"] for r in runs.values()) for s in systems}
    gains = {seed: r["tuned_minus_base_ndcg@10"] for seed, r in runs.items()}
    delivered = {}  # what search_pipeline gave the user, per seed (runs from before it was recorded have none)
    if all("delivered" in r for r in runs.values()):
        delivered = {"ndcg@10_mean": statistics.mean(r["delivered"]["ndcg@10"] for r in runs.values()),
                     "rows": {str(seed): r["delivered"]["row"] for seed, r in runs.items()}}
    return {"collection": name, "role": role(name), "judged_queries": first["judged_queries"],
            "documents": first["documents"], "seeds": sorted(runs), "ndcg@10_mean": means,
            "gain_mean": statistics.mean(g["mean"] for g in gains.values()),
            "gains": {str(seed): {"mean": g["mean"], "ci95": g["ci95"]} for seed, g in gains.items()},
            "cpu_minutes_mean": statistics.mean(r["cpu_minutes"]["pipeline_total"] for r in runs.values()),
            "hybrid": {seed: r.get("hybrid", {}) for seed, r in runs.items()}, "delivered": delivered}


def markdown(rows: list[dict]) -> str:
    columns = [s for s in SYSTEMS if any(s in r["ndcg@10_mean"] for r in rows)]
    lines = ["| collection | role | judged queries | " + " | ".join(columns) + " | delivered (row per seed) "
             "| tuned - base (per seed, 95% CI) | mean gain | seeds | CPU min |",
             "|---|---|---|" + "---|" * len(columns) + "---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r['ndcg@10_mean'][s]:.4f}" if s in r["ndcg@10_mean"] else "" for s in columns]
        delivered = r.get("delivered")
        cells.append(f"{delivered['ndcg@10_mean']:.4f} ({', '.join(delivered['rows'].values())})" if delivered else "")
        per_seed = "; ".join(f"{g['mean']:+.4f} ({g['ci95'][0]:+.4f}..{g['ci95'][1]:+.4f})" for g in r["gains"].values())
        lines.append(f"| {r['collection']} | {r['role']} | {r['judged_queries']} | " + " | ".join(cells) +
                     f" | {per_seed} | {r['gain_mean']:+.4f} | {len(r['seeds'])} | {r['cpu_minutes_mean']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("beir_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the table (a .md beside it)")
    parser.add_argument("--model-type", default="dense", choices=("dense", "sparse", "inference_free"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-docs", type=int, default=200, help="documents the generator writes queries for")
    parser.add_argument("--queries-root", type=Path, required=True, help="one queries work dir per collection")
    args, extra = parser.parse_known_args(argv)
    rows = []
    for beir_dir in args.beir_dirs:
        name = collection_name(beir_dir)
        runs = {}
        for seed in args.seeds:
            out = args.out.with_name(f"{args.out.stem}-{name}-seed{seed}.json")
            runs[seed] = run_one(beir_dir, out, model_type=args.model_type, seed=seed,
                                 queries_dir=args.queries_root / name, max_docs=args.max_docs, extra=extra)
        rows.append(summarise(name, runs))
        args.out.write_text(json.dumps({"model_type": args.model_type, "rows": rows}, indent=2), encoding="utf-8")
    write_table(args.out, markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
