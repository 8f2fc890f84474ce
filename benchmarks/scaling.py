"""Time and memory of the stages after query generation as the sample grows: wall seconds, CPU seconds and peak
RSS per stage, at several sample sizes of one large corpus, and the ratios between consecutive sizes.

    PYTHONPATH=. .venv/bin/python -m benchmarks.scaling ../shared/ir-data/wiki-paragraphs \
        --sizes 2000 8000 32000 100000 --out benchmarks/results/scaling-DATE.json

Queries cost little here: a fixed number of sampled documents (--generated-documents, the same at every size)
get generated queries, which give the held-out queries evaluation_report needs, and every sampled document
gives its title and two of its sentences (training_pairs title_queries and span_queries). Query generation is
timed but is not one of the measured stages: its cost does not grow with the sample. Every stage runs in its own
process, so its peak RSS (the process and the subprocesses it waits for, e.g. the training entry point) is its own;
training is capped at --max-steps so the run measures the data stages, not the length of training. A stage that
runs past --stage-timeout stops that size and every larger one.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from finetune_assets.core.cost.smart_defaults import batch_kl_lookup
from finetune_assets.core.training.dense_training import Hyperparameters

STAGES = ("raw_corpus", "training_pairs", "mined_negatives", "trained_model", "evaluation_report")
QUERY_STAGE = "bedrock_batch_outputs"  # run after raw_corpus for a fixed number of documents, not measured
INDEX = "scaling"
# Growth allowed per 4x sample (linear with room for noise) and the memory a 100k sample may take on 24 GiB.
TIME_GROWTH_TARGET = 4.5
PEAK_RSS_TARGET_MIB = 8 * 1024


def _base_model(model_type: str):
    """The code location's base_model resource (FINETUNE_BASE_MODEL), for `model_type`."""
    from finetune_assets.definitions import defs
    from finetune_assets.resources.base_model import BaseModelResource

    configured = defs.resources["base_model"]
    return BaseModelResource(model_type=model_type, max_seq_length=configured.max_seq_length,
                             batch_size=configured.batch_size,
                             base_model=configured.base_model if configured.model_type == model_type else "")


def _resources(work: Path, model_type: str) -> dict:
    from finetune_assets.definitions import defs
    from finetune_assets.resources.storage import ArtifactStorage

    return {**defs.resources, "storage": ArtifactStorage(root=str(work / "storage")),
            "base_model": _base_model(model_type)}


def stage_config(stage: str, corpus: Path, size: int, max_steps: int, generated: int,
                 checkpointing: bool = False, attention_dropout: float | None = None) -> dict:
    """The run config of one stage: the sample size, cheap queries, capped training."""
    return {"raw_corpus": {"source": str(corpus), "max_documents": size},
            QUERY_STAGE: {"max_documents": generated},
            "training_pairs": {"title_queries": True, "span_queries": 2},
            "trained_model": {"max_steps": max_steps, "gradient_checkpointing": checkpointing,
                              "attention_dropout": attention_dropout}}.get(stage, {})


def run_stage(stage: str, work: Path, corpus: Path, size: int, model_type: str, max_steps: int,
              generated: int, checkpointing: bool = False, attention_dropout: float | None = None) -> None:
    """Materialize one stage of the partition `INDEX` in this process (its upstream artifacts are on disk)."""
    from dagster import DagsterInstance, materialize

    from finetune_assets.definitions import all_assets

    selection = [a for a in all_assets if a.key.path[-1] == stage]
    if not selection:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    config = stage_config(stage, corpus, size, max_steps, generated, checkpointing, attention_dropout)
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("index", [INDEX])
        materialize(all_assets, selection=selection, partition_key=INDEX, resources=_resources(work, model_type),
                    run_config={"ops": {stage: {"config": config}}} if config else None, instance=instance)


def measure(command: list[str], timeout: float, log: Path) -> dict:
    """Wall seconds, CPU seconds (user + system, waited-for subprocesses included) and peak RSS of one command;
    `timed_out` when it was stopped at `timeout` seconds."""
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline, timed_out = started + timeout, False
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline and not timed_out:
                os.killpg(process.pid, 9)
                timed_out = True
            time.sleep(0.2)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_s": round(time.perf_counter() - started, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            # Linux reports ru_maxrss in KiB: the largest of the process and its reaped descendants.
            "peak_rss_mib": round(usage.ru_maxrss / 1024), "exit_code": process.returncode, "timed_out": timed_out}


def ratios(sizes: dict[str, dict]) -> dict[str, dict]:
    """Per pair of consecutive completed sizes, each stage's wall, CPU and peak RSS ratio, and the sample ratio."""
    done = [s for s in sorted(sizes, key=int) if all(not v.get("failed") for v in sizes[s].values())]
    out = {}
    for small, large in zip(done, done[1:]):
        pair = {"sample_ratio": round(int(large) / int(small), 2)}
        for stage in STAGES:
            a, b = sizes[small].get(stage), sizes[large].get(stage)
            if a and b:
                pair[stage] = {key: round(b[key] / a[key], 2) if a[key] else None
                               for key in ("wall_s", "cpu_s", "peak_rss_mib")}
        out[f"{large}/{small}"] = pair
    return out


def markdown(report: dict) -> str:
    lines = ["| size | stage | wall s | CPU s | peak RSS MiB |", "|---:|---|---:|---:|---:|"]
    for size, stages in sorted(report["sizes"].items(), key=lambda item: int(item[0])):
        for stage, figures in stages.items():
            note = " (stopped)" if figures.get("timed_out") else (" (failed)" if figures.get("failed") else "")
            lines.append(f"| {size} | {stage}{note} | {figures['wall_s']} | {figures['cpu_s']} | "
                         f"{figures['peak_rss_mib']} |")
    if report["ratios"]:
        lines += ["", "| sizes | stage | wall x | CPU x | peak RSS x |", "|---|---|---:|---:|---:|"]
        for pair, figures in report["ratios"].items():
            for stage in STAGES:
                if stage in figures:
                    f = figures[stage]
                    lines.append(f"| {pair} | {stage} | {f['wall_s']} | {f['cpu_s']} | {f['peak_rss_mib']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="a BEIR folder (its corpus.jsonl) or a corpus .jsonl file")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000, 100000])
    parser.add_argument("--model-type", default="dense", choices=["dense", "sparse"])
    parser.add_argument("--max-steps", type=int, default=20, help="training steps per size (the data stages are "
                        "what is measured)")
    parser.add_argument("--generated-documents", type=int, default=40, help="sampled documents that get "
                        "generated queries (the same number at every size; they give the held-out queries)")
    parser.add_argument("--stage-timeout", type=float, default=1800.0, help="seconds before a stage is stopped "
                        "(that size and larger ones are then skipped)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="train with trained_model's "
                        "gradient_checkpointing (the training step's memory against its time)")
    parser.add_argument("--attention-dropout", type=float, help="trained_model's attention_dropout (default: the "
                        "recipe default for the model type)")
    parser.add_argument("--stages", nargs="+", choices=[*STAGES, QUERY_STAGE],
                        help="run only these stages (their upstream artifacts must be in the work dir already); "
                        "figures are merged into an existing --out file")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/scaling-work"))
    parser.add_argument("--out", type=Path, required=True, help="JSON figures; the markdown table goes beside it")
    parser.add_argument("--run-stage", help=argparse.SUPPRESS)  # internal: one stage in this process
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    corpus = args.corpus / "corpus.jsonl" if args.corpus.is_dir() else args.corpus
    if not corpus.is_file():
        parser.error(f"no corpus at {corpus}: pass a BEIR folder or a .jsonl file")
    if any(size < 10 for size in args.sizes):
        parser.error(f"--sizes must be at least 10 documents each, got {args.sizes}")
    if args.run_stage:
        run_stage(args.run_stage, args.work_dir, corpus, args.size, args.model_type, args.max_steps,
                  args.generated_documents, args.gradient_checkpointing, args.attention_dropout)
        return 0
    earlier = json.loads(args.out.read_text(encoding="utf-8")) if args.stages and args.out.is_file() else {}
    report = {"corpus": str(corpus), "model_type": args.model_type,
              "base_model": _base_model(args.model_type).model_name, "max_steps": args.max_steps,
              "gradient_checkpointing": args.gradient_checkpointing,
              "attention_dropout": Hyperparameters(model_type=args.model_type,
                                                   attention_dropout=args.attention_dropout).attention_dropout,
              "candidates_per_query": batch_kl_lookup(args.model_type).candidates_per_query,
              "queries": f"title + 2 span queries per sampled document; generated queries for "
                         f"{args.generated_documents} documents", "cpu_count": os.cpu_count(),
              "targets": {"time_growth_per_4x": TIME_GROWTH_TARGET, "peak_rss_mib_at_100k": PEAK_RSS_TARGET_MIB},
              "sizes": earlier.get("sizes", {}), "ratios": {}}
    if "query_generation" in earlier:
        report["query_generation"] = earlier["query_generation"]
    for size in sorted(args.sizes):
        work = args.work_dir / str(size)
        work.mkdir(parents=True, exist_ok=True)
        figures: dict[str, dict] = report["sizes"].setdefault(str(size), {})
        stopped = False
        for stage in (STAGES[0], QUERY_STAGE, *STAGES[1:]):
            if args.stages and stage not in args.stages:
                continue
            command = [sys.executable, "-m", "benchmarks.scaling", str(corpus), "--run-stage", stage, "--size",
                       str(size), "--work-dir", str(work), "--model-type", args.model_type, "--max-steps",
                       str(args.max_steps), "--generated-documents", str(args.generated_documents),
                       "--out", str(args.out)] + (["--gradient-checkpointing"] if args.gradient_checkpointing else [])
            if args.attention_dropout is not None:
                command += ["--attention-dropout", str(args.attention_dropout)]
            result = measure(command, args.stage_timeout, work / f"{stage}.log")
            result["failed"] = result["exit_code"] != 0
            if stage == QUERY_STAGE:
                report.setdefault("query_generation", {})[str(size)] = result
            else:
                figures[stage] = result
            print(f"{size} {stage}: {result}", flush=True)
            report["ratios"] = ratios(report["sizes"])
            args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            args.out.with_suffix(".md").write_text(markdown(report), encoding="utf-8")
            if result["failed"]:
                stopped = True
                break
        if stopped:
            print(f"stopping at {size} documents: {stage} failed or ran past {args.stage_timeout:.0f} s "
                  f"(log: {work / (stage + '.log')})", flush=True)
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
