"""OpenSearch index-name rules: a partition key is an index name, so it must be one OpenSearch accepts."""
from __future__ import annotations

_FORBIDDEN = set('\\/*?"<>| ,#:')


class InvalidIndexName(ValueError):
    pass


def index_name_problem(name: str) -> str | None:
    """Why OpenSearch would reject `name` as an index name, or None when it is valid."""
    if not name:
        return "it is empty"
    if name in (".", ".."):
        return "'.' and '..' are reserved"
    if name != name.lower():
        return "it has upper-case letters (OpenSearch index names are lower case)"
    if name[0] in "_-+":
        return f"it starts with '{name[0]}'"
    bad = sorted({ch for ch in name if ch in _FORBIDDEN})
    if bad:
        return "it contains " + ", ".join(repr(ch) for ch in bad)
    if len(name.encode("utf-8")) > 255:
        return "it is longer than 255 bytes"
    return None


def validate_index_name(name: str) -> str:
    problem = index_name_problem(name)
    if problem:
        raise InvalidIndexName(f"{name!r} is not a valid OpenSearch index name: {problem}.")
    return name
