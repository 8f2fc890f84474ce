"""One table of every benchmark result: collection, model type, what the run changed, quality and cost.

    .venv/bin/python -m benchmarks.summary benchmarks/results/*.json [--out benchmarks/results/summary.md]

"changed" lists the settings and techniques that differ from today's defaults, so rows of the same collection
and model type read as before/after for each technique.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.smart_defaults import LEGACY_SETTINGS, current_defaults, settings_and_techniques


def row(path: Path, report: dict, defaults: dict) -> dict:
    values, techniques = settings_and_techniques(report, defaults)
    settings = report["settings"]
    changed = [f"{name.split('.')[-1]}={json.dumps(value)}" for name, value in sorted(techniques.items())]
    loss = report.get("effective_settings", {}).get("loss", "mnrl")  # runs before 2026-12-02 trained with mnrl
    if loss != "batch_kl" and "trained_model.loss" not in techniques:
        changed.insert(0, f"loss={loss} (no span queries)")
    if loss != "batch_kl":
        changed += [f"{name}={values[name]}" for name in LEGACY_SETTINGS if values[name] != LEGACY_SETTINGS[name]]
    if (settings.get("corpus_docs") or settings["max_docs"]) != settings["max_docs"]:
        changed.append(f"corpus_docs={settings['corpus_docs'] or 'all'}")
    if report.get("note"):  # what the run's code did differently, written when the settings cannot say it
        changed.append(report["note"])
    if report.get("superseded_by"):
        changed.append("superseded (older code)")
    results, gain = report["results"], report["tuned_minus_base_ndcg@10"]
    cpu = report.get("cpu_minutes", {})
    return {"file": path.name, "collection": Path(report["collection"]).name, "judged": report["judged_queries"],
            "model_type": settings["model_type"], "changed": ", ".join(changed) or "defaults",
            "bm25": results["bm25"]["ndcg@10"], "base": results["base"]["ndcg@10"],
            "tuned": results["tuned"]["ndcg@10"], "gain": gain["mean"], "ci": gain["ci95"],
            "recall_base": results["base"]["recall@100"], "recall_tuned": results["tuned"]["recall@100"],
            "training_cpu_min": cpu.get("trained_model"), "pipeline_wall_min": report["timings_s"]["pipeline_total"] / 60,
            "reused_queries": bool(settings.get("reused_queries_from"))}


def to_markdown(rows: list[dict]) -> str:
    lines = ["| collection (judged) | model | changed from defaults | BM25 | base | tuned | tuned - base (95% CI) | "
             "R@100 base / tuned | training CPU-min | pipeline wall min |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cpu = f"{r['training_cpu_min']:.1f}" if r["training_cpu_min"] is not None else "-"
        wall = f"{r['pipeline_wall_min']:.1f}" + ("*" if r["reused_queries"] else "")
        lines.append(f"| {r['collection']} ({r['judged']}) | {r['model_type']} | {r['changed']} | {r['bm25']:.4f} | "
                     f"{r['base']:.4f} | {r['tuned']:.4f} | {r['gain']:+.4f} ({r['ci'][0]:+.4f}..{r['ci'][1]:+.4f}) | "
                     f"{r['recall_base']:.4f} / {r['recall_tuned']:.4f} | {cpu} | {wall} |")
    lines.append("\n\\* reused an earlier run's generated queries: wall time without query generation.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="benchmark JSON files")
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    defaults = current_defaults()
    rows = []
    for path in map(Path, args.results):
        report = json.loads(path.read_text())
        if "tuned_minus_base_ndcg@10" in report:
            rows.append(row(path, report, defaults))
    rows.sort(key=lambda r: (r["collection"], r["model_type"], r["changed"] != "defaults", r["changed"]))
    table = to_markdown(rows)
    print(table)
    if args.out:
        Path(args.out).write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
