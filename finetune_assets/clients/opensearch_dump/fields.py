"""Turn one search hit's ``_source`` into a document ``{"id", "text", "title"}``, or the reason it is skipped."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def _resolve(value: Any, parts: list[str]) -> list[Any]:
    """All values at a dotted path; lists (arrays, nested documents) are walked, literal dotted keys tried."""
    if not parts:
        return [value]
    if isinstance(value, list):
        return [found for item in value for found in _resolve(item, parts)]
    if not isinstance(value, dict):
        return []
    found: list[Any] = []
    for end in range(len(parts), 0, -1):
        key = ".".join(parts[:end])
        if key in value:
            found.extend(_resolve(value[key], parts[end:]))
    return found


def _flatten(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if isinstance(value, list):
            out.extend(_flatten(value))
        elif value is not None:
            out.append(value)
    return out


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", bool: "boolean"}.get(type(value), type(value).__name__)


def _values(source: dict, name: str) -> list[Any]:
    """Non-null values at a field name or dotted path, arrays flattened."""
    if "." not in name:
        value = source.get(name)
        if value is None:
            return []
        return _flatten(value) if isinstance(value, list) else [value]
    return _flatten(_resolve(source, name.split(".")))


@dataclass(frozen=True)
class FieldSpec:
    """The text field(s), joined with newlines, and the optional title field to read from each hit."""

    text_fields: tuple[str, ...]
    title_field: str | None

    @property
    def source_includes(self) -> list[str]:
        return list(self.text_fields) + ([self.title_field] if self.title_field else [])

    def extract(self, hit: dict) -> tuple[dict | None, str | None]:
        """(document, None) or (None, reason the hit was skipped)."""
        source = hit.get("_source")
        if not isinstance(source, dict):
            return None, "no _source (the index does not store documents' source)"
        texts: list[str] = []
        missing: list[str] = []
        problems: list[str] = []
        for name in self.text_fields:
            value = source.get(name)
            if isinstance(value, str) and value.strip():          # fast path: a plain text field
                texts.append(value)
                continue
            values = _values(source, name)
            if not values:
                missing.append(name)
                continue
            strings = [v for v in values if isinstance(v, str)]
            if len(strings) < len(values):
                bad = next(v for v in values if not isinstance(v, str))
                problems.append(f"field '{name}' is not text ({_type_name(bad)})")
            text = "\n".join(v for v in strings if v.strip())
            if text:
                texts.append(text)
            elif len(strings) == len(values):
                problems.append(f"field '{name}' is empty")
        if not texts:
            if missing and len(missing) == len(self.text_fields):
                names = ", ".join(f"'{m}'" for m in missing)
                return None, f"missing field{'s' if len(missing) > 1 else ''} {names}"
            return None, "; ".join(problems + [f"missing field '{m}'" for m in missing])
        title = None
        if self.title_field:
            value = source.get(self.title_field)
            if isinstance(value, str):
                title = value if value.strip() else None
            else:
                titles = [v for v in _values(source, self.title_field) if isinstance(v, str) and v.strip()]
                title = " ".join(titles) or None
        return {"id": hit.get("_id"), "text": texts[0] if len(texts) == 1 else "\n".join(texts),
                "title": title}, None
