"""Which search the held-out synthetic queries should deliver: today's rule and margin rules, on real judgements.

    .venv/bin/python -m benchmarks.search_choice benchmarks/results/cranfield-....json [more.json] \
        --out benchmarks/results/search-choice-DATE.json

`search_pipeline` delivers the best of the hybrid query, the model alone and BM25 on the held-out synthetic queries
(`choose_search`). Synthetic queries share words with their documents, so they favour BM25 and the hybrid query.
Each input is a `finetune-assets benchmark` JSON; this takes every row's nDCG@10 on the held-out synthetic queries
(`delivered.held_out_synthetic`, or the work dir's evaluation report for runs from before it was recorded) and on
the real queries, and scores rules that could replace today's: always one search, or the hybrid query only when it
leads the model alone on the synthetic queries by at least a margin. It reads real judgements, so it refuses check
collections (`core/retrieval/protocol.py`).
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.output import write_table
from finetune_assets.core.retrieval.protocol import require_development

MARGINS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.10)
SEARCHES = ("hybrid", "model", "bm25")


def held_out_figures(bench: dict) -> tuple[int, dict[str, float]]:
    """(queries, nDCG@10 per row) on the run's held-out synthetic queries."""
    from finetune_assets.benchmark import partition_name
    from finetune_assets.core.jsonl import read_json
    from finetune_assets.resources.storage import ArtifactStorage, ArtifactStorageError, MissingArtifact

    if held_out := bench.get("delivered", {}).get("held_out_synthetic"):
        return held_out["queries"], held_out["ndcg@10"]
    storage = ArtifactStorage(root=str(Path(bench["work_dir"]) / "storage"))
    try:
        report = read_json(storage.fetch(partition_name(Path(bench["collection"])), "evaluation_report") / "report.json")
    except (MissingArtifact, ArtifactStorageError) as error:
        raise ValueError(f"{bench['collection']}: the benchmark JSON has no held-out synthetic figures and its work "
                         f"dir has no evaluation report ({error})") from error
    return report["judged_queries"], {name: values["ndcg@10"] for name, values in report["results"].items()}


def rule_choices(synthetic: dict[str, float], system: str = "tuned") -> dict[str, str]:
    """The search each rule delivers, from the synthetic figures; `today` is search_pipeline's own rule."""
    from finetune_assets.stages.deploy.search_pipeline import choose_search, report_row

    report = {"results": {name: {"ndcg@10": value} for name, value in synthetic.items()}, "judged_queries": 0}
    choices = {"today": choose_search(report, {"system": system})[0]}
    choices.update({f"always {search}": search for search in SEARCHES})
    lead = synthetic[report_row("hybrid", system)] - synthetic[report_row("model", system)]
    choices.update({f"hybrid if it leads the model by >= {margin:g}": "hybrid" if lead >= margin else "model"
                    for margin in MARGINS})
    return choices


def analyse(report_file: Path) -> dict:
    from finetune_assets.stages.deploy.search_pipeline import report_row

    bench = json.loads(report_file.read_text())
    name = require_development(bench["collection"], "a choice between searches on real judgements")
    queries, synthetic = held_out_figures(bench)
    real = {row: values["ndcg@10"] for row, values in bench["results"].items()}
    rows = {search: report_row(search, "tuned") for search in SEARCHES}
    choices = rule_choices(synthetic)
    return {"collection": name, "model_type": bench["settings"]["model_type"], "benchmark": str(report_file),
            "judged_queries": bench["judged_queries"], "held_out_queries": queries,
            "synthetic": {search: round(synthetic[row], 4) for search, row in rows.items()},
            "real": {search: real[row] for search, row in rows.items()},
            "rules": {rule: {"search": search, "real": real[rows[search]]} for rule, search in choices.items()}}


def markdown(runs: list[dict]) -> str:
    lines = ["| collection | model | held-out synthetic: hybrid / model / BM25 | real: hybrid / model / BM25 |",
             "|---|---|---|---|"]
    for run in runs:
        lines.append(f"| {run['collection']} | {run['model_type']} | " +
                     " / ".join(f"{run['synthetic'][s]:.4f}" for s in SEARCHES) + " | " +
                     " / ".join(f"{run['real'][s]:.4f}" for s in SEARCHES) + " |")
    lines += ["", "| rule | " + " | ".join(f"{r['collection']} {r['model_type']}" for r in runs) +
              " | mean real nDCG@10 | mean below each run's best |", "|---|" + "---|" * (len(runs) + 2)]
    for rule in runs[0]["rules"]:
        picks = [run["rules"][rule] for run in runs]
        shortfall = [max(run["real"].values()) - pick["real"] for run, pick in zip(runs, picks)]
        lines.append(f"| {rule} | " + " | ".join(f"{p['search']} {p['real']:.4f}" for p in picks) +
                     f" | {statistics.mean(p['real'] for p in picks):.4f} | {statistics.mean(shortfall):.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="+", type=Path, help="finetune-assets benchmark JSON files")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write (a .md table beside it)")
    args = parser.parse_args(argv)
    try:
        runs = [analyse(path) for path in args.benchmarks]
    except ValueError as error:
        parser.error(str(error))
    args.out.write_text(json.dumps({"runs": runs}, indent=2) + "\n", encoding="utf-8")
    write_table(args.out, markdown(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
