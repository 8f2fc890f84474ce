"""What every benchmark command writes beside its JSON figures: the markdown table, also printed."""
from __future__ import annotations

from pathlib import Path


def write_table(out: Path, table: str) -> None:
    """The table in `out` with the suffix .md (the JSON figures keep `out`), and on standard output."""
    out.with_suffix(".md").write_text(table + "\n", encoding="utf-8")
    print(table)
