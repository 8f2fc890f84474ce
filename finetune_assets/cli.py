"""`finetune-assets`: the demo, benchmarks and other tasks that run without the Dagster UI."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
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
    # `current` links to the version the asset's last successful materialization published (resources/storage.py)
    artifacts = root / "artifacts" / DEMO_INDEX
    report = artifacts / "evaluation_report" / "current"
    if code != 0:
        print(f"\nthe demo run failed after {minutes:.1f} min (exit {code}); the log above says which step")
        return code
    print(f"\ndone in {minutes:.1f} min")
    print(f"report: {report / 'report.md'} (and report.json, metrics.png)")
    print((report / "report.md").read_text())
    print(f"model:  {artifacts / 'trained_model' / 'current' / 'model'}")
    print(f"OpenSearch package: {artifacts / 'model_package' / 'current'}")
    print("earlier versions: beside each 'current', named by start time and run id")
    print(f"browse the runs: DAGSTER_HOME={home} dagster dev   (then open http://127.0.0.1:3000)")
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    """Bad input (a missing or malformed file, an option that cannot work) exits 2 with one line; a failed step 1."""
    from dagster import DagsterInvalidConfigError

    from finetune_assets.benchmark import BenchmarkInputError, BenchmarkRunError, format_table, run_benchmark

    def fail(message: str, code: int) -> int:
        print(f"finetune-assets benchmark: {message}", file=sys.stderr)
        return code

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        run_config = json.loads(args.config_json) if args.config_json else None
    except json.JSONDecodeError as exc:
        return fail(f"--config-json is not valid JSON ({exc.msg} at column {exc.colno})", 2)
    if run_config is not None and not isinstance(run_config, dict):
        return fail('--config-json must be a JSON object such as {"ops": {"raw_corpus": {"config": {...}}}}', 2)
    try:
        report = run_benchmark(args.beir_dir, args.out, max_docs=args.max_docs, model_type=args.model_type,
                               work_dir=args.work_dir, run_config=run_config, reuse_queries=args.reuse_queries,
                               corpus_docs=args.corpus_docs, baseline_cache=args.baseline_cache,
                               queries_only=args.queries_only, base_model=args.base_model)
    except (BenchmarkInputError, FileNotFoundError) as exc:
        return fail(str(exc), 2)
    except DagsterInvalidConfigError as exc:
        return fail(f"--config-json does not fit the pipeline's config: {exc.errors[0].message if exc.errors else exc}",
                    2)
    except BenchmarkRunError as exc:
        return fail(str(exc), 1)
    print(format_table(report))
    print(f"figures written to {args.out}")
    return 0


def _estimate(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from finetune_assets.core.cost.memory import estimate_memory, free_memory_mib
    from finetune_assets.core.cost.prices import PriceTableError
    from finetune_assets.core.data.corpus_io import CorpusError, read_corpus
    from finetune_assets.core.data.sampling import sample_documents
    from finetune_assets.core.jsonl import write_json
    from finetune_assets.resources.base_model import BaseModelResource
    from finetune_assets.resources.query_generator import DEFAULT_BEDROCK_MODEL_ID
    from finetune_assets.resources.sagemaker_pipes import SageMakerTrainingResource
    from finetune_assets.stages.corpus.cost_estimate import (
        CostEstimateConfig,
        estimate_run,
        memory_note,
        plan_summary,
        run_configs,
        training_memory_warning,
    )
    from finetune_assets.stages.corpus.raw_corpus import RawCorpusConfig
    from finetune_assets.stages.training.trained_model import TrainedModelConfig

    # The assets' own configs at their defaults, with the flags given: the estimate prices the run they describe,
    # trained on the SageMaker instance it prices.
    def given(**flags) -> dict:
        return {name: value for name, value in flags.items() if value is not None}

    try:
        config = CostEstimateConfig(**given(training_instance_type=args.instance_type))
        training = TrainedModelConfig(**given(training_rows_per_second=args.rows_per_second,
                                              training_budget_minutes=args.budget_minutes))
        max_docs = RawCorpusConfig(**({} if args.max_docs is None else {"max_documents": args.max_docs})).max_documents
    except ValidationError as exc:
        names = {"training_instance_type": "--instance-type", "training_rows_per_second": "--rows-per-second",
                 "training_budget_minutes": "--budget-minutes", "max_documents": "--max-docs"}
        problems = "; ".join(f"{names.get(e['loc'][0], e['loc'][0])} {e['input']!r}: {e['msg']}" for e in exc.errors())
        print(f"finetune-assets estimate: {problems}", file=sys.stderr)
        return 2
    try:
        corpus = read_corpus(args.corpus, max_documents=max_docs or None, seed=0)  # as raw_corpus samples
        documents = sample_documents(corpus.documents, max_docs or None, seed=0)
        instance = SageMakerTrainingResource(default_backend="sagemaker", instance_type=config.training_instance_type,
                                             instance_count=config.training_instance_count)
        estimate, plan, length, hp = estimate_run(documents, run_configs()._replace(trained_model=training),
                                                  config, BaseModelResource(), instance,
                                                  bedrock_model_id=args.bedrock_model or DEFAULT_BEDROCK_MODEL_ID)
    except (CorpusError, PriceTableError) as exc:
        print(f"finetune-assets estimate: {exc}", file=sys.stderr)
        return 2
    valid = len(corpus.documents) + corpus.not_sampled
    memory = estimate_memory(len(documents), free_memory_mib())
    training_memory = training_memory_warning(hp, memory.available_mib)
    notes = [f"{valid:,} valid documents in {args.corpus}; {len(documents):,} sampled (--max-docs)",
             plan_summary(plan), memory_note(memory) + ("" if memory.fits else f": {memory.refusal()}"),
             f"training on SageMaker: {length.describe()}", *filter(None, [training_memory])]
    print(estimate.to_markdown("What the AWS path would cost", notes))
    if args.json:
        write_json(args.json, {**estimate.to_dict(), "bedrock_batch_plan": plan,
                               "training": {"steps": length.steps, "batch_size": length.batch_size,
                                            "set_by": length.limited_by, "minutes": length.minutes}})
        print(f"written to {args.json}")
    return 0


PASSWORD_ENV = "OPENSEARCH_PASSWORD"
# Loggers that write a warning with a traceback for every failed or retried request; shown with --verbose only.
TRANSPORT_LOGGERS = ("opensearch", "urllib3")


@contextlib.contextmanager
def _transport_logs(verbose: bool) -> Iterator[None]:
    """Unless verbose, keep the HTTP clients' per-request warnings (and their tracebacks) off the terminal."""
    loggers = [logging.getLogger(name) for name in TRANSPORT_LOGGERS]
    saved = [logger.level for logger in loggers]
    try:
        if not verbose:
            for logger in loggers:
                logger.setLevel(logging.ERROR)
        yield
    finally:
        for logger, level in zip(loggers, saved):
            logger.setLevel(level)


def _register(args: argparse.Namespace) -> int:
    """An unreachable cluster, a bad package or refused settings end in one line on stderr (exit 2 for bad
    input, 1 for a failed registration); the model id goes to stdout."""
    from finetune_assets.clients.ml_commons.api import check_reachable
    from finetune_assets.clients.ml_commons.errors import ClusterUnreachableError, MLCommonsError, PackageError
    from finetune_assets.clients.ml_commons.upload import register_local_package
    from finetune_assets.clients.opensearch_dump.connection import opensearch_client
    from finetune_assets.clients.opensearch_dump.errors import IndexDumpError
    from finetune_assets.core.redact import redact

    def fail(message: str, code: int) -> int:
        print(redact(f"finetune-assets register: {message}"), file=sys.stderr)
        return code

    if not args.opensearch_url:
        return fail("error: --opensearch-url (or OPENSEARCH_URL) is required", 2)
    password = os.environ.get(PASSWORD_ENV) if args.username else None
    if args.username and password is None:
        return fail(f"error: set {PASSWORD_ENV} for user {args.username!r}", 2)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("finetune_assets.cli")
    cluster = redact(args.opensearch_url)
    with _transport_logs(args.verbose):
        try:
            client = opensearch_client(args.opensearch_url, username=args.username, password=password,
                                 aws_region=args.aws_region, aws_service=args.aws_service,
                                 verify_certs=not args.insecure, timeout=120.0)
            check_reachable(client)
            log.info("registering %s on %s", args.package_dir, cluster)
            result = register_local_package(client, args.package_dir, index=args.index, group_name=args.group_name,
                                            check_settings=not args.skip_settings_check, timeout=args.timeout)
        except ClusterUnreachableError as exc:
            return fail(f"cannot reach OpenSearch at {cluster}: {exc}. Check --opensearch-url and that the "
                        f"cluster is running (-v shows each request)", 1)
        except PackageError as exc:
            return fail(str(exc), 2)
        except (MLCommonsError, IndexDumpError, ValueError) as exc:   # IndexDumpError: no AWS credentials
            return fail(str(exc), 1)
    for warning in result.warnings:
        log.warning("%s", warning)
    log.info("model %s (%s, group %s)", result.model_id, "reused" if result.reused else "registered now",
             result.model_group_id)
    print(result.model_id)
    return 0


def _extract(args: argparse.Namespace) -> int:
    """Bad arguments end in one `error:` line on stderr and exit 2, a failed dump in one line and exit 1; the
    documents go to --out, the skipped ones beside it, progress and counts to stderr."""
    from opensearchpy import exceptions as os_errors

    from finetune_assets.clients.opensearch_dump.connection import OpenSearchConnection
    from finetune_assets.clients.opensearch_dump.dump import dump_index
    from finetune_assets.clients.opensearch_dump.errors import IndexDumpError
    from finetune_assets.clients.opensearch_dump.output import output_problem, write_dump_jsonl, write_skipped
    from finetune_assets.core.redact import redact

    out = Path(args.out).expanduser()
    problem = output_problem(out)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    password = os.environ.get(PASSWORD_ENV)
    if args.username and not password:
        print(f"error: --username given but {PASSWORD_ENV} is not set", file=sys.stderr)
        return 2
    if args.username and args.aws_region:
        print("error: use either --username (basic auth) or --aws-region (SigV4), not both", file=sys.stderr)
        return 2
    query = None
    if args.query_json:
        try:
            query = json.loads(args.query_json)
        except json.JSONDecodeError as exc:
            print(f"error: --query-json is not valid JSON ({exc.msg})", file=sys.stderr)
            return 2
    connection = OpenSearchConnection(url=args.opensearch_url, username=args.username,
                                      password=password if args.username else None, aws_region=args.aws_region,
                                      aws_service=args.aws_service, verify_certs=not args.insecure,
                                      ca_certs=args.ca_certs, timeout=args.timeout,
                                      pool_maxsize=max(16, args.slices + 2))
    last = [0.0]

    def progress(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] >= 2.0:
            last[0] = now
            print(f"  {done}/{total if total is not None else '?'} documents read", file=sys.stderr, flush=True)

    print(f"extracting '{args.index}' from {connection.describe()}", file=sys.stderr)
    try:
        client = connection.client()
        result = dump_index(client, args.index, text_fields=args.text_fields, title_field=args.title_field,
                            query=query, max_documents=args.max_docs, seed=args.seed, slices=args.slices,
                            page_size=args.page_size, progress=progress)
    except (IndexDumpError, ValueError, OSError, os_errors.OpenSearchException) as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 1
    try:
        written = write_dump_jsonl(result, out)
        skipped_path = out.with_name(out.stem + ".skipped.jsonl")
        if result.skipped:
            write_skipped(result, skipped_path)
    except OSError as exc:
        print(f"error: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if result.skipped:
        print(f"{result.skipped_count} documents without text listed in {skipped_path}", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {written} documents to {out} ({result.seen} read, {result.skipped_count} skipped"
          f"{', sampled with seed ' + str(result.seed) if result.sampled else ''}; {result.pages} pages in "
          f"{result.seconds:.1f} s, {result.method}, {result.slices} slice(s))")
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
    bench.add_argument("--base-model", default=None,
                       help="model to tune and compare with: a local: alias, folder or hub id (default: the "
                            "base_model resource's for --model-type)")
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
                          help="measured training rows per second (default: the price table's rate for the GPU)")
    estimate.add_argument("--budget-minutes", type=float, default=None,
                          help="minutes of training: steps follow the rows up to what fits (trained_model "
                               "training_budget_minutes; default: the smart-defaults table's steps)")
    estimate.add_argument("--json", default=None, help="also write the estimate to this JSON file")
    estimate.set_defaults(handler=_estimate)

    register = commands.add_parser(
        "register", help="register an exported model package in OpenSearch ml-commons",
        description="Upload an exported model package to OpenSearch ml-commons (one model group per index), "
                    "deploy it and print its model id. Re-running with the same package reuses the model.")
    register.add_argument("package_dir", metavar="PACKAGE_DIR", help="folder with the zip, ml_commons_register.json "
                                                                     "and package.json (the model_package asset)")
    register.add_argument("--opensearch-url", default=os.environ.get("OPENSEARCH_URL"),
                          help="https://host:9200 (default: $OPENSEARCH_URL)")
    register.add_argument("--index", help="index the model was tuned for: the model group is finetune-assets/INDEX")
    register.add_argument("--username", help=f"basic-auth user; the password comes from ${PASSWORD_ENV}")
    register.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate")
    register.add_argument("--aws-region", help="sign requests with AWS SigV4 (Amazon OpenSearch Service)")
    register.add_argument("--aws-service", default="es", choices=("es", "aoss"))
    register.add_argument("--group-name", help="model group name (default: from --index or the package name)")
    register.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the deploy task")
    register.add_argument("--skip-settings-check", action="store_true",
                          help="do not read _cluster/settings first (users without cluster monitor rights)")
    register.add_argument("-v", "--verbose", action="store_true",
                          help="debug logging, including each HTTP request and its retries")
    register.set_defaults(handler=_register)

    extract = commands.add_parser(
        "extract", help="dump an OpenSearch index to JSONL (PIT + search_after)",
        description="Dump an OpenSearch index to corpus JSONL ({_id, title, text} per line). The password is "
                    f"read from the {PASSWORD_ENV} environment variable, never from the command line.")
    extract.add_argument("--opensearch-url", required=True, help="https://host:9200")
    extract.add_argument("--index", required=True, help="index, alias or pattern")
    extract.add_argument("--text-field", action="append", required=True, dest="text_fields",
                         help="field holding the text; repeat to join several with newlines; dotted paths allowed")
    extract.add_argument("--title-field", default=None)
    extract.add_argument("--out", required=True, help="output .jsonl file")
    extract.add_argument("--max-docs", type=int, default=None, help="uniform random sample of this many documents")
    extract.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    extract.add_argument("--slices", type=int, default=1, help="parallel sliced reads (default 1)")
    extract.add_argument("--page-size", type=int, default=1000)
    extract.add_argument("--query-json", default=None,
                         help="filter query as JSON, e.g. '{\"term\": {\"lang\": \"en\"}}'")
    extract.add_argument("--username", default=None, help=f"basic-auth user; password from ${PASSWORD_ENV}")
    extract.add_argument("--aws-region", default=None, help="sign requests with AWS SigV4 for this region")
    extract.add_argument("--aws-service", choices=("es", "aoss"), default="es",
                         help="es = Amazon OpenSearch Service, aoss = OpenSearch Serverless")
    extract.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    extract.add_argument("--ca-certs", default=None, help="CA bundle for TLS verification")
    extract.add_argument("--timeout", type=float, default=60.0, help="request timeout in seconds")
    extract.set_defaults(handler=_extract)

    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported with the subcommand's usage line: its flags are the ones that were mistyped
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
