"""Settings for a run whose user set none: looked up by model type and corpus size in smart_defaults.toml.

The table is written by `python -m benchmarks.smart_defaults` from benchmark results on the real collections
(`benchmarks/results/*.json`); each row says whether it was measured or extrapolated and from which runs.
`[[row]]` entries serve the pair losses (mnrl and the teacher losses) by corpus size; `[[batch_kl]]` entries serve
batch distillation by model type alone, since its max_steps cap, not the corpus size, sets the work.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

from finetune_assets.core.model_types import check_model_type

TABLE = Path(__file__).with_name("smart_defaults.toml")
SETTINGS = ("epochs", "learning_rate", "batch_size", "queries_per_type", "num_negatives")
BATCH_KL_SETTINGS = ("epochs", "learning_rate", "batch_size", "max_steps", "max_seq_length", "candidates_per_query")


@dataclass(frozen=True)
class SmartDefaults:
    model_type: str
    max_documents: int  # this row applies to corpus samples up to this size (0 = any size)
    epochs: float
    learning_rate: float
    batch_size: int
    queries_per_type: int
    num_negatives: int
    basis: str  # "measured: <result files>" or "rule: <how it was extrapolated>"


@dataclass(frozen=True)
class BatchKlDefaults:
    model_type: str
    epochs: float
    learning_rate: float
    batch_size: int
    max_steps: int
    max_seq_length: int  # tokens per text while training (never more than the base model reads)
    candidates_per_query: int  # the teacher's top documents each query adds to its batch's pool
    basis: str


def _entries(path: Path, section: str, cls) -> list:
    try:
        rows = tomllib.loads(path.read_text(encoding="utf-8"))[section]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise ValueError(f"smart defaults table {path} is unreadable: {exc!r}") from exc
    names = {f.name for f in fields(cls)}
    entries = []
    for number, row in enumerate(rows, 1):
        if set(row) != names:
            raise ValueError(f"smart defaults table {path}, {section} {number}: fields {sorted(set(row) ^ names)} "
                             f"missing or unknown")
        entries.append(cls(**row))
    return entries


@lru_cache(maxsize=4)
def load_table(path: Path = TABLE) -> tuple[SmartDefaults, ...]:
    table = _entries(path, "row", SmartDefaults)
    return tuple(sorted(table, key=lambda r: (r.model_type, r.max_documents or float("inf"))))


@lru_cache(maxsize=4)
def load_batch_kl(path: Path = TABLE) -> dict[str, BatchKlDefaults]:
    return {entry.model_type: entry for entry in _entries(path, "batch_kl", BatchKlDefaults)}


def batch_kl_lookup(model_type: str, path: Path = TABLE) -> BatchKlDefaults:
    """The batch_kl settings measured for `model_type` (batch_kl trains dense and sparse models)."""
    check_model_type(model_type)
    table = load_batch_kl(path)
    if model_type not in table:
        raise ValueError(f"smart defaults table has no batch_kl entry for model type {model_type!r} "
                         f"(it has {', '.join(sorted(table)) or 'none'})")
    return table[model_type]


def resolve_batch_kl(chosen: dict[str, object], model_type: str) -> tuple[dict[str, object], list[str]]:
    """Like resolve, from the batch_kl entry for `model_type`."""
    unknown = set(chosen) - set(BATCH_KL_SETTINGS)
    if unknown:
        raise ValueError(f"no batch_kl default for {sorted(unknown)}; known: {', '.join(BATCH_KL_SETTINGS)}")
    entry = batch_kl_lookup(model_type)
    filled = [name for name, value in chosen.items() if value is None]
    return {name: getattr(entry, name) if value is None else value for name, value in chosen.items()}, filled


def lookup(model_type: str, num_documents: int, table: tuple[SmartDefaults, ...] | None = None) -> SmartDefaults:
    """The row for `model_type` with the smallest max_documents that covers `num_documents`."""
    check_model_type(model_type)
    rows = [r for r in (table or load_table()) if r.model_type == model_type]
    for row in rows:
        if not row.max_documents or num_documents <= row.max_documents:
            return row
    if rows:
        return rows[-1]
    raise ValueError(f"smart defaults table has no row for model type {model_type!r}")


def resolve(chosen: dict[str, object], model_type: str, num_documents: int) -> tuple[dict[str, object], list[str]]:
    """`chosen` with each None replaced by the table's value; also the names that were filled in."""
    unknown = set(chosen) - set(SETTINGS)
    if unknown:
        raise ValueError(f"no smart default for {sorted(unknown)}; known: {', '.join(SETTINGS)}")
    row = lookup(model_type, num_documents)
    filled = [name for name, value in chosen.items() if value is None]
    return {name: getattr(row, name) if value is None else value for name, value in chosen.items()}, filled
