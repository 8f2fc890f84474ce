"""Materialize mined_negatives and evaluation_report again on a finished benchmark run's storage, with this
checkout's code, and print each step's wall seconds and CPU minutes (as `finetune-assets benchmark` counts them)
beside the evaluation figures of the version it replaces.

    python benchmarks/results/check-dense-lisa-time-2026-12-07/restage.py <benchmark work dir> <index> --out X.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("index")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from dagster import DagsterInstance, materialize

    from finetune_assets.benchmark import CpuClock, _step_spans
    from finetune_assets.core.jsonl import read_json
    from finetune_assets.definitions import all_assets, defs
    from finetune_assets.resources.storage import ArtifactStorage

    storage = ArtifactStorage(root=str(args.work_dir / "storage"))
    before = read_json(storage.fetch(args.index, "evaluation_report") / "report.json")
    selection = [a for a in all_assets if a.key.path[-1] in ("mined_negatives", "evaluation_report")]
    with DagsterInstance.ephemeral() as instance, CpuClock() as clock:
        instance.add_dynamic_partitions("index", [args.index])
        result = materialize(all_assets, selection=selection, partition_key=args.index,
                             resources={**defs.resources, "storage": storage}, instance=instance)
        spans = _step_spans(instance, result.run_id)
        reused = instance.get_latest_materialization_event(
            selection[-1].key).asset_materialization.metadata["base_embeddings_reused"].value
    after = read_json(storage.fetch(args.index, "evaluation_report") / "report.json")
    figures = {
        "wall_s": {step: round(end - start, 2) for step, (start, end) in spans.items()},
        "cpu_minutes": {step: round(clock.between(start, end) / 60, 2) for step, (start, end) in spans.items()},
        "base_embeddings_reused": reused, "documents": after["documents"],
        "seconds_in_compare_systems": {"before": before["seconds"], "after": after["seconds"]},
        "ndcg@10": {"before": {k: round(v["ndcg@10"], 4) for k, v in before["results"].items()},
                    "after": {k: round(v["ndcg@10"], 4) for k, v in after["results"].items()}},
    }
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
