"""Every hybrid fusion setting on the real judged queries of a development collection, beside the synthetic figures.

    .venv/bin/python -m benchmarks.fusion_sweep benchmarks/results/cranfield-....json [more.json] \
        --out benchmarks/results/fusion-sweep-DATE.json

Each input is a `finetune-assets benchmark` JSON whose work dir still holds its run (the tuned model and the
evaluation report); a tuned sparse model's documents are pruned at the ratio the report chose, as delivered. For
BM25 + base and BM25 + tuned this writes, per candidate setting, nDCG@10 on the held-out synthetic queries (what
evaluation_report chooses on) and on the real judged queries, and the real figure of each selection rule in
`fusion.SELECTION_RULES`. It reads real judgements, so it refuses check collections: a
rule may be chosen from development collections only (`core/retrieval/protocol.py`).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.output import write_table
from finetune_assets.core.retrieval.protocol import require_development

SYSTEMS = ("base", "tuned")


def synthetic_figures(storage, index: str, models: dict, base_model, evaluation: dict,
                      prune_ratios: dict | None) -> dict[str, dict[str, float]]:
    """Every candidate setting's nDCG@10 on the run's held-out synthetic queries, per system, as evaluation_report
    scores them (the tuned model's documents pruned at the ratio it chose)."""
    from finetune_assets.core.data.pairs import document_text
    from finetune_assets.core.jsonl import read_jsonl
    from finetune_assets.core.retrieval.evaluation import compare_systems
    from finetune_assets.stages.evaluation.evaluation_report import held_out_judgements

    documents = list(read_jsonl(storage.fetch(index, "raw_corpus") / "documents.jsonl"))
    queries, qrels = held_out_judgements(list(read_jsonl(storage.fetch(index, "training_pairs") / "held_out.jsonl")))
    comparison = compare_systems([d["id"] for d in documents], [document_text(d) for d in documents], queries, qrels,
                                 models, batch_size=base_model.batch_size, document_prune_ratios=prune_ratios)
    figures = {}
    for system in SYSTEMS:
        comparison.add_hybrid(system, qrels)
        figures[system] = {c["setting"]: c["ndcg@10"] for c in comparison.hybrid[f"hybrid_{system}"]["choice"]["candidates"]}
    return figures


def sweep(report_file: Path) -> dict:
    from finetune_assets.benchmark import read_beir
    from finetune_assets.core.data.pairs import document_text
    from finetune_assets.core.jsonl import read_json
    from finetune_assets.core.retrieval.evaluation import compare_systems
    from finetune_assets.core.retrieval.fusion import (
        SELECTION_RULE,
        SELECTION_RULES,
        candidate_settings,
        fuse_runs,
        select,
    )
    from finetune_assets.core.retrieval.metrics import evaluate_run, per_query
    from finetune_assets.core.retrieval.retrieval import paired_bootstrap
    from finetune_assets.resources.base_model import BaseModelResource
    from finetune_assets.resources.storage import ArtifactStorage

    bench = read_json(report_file)
    beir_dir = Path(bench["collection"])
    name = require_development(beir_dir, "a fusion sweep on real judgements")
    settings = bench["settings"]
    storage = ArtifactStorage(root=str(Path(bench["work_dir"]) / "storage"))
    index = beir_dir.name.lower()
    evaluation = read_json(storage.fetch(index, "evaluation_report") / "report.json")
    corpus, queries, qrels = read_beir(beir_dir)
    texts = [document_text({"title": d.get("title", ""), "text": d["text"]}) for d in corpus]
    base_model = BaseModelResource(model_type=settings["model_type"], base_model=settings["base_model"])
    models = {"base": base_model.load_baseline(texts),
              "tuned": base_model.load(str(storage.fetch(index, "trained_model") / "model"))}
    ratio = evaluation.get("document_prune_ratio", 0.0)  # the tuned sparse model's documents as delivered
    prune_ratios = {"tuned": ratio} if ratio else None
    comparison = compare_systems([str(d["_id"]) for d in corpus], texts, queries, qrels, models,
                                 batch_size=base_model.batch_size, document_prune_ratios=prune_ratios)
    bm25 = comparison.scored_runs["bm25"]
    out = {"collection": name, "judged_queries": comparison.judged_queries, "model_type": settings["model_type"],
           "benchmark": str(report_file), "single": {s: comparison.results[s]["ndcg@10"]
                                                     for s in ("bm25", "base", "tuned")}, "systems": {}}
    fused_runs = {}
    synthetic_by_system = {system: {c["setting"]: c["ndcg@10"]
                                    for c in evaluation["hybrid"][f"hybrid_{system}"]["choice"]["candidates"]}
                           for system in SYSTEMS}
    if any(s.name not in synthetic_by_system[system] for s in candidate_settings() for system in SYSTEMS):
        # The run's report predates some candidates: score them all again on its held-out synthetic queries.
        synthetic_by_system = synthetic_figures(storage, index, models, base_model, evaluation, prune_ratios)
    for system in SYSTEMS:
        model = comparison.scored_runs[system]
        if system in comparison.sparsity:  # neural_sparse returns only documents sharing a term
            model = {q: [(d, s) for d, s in docs if s > 0] for q, docs in model.items()}
        synthetic = synthetic_by_system[system]
        rows, runs = [], {}
        for setting in candidate_settings():  # each candidate fused once; the rules below reuse its run
            runs[setting.name] = fuse_runs(bm25, model, setting)
            real = evaluate_run(runs[setting.name], qrels, ("ndcg@10",))["ndcg@10"]
            rows.append({"setting": setting.name, **setting.to_dict(), "synthetic": synthetic.get(setting.name),
                         "real": round(real, 4)})
        real_by_name = {r["setting"]: r["real"] for r in rows}
        figures = {s: v for s, v in synthetic.items() if s in real_by_name}
        picks = {rule: select(figures, rule).name for rule in SELECTION_RULES}
        rules = {rule: {"chosen": name, "real": real_by_name[name],  # and query by query, for seeds pooled later
                        "per_query": {q: round(v, 4) for q, v in per_query(runs[name], qrels, "ndcg@10").items()}}
                 for rule, name in picks.items()}
        fused_runs[system] = runs[picks[SELECTION_RULE]]
        best = max(rows, key=lambda r: r["real"])
        out["systems"][system] = {"candidates": rows, "rules": rules,
                                  "best_on_real": {"setting": best["setting"], "real": best["real"]}}
    # What BM25 + tuned fused by today's rule adds over each alternative, per judged query (paired bootstrap).
    per = {name: per_query(run, qrels, "ndcg@10") for name, run in
           {**comparison.runs, **{f"hybrid_{s}": run for s, run in fused_runs.items()}}.items()}
    judged = sorted(per["hybrid_tuned"])
    out["rule"] = SELECTION_RULE
    out["hybrid_tuned_minus"] = {}
    for other in ("bm25", "tuned", "hybrid_base"):
        mean, low, high = paired_bootstrap([per[other][q] for q in judged], [per["hybrid_tuned"][q] for q in judged])
        out["hybrid_tuned_minus"][other] = {"mean": round(mean, 4), "ci95": [round(low, 4), round(high, 4)]}
    return out


# The families tabulated by the model's weight: (technique, combination or None for RRF, heading).
WEIGHT_TABLES = (("rrf", None, "Reciprocal rank fusion (0.5 = equal, no weights sent)"),
                 ("min_max", "arithmetic_mean", "min_max + arithmetic mean (OpenSearch's default at 0.5)"),
                 ("z_score", "arithmetic_mean", "z_score + arithmetic mean (OpenSearch 3.0+)"))


def by_weight(candidates: list[dict], technique: str, combination: str | None = None) -> dict[float, float]:
    """The real nDCG@10 of one fusion family's candidates, by the model's weight."""
    return {(c.get("weights") or [0.5, 0.5])[1]: c["real"] for c in candidates
            if c.get("technique") == technique and c.get("combination") == combination}


def markdown(sweeps: list[dict]) -> str:
    from finetune_assets.core.retrieval.fusion import SELECTION_RULES

    lines = ["| collection | model | queries | BM25 | base | tuned | fusion | " + " | ".join(SELECTION_RULES) +
             " | best on real (not a rule) |", "|---|---|---|---|---|---|---|" + "---|" * (len(SELECTION_RULES) + 1)]
    for s in sweeps:
        single = s["single"]
        for system, info in s["systems"].items():
            cells = [f"{info['rules'][r]['real']:.4f}" for r in SELECTION_RULES]
            lines.append(f"| {s['collection']} | {s['model_type']} | {s['judged_queries']} | {single['bm25']:.4f} | "
                         f"{single['base']:.4f} | {single['tuned']:.4f} | BM25 + {system} | " + " | ".join(cells) +
                         f" | {info['best_on_real']['real']:.4f} ({info['best_on_real']['setting']}) |")
    for technique, combination, heading in WEIGHT_TABLES:
        tables = {(s["collection"], s["model_type"], system): by_weight(info["candidates"], technique, combination)
                  for s in sweeps for system, info in s["systems"].items()}
        weights = sorted({w for table in tables.values() for w in table})
        if not weights:
            continue
        lines += ["", f"{heading}, by the model's weight (BM25 gets the rest):", "",
                  "| collection | model | fusion | " + " | ".join(f"{w:g}" for w in weights) + " |",
                  "|---|---|---|" + "---|" * len(weights)]
        for (collection, model_type, system), table in tables.items():
            lines.append(f"| {collection} | {model_type} | BM25 + {system} | " +
                         " | ".join(f"{table[w]:.4f}" if w in table else "" for w in weights) + " |")
    for s in sweeps:
        lines.append(f"\n{s['collection']} {s['model_type']}, BM25 + tuned by today's rule ({s['rule']}) minus: " +
                     ", ".join(f"{other} {g['mean']:+.4f} ({g['ci95'][0]:+.4f}..{g['ci95'][1]:+.4f})"
                               for other, g in s["hybrid_tuned_minus"].items()))
    for rule in SELECTION_RULES:
        gains = [s["systems"]["tuned"]["rules"][rule]["real"] - max(s["single"].values()) for s in sweeps]
        lines.append(f"\n{rule}: BM25 + tuned minus the best single system, mean {statistics.mean(gains):+.4f} "
                     f"(per run: {', '.join(f'{g:+.4f}' for g in gains)})")
    lines += ["", "Each rule's BM25 + tuned minus RRF at equal weights, per collection over its runs (each judged "
              "query's figure averaged over the runs, then a paired bootstrap over the queries):", "",
              "| collection | runs | fusion | " + " | ".join(SELECTION_RULES) + " |",
              "|---|---|---|" + "---|" * len(SELECTION_RULES)]
    for (collection, model_type), runs in group_runs(sweeps).items():
        for system in ("base", "tuned"):
            cells = []
            for rule in SELECTION_RULES:
                mean, low, high = rule_minus_rrf(runs, system, rule)
                cells.append(f"{mean:+.4f} ({low:+.4f}..{high:+.4f})")
            lines.append(f"| {collection} {model_type} | {len(runs)} | BM25 + {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def group_runs(sweeps: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """The sweeps by (collection, model type): the runs (seeds) of one collection share its judged queries."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for s in sweeps:
        groups.setdefault((s["collection"], s["model_type"]), []).append(s)
    return groups


def rule_minus_rrf(runs: list[dict], system: str, rule: str) -> tuple[float, float, float]:
    """BM25 + `system` fused by `rule` minus by RRF at equal weights, over runs of one collection: each query's
    nDCG@10 averaged over the runs, then the mean difference with its paired-bootstrap 95% interval."""
    from finetune_assets.core.retrieval.retrieval import paired_bootstrap

    queries = sorted(runs[0]["systems"][system]["rules"]["rrf"]["per_query"])

    def averaged(name: str) -> list[float]:
        return [statistics.mean(r["systems"][system]["rules"][name]["per_query"][q] for r in runs) for q in queries]

    return paired_bootstrap(averaged("rrf"), averaged(rule))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="+", type=Path, help="benchmark JSON files whose work dirs still exist")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write (a .md table beside it)")
    args = parser.parse_args(argv)
    try:
        sweeps = [sweep(path) for path in args.benchmarks]
    except ValueError as error:
        parser.error(str(error))
    args.out.write_text(json.dumps({"sweeps": sweeps}, indent=2) + "\n", encoding="utf-8")
    write_table(args.out, markdown(sweeps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
