"""Helpers that turn results into Dagster metadata values the UI renders well."""

import base64
from collections.abc import Mapping, Sequence

from dagster import MetadataValue


def image(png: bytes, alt: str) -> MetadataValue:
    # The UI renders Markdown images from data URIs, so the chart shows inline on the asset page.
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def table(rows: Sequence[Mapping], columns: Sequence[str], max_chars: int = 120) -> MetadataValue:
    def cell(value) -> str:
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        text = " ".join(text.split()).replace("|", "\\|")
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return MetadataValue.md("\n".join(lines))
