"""Document pruning of sparse models on the real judged queries of a development collection: quality against search cost.

    PYTHONPATH=. .venv/bin/python -m benchmarks.sparse_pruning benchmarks/results/cranfield-sparse-....json \
        [more.json] --out benchmarks/results/sparse-pruning-DATE.json

Each input is a sparse `finetune-assets benchmark` JSON whose work dir still holds its tuned model. The base and the
tuned model encode the whole collection once; then every ratio of OpenSearch's `max_ratio` pruning
(`sparse_retrieval.prune_max_ratio`, what the `sparse_encoding` ingest processor applies) prunes the documents,
and this writes nDCG@10, recall@100, active dimensions and FLOPS of each, with the pruned tuned model minus the
unpruned one and its paired 95% interval. It reads real judgements to choose `document_prune_ratio`, so it refuses
check collections (`core/retrieval/protocol.py`); with `--as-delivered` it scores only the ratio the run's
evaluation_report chose against no pruning, which reports what pruning did on any collection and chooses nothing.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from finetune_assets.core.retrieval.protocol import require_development, role

RATIOS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)


def measure(report_file: Path, ratios: tuple[float, ...] = RATIOS, *, as_delivered: bool = False,
            encoded: dict | None = None) -> dict:
    """One run's rows; `encoded` keeps the base model's vectors across runs of the same collection and base."""
    from finetune_assets.benchmark import read_beir
    from finetune_assets.core.data.pairs import document_text
    from finetune_assets.core.jsonl import read_json
    from finetune_assets.core.retrieval.metrics import evaluate_run, per_query
    from finetune_assets.core.retrieval.retrieval import encode, paired_bootstrap, top_k
    from finetune_assets.core.retrieval.sparse_retrieval import prune_max_ratio, sparsity
    from finetune_assets.resources.base_model import BaseModelResource
    from finetune_assets.resources.storage import ArtifactStorage

    bench = read_json(report_file)
    beir_dir = Path(bench["collection"])
    name = beir_dir.name.lower() if as_delivered else require_development(
        beir_dir, "choosing the document pruning on real judgements")
    settings = bench["settings"]
    if settings["model_type"] == "dense":
        raise ValueError(f"{report_file} is a dense run; pruning applies to sparse model types")
    storage = ArtifactStorage(root=str(Path(bench["work_dir"]) / "storage"))
    if as_delivered:  # the run's own choice, made on its held-out synthetic queries
        ratios = (read_json(storage.fetch(name, "evaluation_report") / "report.json")["document_prune_ratio"],)
    corpus, queries, qrels = read_beir(beir_dir)
    judged = [q for q in queries if q in qrels]
    doc_ids = [str(d["_id"]) for d in corpus]
    texts = [document_text({"title": d.get("title", ""), "text": d["text"]}) for d in corpus]
    resource = BaseModelResource(model_type=settings["model_type"], base_model=settings["base_model"])
    tuned_dir = str(storage.fetch(name, "trained_model") / "model")
    encoded = {} if encoded is None else encoded
    base_key = (str(beir_dir.resolve()), settings["model_type"], resource.model_name)
    loaders = {"base": lambda: resource.load_baseline(texts), "tuned": lambda: resource.load(tuned_dir)}
    out = {"collection": name, "role": role(beir_dir), "as_delivered": as_delivered,
           "judged_queries": sum(1 for q in judged if any(g > 0 for g in qrels[q].values())),
           "model_type": settings["model_type"], "benchmark": str(report_file), "rows": []}
    ratios = tuple(sorted({0.0, *ratios}))  # the unpruned row first: each pruned one is compared with it
    unpruned_tuned: dict[str, float] = {}
    for system, load in loaders.items():
        if system == "base" and base_key in encoded:
            documents, query_vectors = encoded[base_key]
        else:
            model = load()
            documents = encode(model, texts, batch_size=resource.batch_size, role="document")
            query_vectors = encode(model, [queries[q] for q in judged], batch_size=resource.batch_size, role="query")
            if system == "base":
                encoded[base_key] = documents, query_vectors
        for ratio in ratios:
            pruned = prune_max_ratio(documents, ratio)
            indices, _ = top_k(query_vectors, pruned, 100)
            run = {q: [doc_ids[i] for i in indices[row]] for row, q in enumerate(judged)}
            figures = evaluate_run(run, qrels, ("ndcg@10", "recall@100"))
            per = per_query(run, qrels, "ndcg@10")
            shape = sparsity(query_vectors, pruned)
            row = {"system": system, "ratio": ratio, "ndcg@10": round(figures["ndcg@10"], 4),
                   "recall@100": round(figures["recall@100"], 4), "flops": round(shape.flops, 4),
                   "avg_active_dims_document": round(shape.document_active_dims, 2)}
            if system == "tuned" and ratio == 0:
                unpruned_tuned = per
            elif system == "tuned":
                ordered = sorted(per)
                mean, low, high = paired_bootstrap([unpruned_tuned[q] for q in ordered], [per[q] for q in ordered])
                row["minus_unpruned_ndcg@10"] = {"mean": round(mean, 4), "ci95": [round(low, 4), round(high, 4)]}
            out["rows"].append(row)
    return out


def table(results: list[dict]) -> str:
    lines = ["| collection (judged queries) | system | max_ratio | nDCG@10 | recall@100 | active dims per document | "
             "FLOPS | minus unpruned (95% CI) |", "|---|---|---|---|---|---|---|---|"]
    for result in results:
        for row in result["rows"]:
            change = row.get("minus_unpruned_ndcg@10")
            shown = f"{change['mean']:+.4f} ({change['ci95'][0]:+.4f}..{change['ci95'][1]:+.4f})" if change else ""
            lines.append(f"| {result['collection']} ({result['judged_queries']}) | {row['system']} | {row['ratio']} | "
                         f"{row['ndcg@10']:.4f} | {row['recall@100']:.4f} | {row['avg_active_dims_document']:.1f} | "
                         f"{row['flops']:.2f} | {shown} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="+", type=Path, help="sparse `finetune-assets benchmark` JSON files")
    parser.add_argument("--ratios", nargs="+", type=float, default=list(RATIOS), help="max_ratio values (0 = none)")
    parser.add_argument("--as-delivered", action="store_true", help="only the ratio each run's evaluation_report "
                        "chose, against none: a report for any collection, check collections included")
    parser.add_argument("--out", type=Path, required=True, help="JSON figures; the table goes to stdout")
    args = parser.parse_args(argv)
    results, encoded = [], {}
    for report in args.benchmarks:
        try:
            results.append(measure(report, tuple(args.ratios), as_delivered=args.as_delivered, encoded=encoded))
        except ValueError as exc:
            parser.error(str(exc))
    args.out.write_text(json.dumps({"results": results, "table": table(results)}, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
