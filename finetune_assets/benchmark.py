"""`finetune-assets benchmark`: run the asset graph on a BEIR folder's corpus, score on its real qrels.

Training sees only the corpus (synthetic queries); the folder's human-judged test queries are used for
evaluation alone, over the whole corpus, for BM25, the base model and the tuned model.
"""
from __future__ import annotations

import json
import os
import platform
import re
import tempfile
import threading
import time
from pathlib import Path

from finetune_assets.core.jsonl import read_jsonl, write_json


class BenchmarkInputError(ValueError):
    """The benchmark's input cannot be used; the message names the file, line or option and what is expected."""


class BenchmarkRunError(RuntimeError):
    """A pipeline step failed; the run's log above says which and why."""


QRELS_FORMATS = ("BEIR TSV ('query-id<TAB>corpus-id<TAB>score', header line optional) or TREC "
                 "('query-id iteration doc-id relevance', whitespace-separated)")


def read_beir(folder: Path, split: str = "test") -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    """A BEIR folder: corpus.jsonl and queries.jsonl (JSON objects with `_id` and `text`), qrels/<split>.tsv.

    The qrels may be BEIR TSV or TREC format (see read_qrels). Raises BenchmarkInputError naming the file and
    line of anything missing or malformed.
    """
    folder = Path(folder)
    needed = ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv")
    if not folder.is_dir():
        raise BenchmarkInputError(f"{folder} is not a folder; a BEIR folder holds {', '.join(needed)}")
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise BenchmarkInputError(f"{folder} has no {' and no '.join(missing)}; a BEIR folder holds "
                                  f"{', '.join(needed)}")
    corpus = list(_read_objects(folder / "corpus.jsonl"))
    queries = {str(q["_id"]): q["text"] for q in _read_objects(folder / "queries.jsonl")}
    return corpus, queries, read_qrels(folder / "qrels" / f"{split}.tsv")


def _read_objects(path: Path):
    """JSON Lines records, each an object with an `_id` (string or integer) and a string `text`."""
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise BenchmarkInputError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                              f"expected one JSON object per line") from None
                if not isinstance(record, dict):
                    raise BenchmarkInputError(f"{path}:{number}: a JSON {type(record).__name__}, not an object "
                                              f"with '_id' and 'text'")
                doc_id = record.get("_id")
                if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or str(doc_id) == "":
                    raise BenchmarkInputError(f"{path}:{number}: field '_id' is missing or not a string or integer "
                                              f"(got {doc_id!r})")
                if not isinstance(record.get("text"), str):
                    raise BenchmarkInputError(f"{path}:{number}: field 'text' is missing or not a string "
                                              f"(record '_id' {doc_id!r})")
                yield record
    except UnicodeDecodeError as exc:
        raise BenchmarkInputError(f"{path}: not valid UTF-8 (byte offset {exc.start})") from None


def _relevance(value: str, path: Path, number: int) -> int:
    try:
        grade = float(value)
    except ValueError:
        grade = float("nan")
    if not grade.is_integer():
        raise BenchmarkInputError(f"{path}:{number}: relevance {value!r} is not an integer; expected "
                                  f"{QRELS_FORMATS}")
    return int(grade)


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Relevance judgements {query id: {document id: grade}} from BEIR TSV or TREC qrels.

    BEIR: three tab-separated columns (query-id, corpus-id, score), with or without the header line. TREC:
    four whitespace-separated columns (query id, iteration, document id, relevance); the iteration is ignored.
    Every line must have the column count of the first judgement line.
    """
    qrels: dict[str, dict[str, int]] = {}
    columns = 0
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                fields = [f.strip() for f in (line.rstrip("\r\n").split("\t") if "\t" in line else line.split())]
                if not any(fields):
                    continue
                if not columns and not qrels and fields[0].lower() in ("query-id", "query_id", "qid", "query"):
                    continue  # the header line
                if not columns:
                    if len(fields) not in (3, 4):
                        raise BenchmarkInputError(f"{path}:{number}: {len(fields)} column(s); expected "
                                                  f"{QRELS_FORMATS}")
                    columns = len(fields)
                if len(fields) != columns:
                    raise BenchmarkInputError(f"{path}:{number}: {len(fields)} column(s) where the first judgement "
                                              f"line has {columns}; expected {QRELS_FORMATS}")
                query_id, doc_id, grade = fields if columns == 3 else (fields[0], fields[2], fields[3])
                if not query_id or not doc_id:
                    raise BenchmarkInputError(f"{path}:{number}: empty query or document id; expected "
                                              f"{QRELS_FORMATS}")
                qrels.setdefault(query_id, {})[doc_id] = _relevance(grade, path, number)
    except UnicodeDecodeError as exc:
        raise BenchmarkInputError(f"{path}: not valid UTF-8 (byte offset {exc.start})") from None
    if not qrels:
        raise BenchmarkInputError(f"{path} holds no relevance judgements; expected {QRELS_FORMATS}")
    return qrels


def partition_name(folder: Path) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "-", folder.resolve().name.lower()).strip("-_") or "benchmark"


def _step_spans(instance, run_id: str) -> dict[str, tuple[float, float]]:
    """Each step's (start, end) wall-clock timestamps from the run's event log."""
    from dagster import DagsterEventType

    starts, ends = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not entry.step_key:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            starts[entry.step_key] = entry.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            ends[entry.step_key] = entry.timestamp
    return {step: (starts[step], ends[step]) for step in starts if step in ends}


def _process_cpu_seconds() -> float:
    # Children count once reaped: the Pipes training subprocess is waited on before its step ends.
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class CpuClock:
    """Samples this process's CPU seconds against wall time, so CPU-minutes can be split by step.

    The in-process executor runs steps one after another in this process, so the CPU used between a step's
    start and end timestamps is that step's (its threads and reaped subprocesses included).
    """

    def __init__(self, interval: float = 0.5, cpu_seconds=_process_cpu_seconds):
        self._interval, self._cpu = interval, cpu_seconds
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.samples.append((time.time(), self._cpu()))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> "CpuClock":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def at(self, timestamp: float) -> float:
        """CPU seconds used by `timestamp`: the first sample taken at or after it (the last one past the end)."""
        for when, cpu in self.samples:
            if when >= timestamp:
                return cpu
        return self.samples[-1][1]

    def between(self, start: float, end: float) -> float:
        return max(0.0, self.at(end) - self.at(start))


# Query generation dominates a CPU run; comparing training techniques can reuse an earlier run's queries.
# raw_corpus is drawn again (seconds, and the same sample for the same size and seed): a smaller sample drops
# the queries of documents outside it, a larger one adds documents that serve as negatives and title queries.
REUSABLE_ASSETS = ("bedrock_batch_outputs",)
QUERY_STAGES = ("raw_corpus", "cost_estimate", "bedrock_batch_outputs")  # what --queries-only runs


def _reuse_queries(earlier_work_dir: Path, storage, index: str) -> None:
    import shutil

    from finetune_assets.resources.storage import CURRENT, VERSION_PATTERN, ArtifactStorage, MissingArtifact

    def storage_files(_folder, names: list[str]) -> list[str]:  # the manifest, pointer, locks and other versions
        return [n for n in names if n.startswith(".") or n == CURRENT or VERSION_PATTERN.match(n)]

    earlier = ArtifactStorage(root=str(earlier_work_dir / "storage"))
    for asset in REUSABLE_ASSETS:
        try:
            source = earlier.fetch(index, asset)  # its current version (or the files of a pre-versioning run)
        except MissingArtifact:
            raise FileNotFoundError(f"--reuse-queries: {earlier.asset_uri(index, asset)} is missing; pass the work "
                                    f"dir of an earlier benchmark run of the same collection (its JSON's "
                                    f"'work_dir')") from None
        folder = storage.artifact_dir(index, asset)
        shutil.copytree(source, folder, dirs_exist_ok=True, ignore=storage_files)
        storage.publish(index, asset, folder)


def _effective_settings(result, storage, index: str) -> dict:
    """The smart-defaults settings this run trained with, whether set in its config or filled from the table."""
    from finetune_assets.core.jsonl import read_json
    from finetune_assets.core.querygen.bedrock_records import parse_output_record
    from finetune_assets.core.training.dense_training import Hyperparameters

    hyperparameters = read_json(storage.fetch(index, "trained_model") / "hyperparameters.json")
    mined_metadata = result.asset_materializations_for_node("mined_negatives")[0].metadata
    mined = mined_metadata["num_negatives"].value
    records = [parse_output_record(r) for r in read_jsonl(storage.fetch(index, "bedrock_batch_outputs")
                                                          / "documents.jsonl.out")]
    asked = [len(r.queries) for r in records if not r.error]
    # factoid + conceptual per document; reused queries carry no config, so count what was generated
    queries_per_type = max(1, round(sum(asked) / max(len(asked), 1) / 2))
    return {"epochs": hyperparameters["epochs"], "learning_rate": hyperparameters["learning_rate"],
            "batch_size": hyperparameters["batch_size"], "queries_per_type": queries_per_type,
            "num_negatives": mined, "loss": hyperparameters["loss"], "max_steps": hyperparameters.get("max_steps", 0),
            "max_seq_length": Hyperparameters.from_mapping(hyperparameters).training_sequence_length,
            "candidates_per_query": hyperparameters.get("candidates_per_query", Hyperparameters.candidates_per_query),
            "soup_size": hyperparameters.get("soup_size", 1),
            "precision_setting": hyperparameters.get("precision", "auto"),
            "teacher": mined_metadata["teacher"].value if "teacher" in mined_metadata else None}


def delivered_figures(comparison, search: dict, evaluation: dict) -> dict:
    """What the user gets: the delivered search scored on the real queries, against the best row of the run (the
    search the held-out synthetic queries should have picked), with a paired interval on the difference, and the
    held-out figures the choice was made on. `search` is search_pipeline's search.json, `evaluation` the report."""
    from finetune_assets.stages.deploy.search_pipeline import report_row

    row = report_row(search["mode"], search["system"])
    if row not in comparison.results:
        raise BenchmarkRunError(f"search_pipeline delivered '{row}', which the real-query evaluation did not score "
                                f"(rows: {sorted(comparison.results)})")
    scores = {name: values["ndcg@10"] for name, values in comparison.results.items()}
    best = row if scores[row] >= max(scores.values()) else max(scores, key=scores.get)  # a tie is no shortfall
    figures = {"search": search["mode"], "row": row, "reason": search["reason"],
               "ndcg@10": round(scores[row], 4), "best_row": best}
    if best != row:
        gain, low, high = comparison.gain_interval(row, best)
        figures["minus_best_ndcg@10"] = {"mean": round(gain, 4), "ci95": [round(low, 4), round(high, 4)]}
    # The same rows on the held-out synthetic queries: beside the real figures they show how far the choice's
    # evidence is from what the real queries say.
    figures["held_out_synthetic"] = {"queries": evaluation["judged_queries"],
                                     "ndcg@10": {name: round(values["ndcg@10"], 4)
                                                 for name, values in evaluation["results"].items()},
                                     "by_query_type": evaluation["ndcg@10_by_query_type"]}
    return figures


def baseline_cache_key(corpus_file: Path, base_model, queries: dict[str, str]) -> str:
    """Identifies a base-model run: the same corpus bytes, judged queries, model and sequence length rank alike."""
    import hashlib

    import sentence_transformers

    digest = hashlib.sha256(corpus_file.read_bytes())
    digest.update(repr((sorted(queries.items()), base_model.model_type, base_model.model_name,
                        base_model.max_seq_length, sentence_transformers.__version__)).encode())
    return digest.hexdigest()[:24]


def _cached_baseline(cache_dir: Path | None, key: str) -> dict | None:
    from finetune_assets.core.jsonl import read_json

    path = cache_dir / f"{key}.json" if cache_dir else None
    return read_json(path) if path and path.is_file() else None


def run_benchmark(beir_dir: str | Path, out: str | Path, *, max_docs: int = 200, model_type: str = "dense",
                  work_dir: str | Path | None = None, run_config: dict | None = None,
                  reuse_queries: str | Path | None = None, corpus_docs: int | None = None,
                  baseline_cache: str | Path | None = None, queries_only: bool = False,
                  base_model: str | None = None) -> dict:
    """`max_docs` documents get generated queries; `corpus_docs` (default: raw_corpus's default sample; 0 = all)
    are sampled into raw_corpus, for span queries, negatives and the teacher matrix. `baseline_cache` keeps the base model's ranking of
    the real queries between runs (it never changes for the same corpus, queries and model). `queries_only`
    stops after query generation: its work dir is then for later runs' `reuse_queries`. `base_model` replaces the
    base_model resource's model (None keeps it)."""
    from dagster import DagsterInstance, materialize

    from finetune_assets.core.data.pairs import document_text
    from finetune_assets.core.jsonl import read_json
    from finetune_assets.core.model_types import check_model_type
    from finetune_assets.core.retrieval.evaluation import compare_systems
    from finetune_assets.core.retrieval.fusion import FusionSetting
    from finetune_assets.definitions import all_assets, defs
    from finetune_assets.resources.base_model import BaseModelResource
    from finetune_assets.resources.storage import ArtifactStorage
    from finetune_assets.stages.evaluation.evaluation_report import quality_gate

    check_model_type(model_type)
    if queries_only and reuse_queries:
        raise BenchmarkInputError("queries_only generates the queries that reuse_queries would take: pass one of "
                                  "them")
    if Path(out).is_dir():
        raise BenchmarkInputError(f"--out {out} is a folder; give the JSON file to write, e.g. "
                                  f"{Path(out) / 'benchmark.json'}")
    beir_dir = Path(beir_dir)
    corpus, queries, qrels = read_beir(beir_dir)
    index = partition_name(beir_dir)
    work = Path(work_dir or tempfile.mkdtemp(prefix=f"finetune-benchmark-{index}-"))
    storage = ArtifactStorage(root=str(work / "storage"))
    if corpus_docs is None:  # the sample a user's run takes
        from finetune_assets.stages.corpus.raw_corpus import RawCorpusConfig

        corpus_docs = RawCorpusConfig().max_documents
    source = str(beir_dir / "corpus.jsonl")
    config = {"ops": {"raw_corpus": {"config": {"source": source, "max_documents": corpus_docs}},
                      "bedrock_batch_outputs": {"config": {"max_documents": max_docs}}}}
    for op, values in (run_config or {}).get("ops", {}).items():
        config["ops"].setdefault(op, {"config": {}})["config"].update(values.get("config", {}))
    configured = defs.resources["base_model"]
    base = BaseModelResource(model_type=model_type, max_seq_length=configured.max_seq_length,
                             batch_size=configured.batch_size, document_prune_ratio=configured.document_prune_ratio,
                             base_model=base_model if base_model is not None else
                             configured.base_model if configured.model_type == model_type else "")
    resources = {**defs.resources, "storage": storage, "base_model": base}
    selection = all_assets
    if queries_only:
        selection = [a for a in all_assets if a.key.path[-1] in QUERY_STAGES]
    if reuse_queries:
        _reuse_queries(Path(reuse_queries), storage, index)
        selection = [a for a in all_assets if a.key.path[-1] not in REUSABLE_ASSETS]
        config["ops"] = {op: values for op, values in config["ops"].items() if op not in REUSABLE_ASSETS}
    started = time.perf_counter()
    with DagsterInstance.ephemeral() as instance, CpuClock() as clock:
        instance.add_dynamic_partitions("index", [index])
        result = materialize(all_assets, selection=selection, partition_key=index, resources=resources,
                             run_config=config, instance=instance, raise_on_error=False)
        spans = _step_spans(instance, result.run_id)
    pipeline_seconds = time.perf_counter() - started
    timings = {step: round(end - start, 2) for step, (start, end) in spans.items()}
    cpu_minutes = {step: round(clock.between(start, end) / 60, 2) for step, (start, end) in spans.items()}
    cpu_minutes["pipeline_total"] = round((clock.samples[-1][1] - clock.samples[0][1]) / 60, 2)
    failed = sorted({e.step_key for e in result.all_events if e.is_step_failure})
    # A failed quality gate is a result to report (tuned worse than base), not a broken benchmark.
    broken = [step for step in failed if "tuned_not_worse_than_base" not in step]
    if broken:
        raise BenchmarkRunError(f"benchmark pipeline failed at {broken}; see the log above")

    if queries_only:
        report = {"collection": str(beir_dir), "documents": len(corpus),
                  "settings": {"max_docs": max_docs, "corpus_docs": corpus_docs, "run_config": config,
                               "query_generator": resources["query_generator"].backend},
                  "timings_s": {**timings, "pipeline_total": round(pipeline_seconds, 1)},
                  "cpu_minutes": cpu_minutes, "cpu_count": os.cpu_count(), "work_dir": str(work)}
        write_json(out, report)
        return report
    effective = _effective_settings(result, storage, index)
    base_model = resources["base_model"]
    tuned_dir = storage.fetch(index, "trained_model") / "model"
    started, cpu_before = time.perf_counter(), _process_cpu_seconds()
    texts = [document_text({"title": d.get("title", ""), "text": d["text"]}) for d in corpus]
    cache_dir = Path(baseline_cache) if baseline_cache else None
    key = baseline_cache_key(beir_dir / "corpus.jsonl", base_model, queries)
    cached = _cached_baseline(cache_dir, key)
    evaluation = read_json(storage.fetch(index, "evaluation_report") / "report.json")
    models = {"tuned": base_model.load(str(tuned_dir))}
    if cached is None:
        models = {"base": base_model.load_baseline(texts), **models}
    comparison = compare_systems(
        [str(d["_id"]) for d in corpus], texts, queries, qrels, models, batch_size=base_model.batch_size,
        precomputed={"base": (cached["run"], cached.get("sparsity"))} if cached else None,
        # the document pruning evaluation_report chose on the held-out synthetic queries, as for the fusion
        document_prune_ratios={"tuned": evaluation["document_prune_ratio"]},
    )
    if cache_dir and cached is None:  # the scored run, so that later runs can also fuse it with BM25
        write_json(cache_dir / f"{key}.json", {"model": base_model.model_name, "collection": str(beir_dir),
                                                "run": comparison.scored_runs["base"],
                                                "sparsity": comparison.sparsity.get("base")})
    # Hybrid rows on the real queries, each with the fusion setting evaluation_report chose on the held-out
    # synthetic queries: the real judgements never pick a setting.
    for system in ("base", "tuned"):
        entry = evaluation.get("hybrid", {}).get(f"hybrid_{system}")
        if entry and system in comparison.scored_runs:
            comparison.add_hybrid(system, qrels, setting=FusionSetting.from_dict(entry["setting"]))
    hybrid_gains = {}  # what the hybrid query with the tuned model adds over each thing the user has without it
    if "hybrid_tuned" in comparison.results:
        for baseline in ("bm25", "tuned", "hybrid_base"):
            if baseline in comparison.results:
                gain, low, high = comparison.gain_interval("hybrid_tuned", baseline)
                hybrid_gains[f"hybrid_tuned_minus_{baseline}_ndcg@10"] = {
                    "mean": round(gain, 4), "ci95": [round(low, 4), round(high, 4)]}
    gate_passed, _ = quality_gate(evaluation)
    delivered = delivered_figures(comparison, read_json(storage.fetch(index, "search_pipeline") / "search.json"),
                                   evaluation)
    timings["real_qrels_evaluation"] = round(time.perf_counter() - started, 2)
    cpu_minutes["real_qrels_evaluation"] = round((_process_cpu_seconds() - cpu_before) / 60, 2)
    mean, low, high = comparison.gain_interval()
    report = {
        "collection": str(beir_dir),
        "judged_queries": comparison.judged_queries,
        "documents": comparison.documents,
        "settings": {"max_docs": max_docs, "corpus_docs": corpus_docs, "model_type": model_type,
                     "base_model": base_model.model_name,
                     "reused_queries_from": str(reuse_queries) if reuse_queries else None,
                     "base_ranking_from_cache": cached is not None,
                     "run_config": config, "query_generator": resources["query_generator"].backend},
        "effective_settings": effective,
        "results": {name: {m: round(values[m], 4) for m in ("ndcg@10", "mrr@10", "recall@100")}
                    for name, values in comparison.results.items()},
        "tuned_minus_base_ndcg@10": {"mean": round(mean, 4), "ci95": [round(low, 4), round(high, 4)]},
        **hybrid_gains,
        "delivered": delivered,
        **({"sparsity": comparison.sparsity} if comparison.sparsity else {}),
        **({"hybrid": {name: {"setting": info["setting"], "name": info["name"],
                              "chosen_on": "held-out synthetic queries (evaluation_report)"}
                       for name, info in comparison.hybrid.items()}} if comparison.hybrid else {}),
        "timings_s": {**timings, "pipeline_total": round(pipeline_seconds, 1)},
        # CPU time of this process and its reaped subprocesses; on 2 cores, at most 2 CPU-minutes per minute
        "cpu_minutes": cpu_minutes,
        "cpu_count": os.cpu_count(),
        "quality_gate_passed": gate_passed,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "work_dir": str(work),
    }
    write_json(out, report)
    return report


def format_table(report: dict) -> str:
    if "results" not in report:  # --queries-only
        return (f"{report['collection']}: queries generated in {report['timings_s']['pipeline_total']} s; "
                f"reuse them with --reuse-queries {report['work_dir']}")
    lines = [f"{report['collection']}: {report['judged_queries']} judged queries, {report['documents']} documents",
             f"{'system':<13} {'nDCG@10':>8} {'MRR@10':>8} {'R@100':>8}"]
    for name, values in report["results"].items():
        lines.append(f"{name:<13} {values['ndcg@10']:>8.4f} {values['mrr@10']:>8.4f} {values['recall@100']:>8.4f}")
    for name, info in report.get("hybrid", {}).items():
        lines.append(f"{name}: {info['name']} (chosen on the held-out synthetic queries)")
    gain = report["tuned_minus_base_ndcg@10"]
    lines.append(f"tuned - base nDCG@10: {gain['mean']:+.4f} (95% CI {gain['ci95'][0]:+.4f} .. {gain['ci95'][1]:+.4f})")
    for baseline in ("bm25", "tuned", "hybrid_base"):
        if gain := report.get(f"hybrid_tuned_minus_{baseline}_ndcg@10"):
            lines.append(f"hybrid_tuned - {baseline} nDCG@10: {gain['mean']:+.4f} (95% CI {gain['ci95'][0]:+.4f} .. "
                         f"{gain['ci95'][1]:+.4f})")
    if delivered := report.get("delivered"):
        behind = delivered.get("minus_best_ndcg@10")
        lines.append(f"delivered by search_pipeline: {delivered['row']} {delivered['ndcg@10']:.4f} ("
                     + (f"{behind['mean']:+.4f} against the best row, {delivered['best_row']}, 95% CI "
                        f"{behind['ci95'][0]:+.4f} .. {behind['ci95'][1]:+.4f})" if behind else "the best row)"))
        if held_out := delivered.get("held_out_synthetic"):
            lines.append(f"chosen on {held_out['queries']} held-out synthetic queries: " +
                         ", ".join(f"{name} {value:.4f}" for name, value in held_out["ndcg@10"].items()))
    for name, figures in report.get("sparsity", {}).items():
        lines.append(f"{name} sparsity: {figures['avg_active_dims_query']:.1f} active dims per query, "
                     f"{figures['avg_active_dims_document']:.1f} per document, FLOPS {figures['flops']:.3f}"
                     + (f" (documents pruned at max_ratio {figures['document_prune_ratio']}; unpruned FLOPS "
                        f"{figures['flops_unpruned']:.3f})" if "flops_unpruned" in figures else ""))
    lines.append("stage seconds: " + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()))
    if "cpu_minutes" in report:
        lines.append("stage CPU-minutes: " + ", ".join(f"{k} {v}" for k, v in report["cpu_minutes"].items()))
    return "\n".join(lines)
