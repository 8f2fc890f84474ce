"""`finetune-assets`: the demo, benchmarks and other tasks that run without the Dagster UI."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from finetune_assets.core.model_types import MODEL_TYPES

DEMO_INDEX = "python-docs"


def _demo(args: argparse.Namespace) -> int:
    from finetune_assets.core.data.demo_corpus import describe, write_python_docs_corpus
    from finetune_assets.instance import add_index_partition, ensure_dagster_home

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = Path(os.environ.setdefault("FINETUNE_STORAGE_ROOT", str(Path(args.storage).resolve())))
    home = ensure_dagster_home(args.dagster_home)
    corpus_file, count = write_python_docs_corpus(root / "corpora" / DEMO_INDEX / "python_docs.jsonl")
    print(f"demo corpus: {count} documents ({describe()}) in {corpus_file}")
    add_index_partition(DEMO_INDEX)
    config = {"ops": {"raw_corpus": {"config": {"max_documents": args.max_docs}},
                      "trained_model": {"config": {"epochs": args.epochs}}}}
    command = ["dagster", "asset", "materialize", "-m", "finetune_assets.definitions", "--select", "*",
               "--partition", DEMO_INDEX, "--config-json", json.dumps(config)]
    print(f"DAGSTER_HOME={home}\n$ {' '.join(command[:-1])} '{command[-1]}'", flush=True)
    started = time.perf_counter()
    code = subprocess.call([str(Path(sys.executable).with_name("dagster")), *command[1:]])
    minutes = (time.perf_counter() - started) / 60
    report = root / "artifacts" / DEMO_INDEX / "evaluation_report"
    if code != 0:
        print(f"\nthe demo run failed after {minutes:.1f} min (exit {code}); the log above says which step")
        return code
    print(f"\ndone in {minutes:.1f} min")
    print(f"report: {report / 'report.md'} (and report.json, metrics.png)")
    print((report / "report.md").read_text())
    print(f"model:  {root / 'artifacts' / DEMO_INDEX / 'trained_model' / 'model'}")
    print(f"OpenSearch package: {root / 'artifacts' / DEMO_INDEX / 'model_package'}")
    print(f"browse the runs: DAGSTER_HOME={home} dagster dev   (then open http://127.0.0.1:3000)")
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from finetune_assets.benchmark import format_table, run_benchmark

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_config = json.loads(args.config_json) if args.config_json else None
    report = run_benchmark(args.beir_dir, args.out, max_docs=args.max_docs, model_type=args.model_type,
                           work_dir=args.work_dir, run_config=run_config, reuse_queries=args.reuse_queries,
                           corpus_docs=args.corpus_docs, baseline_cache=args.baseline_cache,
                           queries_only=args.queries_only)
    print(format_table(report))
    print(f"figures written to {args.out}")
    return 0


def _estimate(args: argparse.Namespace) -> int:
    from finetune_assets.core.cost.prices import PriceTableError
    from finetune_assets.core.data.corpus_io import CorpusError, read_corpus
    from finetune_assets.core.data.sampling import sample_documents
    from finetune_assets.core.jsonl import write_json
    from finetune_assets.resources.base_model import BaseModelResource
    from finetune_assets.resources.query_generator import DEFAULT_BEDROCK_MODEL_ID
    from finetune_assets.stages.corpus.cost_estimate import (
        CostEstimateConfig,
        estimate_with_batch_plan,
        mirrored_settings,
        plan_summary,
        train_settings,
    )
    from finetune_assets.stages.corpus.raw_corpus import RawCorpusConfig

    defaults = CostEstimateConfig()  # the asset's defaults, so both price the same run
    max_docs = RawCorpusConfig().max_documents if args.max_docs is None else args.max_docs
    try:
        corpus = read_corpus(args.corpus)
        documents = sample_documents(corpus.documents, max_docs or None, seed=0)  # as raw_corpus samples
        base = BaseModelResource()
        settings = mirrored_settings(defaults, base.model_type, len(documents))
        estimate, plan = estimate_with_batch_plan(
            documents, queries_per_type=settings["queries_per_type"], max_document_chars=defaults.max_document_chars,
            bedrock_model_id=args.bedrock_model or DEFAULT_BEDROCK_MODEL_ID,
            train=train_settings(defaults, base.max_seq_length, settings, sampled_documents=len(documents)),
            training_instance_type=args.instance_type or defaults.training_instance_type,
            training_rows_per_second=args.rows_per_second)
    except (CorpusError, PriceTableError) as exc:
        print(f"finetune-assets estimate: {exc}", file=sys.stderr)
        return 2
    notes = [f"{len(corpus.documents):,} valid documents in {args.corpus}; {len(documents):,} sampled (--max-docs)",
             plan_summary(plan)]
    print(estimate.to_markdown("What the AWS path would cost", notes))
    if args.json:
        write_json(args.json, {**estimate.to_dict(), "bedrock_batch_plan": plan})
        print(f"written to {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="finetune-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="fine-tune on the Python docs corpus, offline, with the dagster CLI")
    demo.add_argument("--max-docs", type=int, default=150)
    demo.add_argument("--epochs", type=float, default=1.0)
    demo.add_argument("--storage", default="data", help="artifact folder (default ./data)")
    demo.add_argument("--dagster-home", default=".dagster_home")
    demo.set_defaults(handler=_demo)

    bench = commands.add_parser("benchmark", help="train on a BEIR folder's corpus, score on its real qrels")
    bench.add_argument("beir_dir", help="folder with corpus.jsonl, queries.jsonl and qrels/test.tsv")
    bench.add_argument("--out", required=True, help="JSON file for the figures")
    bench.add_argument("--max-docs", type=int, default=200, help="documents the generator writes queries for")
    bench.add_argument("--corpus-docs", type=int, default=None,
                       help="documents sampled into raw_corpus, for span queries, negatives and the teacher matrix "
                            "(default: raw_corpus's max_documents, 2,000; 0 = all); queries are generated for the "
                            "first --max-docs of them")
    bench.add_argument("--baseline-cache", default=None, metavar="DIR",
                       help="keep the base model's ranking of the real queries here and reuse it in later runs")
    bench.add_argument("--model-type", default="dense", choices=MODEL_TYPES,
                       help="dense bi-encoder, SPLADE, or inference-free SPLADE (IDF query weights)")
    bench.add_argument("--work-dir", default=None, help="where artifacts go (default: a temporary folder)")
    bench.add_argument("--config-json", default=None, help="extra Dagster run config, as for dagster asset materialize")
    bench.add_argument("--reuse-queries", default=None, metavar="EARLIER_WORK_DIR",
                       help="take the sampled corpus and generated queries from an earlier run's work dir and "
                            "run only the stages after them (to compare training settings on the same queries)")
    bench.add_argument("--queries-only", action="store_true",
                       help="stop after query generation; later runs take the queries with --reuse-queries WORK_DIR")
    bench.set_defaults(handler=_benchmark)

    # Defaults resolve in _estimate (the asset's config defaults) so building the parser stays cheap.
    estimate = commands.add_parser("estimate", help="what a corpus would cost on AWS (Bedrock, SageMaker); runs nothing")
    estimate.add_argument("corpus", help="corpus file or folder (JSONL, text or parquet), as raw_corpus reads it")
    estimate.add_argument("--max-docs", type=int, default=None,
                          help="documents sampled, as raw_corpus max_documents (default: its default; 0 = all)")
    estimate.add_argument("--bedrock-model", default=None, help="Bedrock model id (default: the query generator's)")
    estimate.add_argument("--instance-type", default=None, help="SageMaker training instance (default ml.g5.xlarge)")
    estimate.add_argument("--rows-per-second", type=float, default=None,
                          help="measured training throughput (default: the price table's rate for the GPU)")
    estimate.add_argument("--json", default=None, help="also write the estimate to this JSON file")
    estimate.set_defaults(handler=_estimate)

    # These parse their own flags, so they also run on their own (`finetune-assets extract --help`).
    commands.add_parser("extract", help="dump an OpenSearch index to JSONL (PIT + search_after)", add_help=False)
    commands.add_parser("register", help="register an exported model package in OpenSearch ml-commons",
                        add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "extract":
        from finetune_assets.clients.index_dump import extract_main

        return extract_main(argv[1:])
    if argv and argv[0] == "register":
        from finetune_assets.clients.ml_commons import register_main

        return register_main(argv[1:])
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
