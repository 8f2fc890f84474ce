"""A third sub-query in the hybrid query: BM25 + the tuned dense model + the untuned sparse model, on real judgements.

    .venv/bin/python -m benchmarks.three_way_hybrid benchmarks/results/cranfield-....json [more.json] \
        --out benchmarks/results/three-way-DATE.json

Each input is a dense `finetune-assets benchmark` JSON whose work dir still holds its tuned model. OpenSearch's
`hybrid` query takes up to five sub-queries and the score-ranker-processor fuses them all by reciprocal rank fusion,
so an index could carry the tuned dense field and an untuned SPLADE field (`neural_sparse`, documents pruned as the
ingest pipeline prunes them) side by side. This scores such combinations by RRF at equal weights (rank_constant
60, each sub-query's top 100) beside BM25 + tuned, with paired intervals against the tuned model alone and against
BM25 + tuned. `--rank-constants` also scores BM25 + base and BM25 + tuned at other values of the processor's
rank_constant (a parameter of its `rrf` combination, 60 by default). It reads real judgements, so it refuses check
collections (`core/retrieval/protocol.py`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.output import write_table
from finetune_assets.core.retrieval.fusion import DEPTH, RANK_CONSTANT, reciprocal_rank_fusion
from finetune_assets.core.retrieval.protocol import require_development

# Sub-query combinations scored, each a tuple of systems fused by RRF; the first two are today's hybrid rows.
COMBINATIONS = (("bm25", "base"), ("bm25", "tuned"), ("bm25", "base", "splade"), ("bm25", "tuned", "splade"),
                ("tuned", "splade"), ("bm25", "splade"))
SPLADE_PRUNE_RATIO = 0.1  # the sparse types' default document pruning (base_model.document_prune_ratio)


def rrf(runs: list[dict[str, list[tuple[str, float]]]], rank_constant: int = RANK_CONSTANT) -> dict[str, list[str]]:
    """Reciprocal rank fusion of any number of scored runs at equal weights, as the score-ranker-processor fuses
    a hybrid query's sub-queries: sum of 1 / (rank_constant + rank) over each sub-query's top DEPTH results."""
    fused = {}
    for query in sorted(set().union(*runs)):
        scores = reciprocal_rank_fusion([run.get(query, [])[:DEPTH] for run in runs], [1.0] * len(runs),
                                        rank_constant=rank_constant)
        fused[query] = [doc for doc, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))][:DEPTH]
    return fused


def probe(report_file: Path, rank_constants: tuple[int, ...] = ()) -> dict:
    from finetune_assets.benchmark import read_beir
    from finetune_assets.core.data.pairs import document_text
    from finetune_assets.core.jsonl import read_json
    from finetune_assets.core.retrieval.evaluation import compare_systems
    from finetune_assets.core.retrieval.metrics import evaluate_run, per_query
    from finetune_assets.core.retrieval.retrieval import paired_bootstrap
    from finetune_assets.resources.base_model import BaseModelResource
    from finetune_assets.resources.storage import ArtifactStorage

    bench = read_json(report_file)
    beir_dir = Path(bench["collection"])
    name = require_development(beir_dir, "a hybrid probe on real judgements")
    settings = bench["settings"]
    if settings["model_type"] != "dense":
        raise ValueError(f"{report_file}: a {settings['model_type']} run; the third sub-query probe needs a dense one")
    storage = ArtifactStorage(root=str(Path(bench["work_dir"]) / "storage"))
    index = beir_dir.name.lower()
    corpus, queries, qrels = read_beir(beir_dir)
    texts = [document_text({"title": d.get("title", ""), "text": d["text"]}) for d in corpus]
    dense = BaseModelResource(model_type="dense", base_model=settings["base_model"])
    sparse = BaseModelResource(model_type="sparse")
    models = {"base": dense.load_baseline(texts),
              "tuned": dense.load(str(storage.fetch(index, "trained_model") / "model")),
              "splade": sparse.load_baseline(texts)}
    comparison = compare_systems([str(d["_id"]) for d in corpus], texts, queries, qrels, models,
                                 batch_size=dense.batch_size, document_prune_ratios={"splade": SPLADE_PRUNE_RATIO})
    scored = dict(comparison.scored_runs)
    # a neural_sparse sub-query returns only documents sharing a term with the query (score > 0)
    scored["splade"] = {q: [(d, s) for d, s in docs if s > 0] for q, docs in scored["splade"].items()}
    per = {system: comparison.ndcg_per_query[system] for system in ("bm25", "base", "tuned", "splade")}
    rows = {}
    for combination in COMBINATIONS:
        label = " + ".join(combination)
        run = rrf([scored[system] for system in combination])
        rows[label] = round(evaluate_run(run, qrels, ("ndcg@10",))["ndcg@10"], 4)
        per[label] = per_query(run, qrels, "ndcg@10")
    judged = sorted(per["tuned"])
    paired = {}
    for label in (" + ".join(c) for c in COMBINATIONS):
        for baseline in ("tuned", "bm25 + tuned"):
            if label != baseline:
                mean, low, high = paired_bootstrap([per[baseline][q] for q in judged], [per[label][q] for q in judged])
                paired[f"{label} minus {baseline}"] = {"mean": round(mean, 4), "ci95": [round(low, 4), round(high, 4)]}
    by_constant = {}  # the two-sub-query rows at other rank constants
    for constant in rank_constants:
        for system in ("base", "tuned"):
            run = rrf([scored["bm25"], scored[system]], constant)
            by_constant.setdefault(f"bm25 + {system}", {})[str(constant)] = round(
                evaluate_run(run, qrels, ("ndcg@10",))["ndcg@10"], 4)
    return {"collection": name, "judged_queries": comparison.judged_queries, "benchmark": str(report_file),
            "by_rank_constant": by_constant,
            "single": {s: round(comparison.results[s]["ndcg@10"], 4) for s in ("bm25", "base", "tuned", "splade")},
            "splade_sparsity": comparison.sparsity.get("splade"), "fused": rows, "paired": paired}


def markdown(probes: list[dict]) -> str:
    labels = [" + ".join(c) for c in COMBINATIONS]
    lines = ["| collection (judged) | BM25 | base | tuned | SPLADE-tiny | " + " | ".join(labels) +
             " | bm25 + tuned + splade minus tuned / minus bm25 + tuned (95% CI) |",
             "|---|---|---|---|---|" + "---|" * len(labels) + "---|"]
    for p in probes:
        s = p["single"]
        gains = [p["paired"][f"bm25 + tuned + splade minus {b}"] for b in ("tuned", "bm25 + tuned")]
        shown = " / ".join(f"{g['mean']:+.4f} ({g['ci95'][0]:+.4f}..{g['ci95'][1]:+.4f})" for g in gains)
        lines.append(f"| {p['collection']} ({p['judged_queries']}) | {s['bm25']:.4f} | {s['base']:.4f} | "
                     f"{s['tuned']:.4f} | {s['splade']:.4f} | " + " | ".join(f"{p['fused'][lb]:.4f}" for lb in labels)
                     + f" | {shown} |")
    constants = sorted({int(c) for p in probes for row in p.get("by_rank_constant", {}).values() for c in row})
    if constants:
        lines += ["", "| collection | fusion | " + " | ".join(f"rank_constant {c}" for c in constants) + " |",
                  "|---|---|" + "---|" * len(constants)]
        for p in probes:
            for label, row in p["by_rank_constant"].items():
                lines.append(f"| {p['collection']} | {label} | " + " | ".join(
                    f"{row[str(c)]:.4f}" if str(c) in row else "" for c in constants) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="dense benchmark JSONs of development collections")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write (a .md table beside it)")
    parser.add_argument("--rank-constants", type=int, nargs="*", default=[],
                        help="also score the two-sub-query rows by RRF at these rank constants")
    args = parser.parse_args(argv)
    if any(c < 1 for c in args.rank_constants):
        parser.error("--rank-constants: OpenSearch takes a rank_constant of 1 or more")
    probes = []
    for report in args.reports:
        probes.append(probe(report, tuple(args.rank_constants)))
        args.out.write_text(json.dumps(probes, indent=2), encoding="utf-8")
    write_table(args.out, markdown(probes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
