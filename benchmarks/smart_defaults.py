"""Regenerate finetune_assets/core/smart_defaults.toml from benchmark results on the real collections.

    .venv/bin/python -m benchmarks.smart_defaults benchmarks/results/*.json [--out FILE.toml]

Only runs made with the current default techniques count (their run config differs from today's defaults in
the table's own settings alone: epochs, learning_rate, batch_size, queries_per_type, num_negatives). Runs are
grouped by model type and sample size; within a group, a setting qualifies when it was run on every collection
of the group, and the one with the best mean nDCG@10 gain over the base model wins, preferring settings that
are never worse than base on any collection, then the cheaper one (fewer epochs). Sizes outside the measured
ones get rows by a stated rule, marked "rule:" in the table.

batch_kl runs feed the `[[batch_kl]]` entries, one per model type: runs with today's default teacher (as many
signals as today's teacher_companion default gives), the benchmark's default sample sizes, and no change but the
entry's own settings (epochs, learning_rate, batch_size, max_steps, max_seq_length, candidates_per_query); the same
ranking picks the winner, except that the setting that encodes the fewest pooled documents in training (max_steps x
batch_size x candidates_per_query) wins when its mean gain is within STEPS_MARGIN of the best. A
result file with a `superseded_by` key (its code has changed since) counts for neither. Results of a check
collection (med, lisa, any other) are refused: the table is chosen on the development collections alone
(core/retrieval/protocol.py); keep check results in benchmarks/results/check/.
"""
from __future__ import annotations

import argparse
import inspect
import json
from collections import Counter, defaultdict
from pathlib import Path

from finetune_assets.core.cost.smart_defaults import BATCH_KL_SETTINGS, SETTINGS, TABLE
from finetune_assets.core.model_types import MODEL_TYPES, default_base_model
from finetune_assets.core.offline_models import MINILM_MODEL
from finetune_assets.core.retrieval.protocol import require_development
from finetune_assets.core.teachers.hybrid_teacher import companion_models
from finetune_assets.core.training.batch_distillation import MODEL_TYPES as BATCH_KL_MODEL_TYPES

EARLIER_TRAINING_LENGTH = 128  # batch_kl's fixed training length before max_seq_length became a table column
EARLIER_CANDIDATES = 4  # candidates_per_query's fixed default before it became a table column

# The values runs used before benchmark JSONs recorded their effective settings (session-2 code defaults).
LEGACY_SETTINGS = {"epochs": 1.0, "learning_rate": 2e-5, "batch_size": 16, "queries_per_type": 1, "num_negatives": 1}
# Where each table setting lives in a run config.
SETTING_OPS = {"epochs": "trained_model", "learning_rate": "trained_model", "batch_size": "trained_model",
               "queries_per_type": "bedrock_batch_outputs", "num_negatives": "mined_negatives"}
# Run-config fields that describe the benchmark itself, not a technique.
BENCHMARK_FIELDS = {("raw_corpus", "source"), ("raw_corpus", "max_documents"),
                    ("bedrock_batch_outputs", "max_documents"), ("cost_estimate", "generate_for_documents")}
MAX_SMALL_CORPUS_EPOCHS = 4.0
# Cheaper batch_kl training wins when its mean gain is within this of the best: one nDCG@10 point, inside the spread
# of one setting over seeds (dense on LISA +0.066..+0.088, on MED +0.005..+0.014), for the training time it saves.
STEPS_MARGIN = 0.01
# Another seed reshuffles the batches of the same setting: such a run is a repeat, averaged with the others.
REPEAT_FIELDS = {("trained_model", "seed")}


def current_defaults() -> dict[tuple[str, str], object]:
    """Today's default for every asset config field, keyed by (op, field); an experimental option counts as a
    field of its asset, as runs made before the `experimental` mappings set it."""
    from finetune_assets.core.retrieval.mining import MiningSettings
    from finetune_assets.core.training.dense_training import EXPERIMENTAL_FIELDS, Hyperparameters
    from finetune_assets.stages.run_config import config_classes
    from finetune_assets.stages.training.mined_negatives import EXPERIMENTAL_MINING

    defaults = {(op, name): field.default for op, cls in config_classes().items()
                for name, field in cls.model_fields.items() if name != "experimental"}
    defaults.update({("trained_model", name): getattr(Hyperparameters(), name) for name in EXPERIMENTAL_FIELDS})
    defaults.update({("mined_negatives", name): getattr(MiningSettings(), name) for name in EXPERIMENTAL_MINING})
    return defaults


def config_entries(run_config: dict):
    """(op, field, value) of every setting in a run config, the entries of an `experimental` mapping included."""
    for op, entry in run_config.get("ops", {}).items():
        for name, value in entry.get("config", {}).items():
            if name == "experimental" and isinstance(value, dict):
                yield from ((op, option, setting) for option, setting in value.items())
            else:
                yield op, name, value


def settings_and_techniques(report: dict, defaults: dict) -> tuple[dict, dict]:
    """The table settings a benchmark run trained with, and the other config it changed from today's defaults."""
    recorded = report.get("effective_settings")
    values = dict(recorded) if recorded else dict(LEGACY_SETTINGS)
    techniques = {}
    for op, name, value in config_entries(report["settings"].get("run_config", {})):
        if (op, name) in BENCHMARK_FIELDS:
            continue
        if name in SETTING_OPS and SETTING_OPS[name] == op:
            if not recorded and value is not None:
                values[name] = value
        elif defaults.get((op, name), object()) != value:
            techniques[f"{op}.{name}"] = value
    return values, techniques


def describe_run(report: dict, defaults: dict) -> dict | None:
    """Model type, size, collection, table settings and gain of one benchmark JSON; None if it is not one, or
    if it changed a technique away from today's defaults."""
    if "tuned_minus_base_ndcg@10" not in report or "settings" not in report:
        return None
    if report.get("superseded_by"):
        return None
    if report.get("effective_settings", {}).get("loss", "mnrl") == "batch_kl":
        return None  # batch_kl runs feed the [[batch_kl]] entries (describe_batch_kl_run)
    settings = report["settings"]
    values, techniques = settings_and_techniques(report, defaults)
    if techniques:
        return None
    return {"model_type": settings["model_type"], "base_model": tuned_base_model(settings),
            "documents": settings.get("corpus_docs") or settings["max_docs"],
            "collection": Path(report["collection"]).name,
            "settings": tuple((name, values[name]) for name in SETTINGS),
            "gain": report["tuned_minus_base_ndcg@10"]["mean"]}


def tuned_base_model(settings: dict) -> str:
    """The base model a run tuned, as recorded (runs that did not record one tuned all-MiniLM-L6-v2 or SPLADE-tiny,
    the defaults of their day)."""
    recorded = settings.get("base_model")
    if recorded:
        return recorded.lower()
    return (MINILM_MODEL if settings["model_type"] == "dense" else default_base_model(settings["model_type"])).lower()


def of_default_base_model(settings: dict) -> bool:
    """A run tuned today's default base model of its type: the [[batch_kl]] settings are the default model's, and
    another base model's gains (bge-small-en's +0.15 on CACM over its own base) would pick them."""
    return tuned_base_model(settings) == default_base_model(settings["model_type"]).lower()


def of_one_base_model(runs: list[dict]) -> tuple[list[dict], dict[str, str]]:
    """The [[row]] runs (the MNRL recipe) of one base model per model type: the type's default where it has runs,
    else the base model with the most runs; with, per type, the other base model the rows were measured on."""
    kept, measured_on = [], {}
    for model_type in MODEL_TYPES:
        of_type = [run for run in runs if run["model_type"] == model_type]
        if not of_type:
            continue
        counts = Counter(run["base_model"] for run in of_type)
        default = default_base_model(model_type).lower()
        base = default if default in counts else max(sorted(counts), key=counts.__getitem__)
        kept += [run for run in of_type if run["base_model"] == base]
        if base != default:
            measured_on[model_type] = base
    return kept, measured_on


def benchmark_sample_sizes() -> dict:
    """The sample sizes a plain `finetune-assets benchmark` run takes."""
    from finetune_assets.benchmark import run_benchmark
    from finetune_assets.stages.corpus.raw_corpus import RawCorpusConfig

    return {"max_docs": inspect.signature(run_benchmark).parameters["max_docs"].default,
            "corpus_docs": RawCorpusConfig().max_documents}


def teacher_signals(teacher: str) -> int:
    """How many signals a recorded hybrid teacher summed: 'hybrid (BM25 0.3 + base model 0.4 + x 0.3, z-score)'."""
    if not teacher.startswith("hybrid ("):
        return 0
    return teacher.split("(", 1)[1].split(",", 1)[0].count(" + ") + 1


def describe_batch_kl_run(report: dict, defaults: dict, sample_sizes: dict) -> dict | None:
    """Like describe_run, for a batch_kl run made with today's teacher and sample sizes; None otherwise."""
    effective = report.get("effective_settings") or {}
    if effective.get("loss") != "batch_kl" or report.get("superseded_by") or "settings" not in report:
        return None
    if effective.get("soup_size", 1) != 1:
        return None  # the table picks one model's settings; a soup of such models gains more and would bias it
    settings = report["settings"]
    if any(settings.get(name) != size for name, size in sample_sizes.items()) or not of_default_base_model(settings):
        return None
    default_companions = companion_models(defaults[("mined_negatives", "teacher_companion")], settings["model_type"])
    if teacher_signals(effective.get("teacher", "")) != 2 + len(default_companions):
        return None
    # Recorded since each became a column; earlier runs trained with the fixed value unless their config set one.
    model_config = settings.get("run_config", {}).get("ops", {}).get("trained_model", {}).get("config", {})
    for name, earlier in (("max_seq_length", EARLIER_TRAINING_LENGTH), ("candidates_per_query", EARLIER_CANDIDATES)):
        if name not in effective:
            effective = {**effective, name: model_config.get(name) or earlier}
    if any(name not in effective for name in BATCH_KL_SETTINGS):
        return None
    for op, name, value in config_entries(settings.get("run_config", {})):
        own = op == "trained_model" and name in BATCH_KL_SETTINGS
        ignored = (op, name) in BENCHMARK_FIELDS or (op, name) in REPEAT_FIELDS
        if (op, name) == ("mined_negatives", "teacher_companion"):  # spelled out, the default's models
            ignored = companion_models(value, settings["model_type"]) == default_companions
        if not own and not ignored and defaults.get((op, name), object()) != value:
            return None
    return {"model_type": settings["model_type"], "collection": Path(report["collection"]).name,
            "settings": tuple((name, effective[name]) for name in BATCH_KL_SETTINGS),
            "gain": report["tuned_minus_base_ndcg@10"]["mean"]}


def pooled_documents(setting: dict) -> float:
    """The documents a batch_kl training encodes at most: each step ranks its queries over a pool of their teacher
    candidates, and those documents' passes are nearly all of a step's time."""
    return setting["max_steps"] * setting["batch_size"] * setting["candidates_per_query"]


def best_settings(runs: list[dict], cost=lambda setting: setting["epochs"],
                  margin: float = 0.0) -> tuple[dict, list[dict]] | None:
    """The winning settings of one (model type, size) group and the runs behind them: the best mean gain, or the
    cheapest setting (by `cost` of its settings) whose mean gain is within `margin` of it."""
    collections = {r["collection"] for r in runs}
    repeats = defaultdict(lambda: defaultdict(list))
    for run in runs:
        repeats[run["settings"]][run["collection"]].append(run)
    # A setting run more than once on a collection counts with its mean gain: one run's noise (the same settings
    # and queries measured +0.0232 and +0.0164 on Cranfield sparse) should not pick the defaults.
    by_setting = {setting: {collection: {**same[-1], "gain": sum(r["gain"] for r in same) / len(same),
                                         "repeats": len(same)}
                            for collection, same in per_collection.items()}
                  for setting, per_collection in repeats.items()}
    complete = {s: c for s, c in by_setting.items() if set(c) == collections}
    if not complete:
        return None

    quality = {}  # setting -> (never worse than base on any collection, mean gain)
    for setting, per_collection in complete.items():
        gains = [r["gain"] for r in per_collection.values()]
        quality[setting] = (min(gains) >= 0, sum(gains) / len(gains))
    never_worse, best_mean = max(quality.values())
    close = [s for s, (ok, mean) in quality.items() if ok == never_worse and mean >= best_mean - margin - 1e-9]
    setting = max(close, key=lambda s: (-cost(dict(s)), quality[s][1]))
    return dict(setting), sorted(complete[setting].values(), key=lambda r: r["collection"])


def describe_gains(behind: list[dict]) -> str:
    """Each collection's gain, saying when it is the mean of repeated runs."""
    return ", ".join(f"{r['collection']} {r['gain']:+.4f}"
                     + (f" (mean of {r['repeats']} runs)" if r["repeats"] > 1 else "") for r in behind)


def build_rows(runs: list[dict], measured_on: dict[str, str] | None = None) -> list[dict]:
    """The [[row]] table from runs of one base model per type; `measured_on` names a type's base model where it is
    not the type's default, and each of its rows says so."""
    rows = []
    for model_type in MODEL_TYPES:
        groups = defaultdict(list)
        for run in runs:
            if run["model_type"] == model_type:
                groups[run["documents"]].append(run)
        measured = []
        for documents in sorted(groups):
            winner = best_settings(groups[documents])
            if winner:
                measured.append((documents, *winner))
        if not measured:
            continue
        smallest_docs, smallest, _ = measured[0]
        if smallest_docs >= 100:
            # Half the smallest measured sample or less: as many optimizer steps as measured, so more epochs.
            epochs = min(MAX_SMALL_CORPUS_EPOCHS, smallest["epochs"] * 2)
            rows.append({"model_type": model_type, "max_documents": smallest_docs // 2, **smallest, "epochs": epochs,
                         "basis": f"rule: {smallest_docs // 2:,} documents or fewer give half the pairs of the "
                                  f"{smallest_docs:,}-document runs, so twice the epochs keep their step count"})
        for position, (documents, setting, behind) in enumerate(measured):
            upper = measured[position + 1][0] - 1 if position + 1 < len(measured) else documents * 5
            gains = describe_gains(behind)
            rows.append({"model_type": model_type, "max_documents": upper, **setting,
                         "basis": f"measured: best of {len(groups[documents])} runs at {documents:,} sampled "
                                  f"documents; nDCG@10 gain {gains}"})
        largest_docs, largest, _ = measured[-1]
        epochs = max(1.0, largest["epochs"] / 5)
        rows.append({"model_type": model_type, "max_documents": 0, **largest, "epochs": epochs,
                     "basis": f"rule: over {largest_docs * 5:,} documents, the {largest_docs:,}-document settings "
                              f"with epochs cut to keep steps per pair no higher (at least 1)"})
    for row in rows:
        if row["model_type"] in (measured_on or {}):
            row["basis"] += (f"; measured on {measured_on[row['model_type']]}: the MNRL recipe has no run of the "
                             f"{row['model_type']} default base model")
    measured_types = {row["model_type"] for row in rows}
    for model_type in MODEL_TYPES:
        if model_type not in measured_types and "dense" in measured_types:
            rows += [{**row, "model_type": model_type,
                      "basis": f"rule: {model_type} not benchmarked with today's defaults; the dense row "
                               f"({row['basis']})"} for row in rows if row["model_type"] == "dense"]
    return rows


def build_batch_kl_entries(runs: list[dict]) -> list[dict]:
    """One entry per model type that batch_kl trains; each must have been benchmarked."""
    entries = []
    for model_type in BATCH_KL_MODEL_TYPES:
        of_type = [run for run in runs if run["model_type"] == model_type]
        winner = best_settings(of_type, cost=pooled_documents, margin=STEPS_MARGIN) if of_type else None
        if not winner:
            raise SystemExit(f"no batch_kl run of a {model_type} model with today's teacher and sample sizes on "
                             f"every collection; run `finetune-assets benchmark --model-type {model_type}` first")
        setting, behind = winner
        best, best_behind = best_settings(of_type, cost=pooled_documents)
        choice = f"best of {len(of_type)} batch_kl runs"
        if best != setting:
            choice = (f"fewest pooled documents of {len(of_type)} batch_kl runs within {STEPS_MARGIN} of the best mean "
                      f"gain ({best['max_steps']} steps x {best['candidates_per_query']} candidates: "
                      f"{describe_gains(best_behind)})")
        entries.append({"model_type": model_type, **setting,
                        "basis": f"measured: {choice}; nDCG@10 gain {describe_gains(behind)}"})
    return entries


def to_toml(rows: list[dict], sources: list[str], batch_kl: list[dict] = ()) -> str:
    lines = ["# Written by `python -m benchmarks.smart_defaults` from these benchmark results; regenerate, don't edit:"]
    lines += [f"#   {source}" for source in sources]
    lines.append("# A row applies to corpus samples of up to max_documents documents (0 = any size).")
    lines.append("# A [[batch_kl]] entry's max_steps is the training length without trained_model.training_budget_minutes;"
                 "\n# with a budget, steps are epochs passes over the rows, cut to what fits the budget "
                 "(core/training/training_length.py).")
    for row in rows:
        lines.append("\n[[row]]")
        for key in ("model_type", "max_documents", *SETTINGS, "basis"):
            lines.append(f"{key} = {json.dumps(row[key])}")
    for entry in batch_kl:
        lines.append("\n[[batch_kl]]")
        for key in ("model_type", *BATCH_KL_SETTINGS, "basis"):
            lines.append(f"{key} = {json.dumps(entry[key])}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="benchmark JSON files")
    parser.add_argument("--out", default=str(TABLE), help="TOML file to write")
    args = parser.parse_args(argv)
    defaults = current_defaults()
    sizes = benchmark_sample_sizes()
    runs, batch_kl_runs, used = [], [], []
    for path in sorted(args.results):
        report = json.loads(Path(path).read_text())
        if report.get("collection"):
            try:
                require_development(report["collection"], "the smart-defaults generator")
            except ValueError as error:
                parser.error(f"{path}: {error}")
        run = describe_run(report, defaults)
        batch_kl_run = describe_batch_kl_run(report, defaults, sizes)
        runs += [run] if run else []
        batch_kl_runs += [batch_kl_run] if batch_kl_run else []
        if run or batch_kl_run:
            used.append(Path(path).name)
    rows = build_rows(*of_one_base_model(runs))
    if not rows:
        raise SystemExit("no benchmark run made with today's default techniques; nothing to derive from")
    entries = build_batch_kl_entries(batch_kl_runs)
    Path(args.out).write_text(to_toml(rows, used, entries), encoding="utf-8")
    for row in rows:
        print(f"{row['model_type']:<15} <= {row['max_documents'] or 'any':>6} docs: epochs {row['epochs']}, "
              f"lr {row['learning_rate']}, batch {row['batch_size']}, queries/type {row['queries_per_type']}, "
              f"negatives {row['num_negatives']}  ({row['basis'][:60]})")
    for entry in entries:
        print(f"batch_kl {entry['model_type']:<6}: epochs {entry['epochs']}, lr {entry['learning_rate']}, batch "
              f"{entry['batch_size']}, max_steps {entry['max_steps']}, max_seq_length {entry['max_seq_length']}, "
              f"candidates {entry['candidates_per_query']}  "
              f"({entry['basis']})")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
