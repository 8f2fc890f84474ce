"""Check before reading any page that the index exists, has (matching) documents and maps the text fields."""
from __future__ import annotations

import json
from typing import Any

from opensearchpy import exceptions as os_errors

from finetune_assets.clients.opensearch_dump.errors import (
    AuthenticationError,
    EmptyIndexError,
    IndexDumpError,
    IndexNotFoundError,
    TextFieldError,
)
from finetune_assets.clients.opensearch_dump.failures import describe, is_index_missing
from finetune_assets.clients.opensearch_dump.session import DumpSession


def _mapped_fields(mapping_node: dict, prefix: str = "") -> dict[str, str]:
    """Leaf paths -> type, from a mapping's properties (multi-fields left out: they are not in _source)."""
    out: dict[str, str] = {}
    for name, node in (mapping_node.get("properties") or {}).items():
        path = f"{prefix}{name}"
        if isinstance(node, dict) and "properties" in node:
            out.update(_mapped_fields(node, path + "."))
            if node.get("type") == "nested":
                out.setdefault(path, "nested")
        elif isinstance(node, dict):
            out[path] = str(node.get("type", "object"))
    return out


def _field_status(mappings: dict, path: str) -> str:
    """'present', 'absent' (no document can hold it) or 'unknown' (dynamic false, disabled object, flat_object)."""
    node: Any = mappings
    dynamic = str(mappings.get("dynamic", "true")).lower()
    for part in path.split("."):
        if not isinstance(node, dict) or node.get("enabled") is False or node.get("type") == "flat_object":
            return "unknown"
        dynamic = str(node.get("dynamic", dynamic)).lower()
        props = node.get("properties") or {}
        if part not in props:
            return "unknown" if dynamic == "false" else "absent"
        node = props[part]
    return "present"


def fields_seen_text(fields: dict[str, str], limit: int = 40) -> str:
    """The mapped fields with their types, for messages that say a text field was not found."""
    if not fields:
        return "none (the mapping is empty)"
    names = [f"{name} ({kind})" for name, kind in sorted(fields.items())]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def preflight(session: DumpSession) -> dict[str, str] | None:
    """Index exists, has (matching) documents, and the text field is in the mapping.

    Sets ``session.expected`` to the document count; returns the mapped fields, or None when the mapping
    could not be read (a warning says so).
    """
    index, query, spec = session.index, session.query, session.spec
    body = {"query": query} if query else None
    try:
        count = session.call(f"count on '{index}'", lambda: session.client.count(index=index, body=body))
    except os_errors.TransportError as exc:
        if is_index_missing(exc):
            raise IndexNotFoundError(f"index '{index}' does not exist on {session.url} "
                                     f"({describe(exc)})") from exc
        raise IndexDumpError(f"cannot count documents of '{index}': {describe(exc)}") from exc
    total = int(count.get("count", 0))
    if total == 0:
        if query:
            raise EmptyIndexError(f"no document of index '{index}' matches the query {json.dumps(query)}")
        raise EmptyIndexError(f"index '{index}' is empty (0 documents): nothing to dump")
    session.expected = total
    try:
        mapping = session.call("get mapping", lambda: session.client.indices.get_mapping(index=index))
    except (os_errors.TransportError, AuthenticationError) as exc:
        session.warnings.append(f"could not read the mapping ({describe(exc)}); field names not checked before "
                                f"the dump")
        return None
    fields: dict[str, str] = {}
    per_index = [m.get("mappings") or {} for m in mapping.values() if isinstance(m, dict)]
    for mappings in per_index:
        fields.update(_mapped_fields(mappings))
    for name in spec.text_fields:
        states = {_field_status(m, name) for m in per_index}
        if per_index and states == {"absent"}:
            raise TextFieldError(f"no document has field '{name}' in index '{index}'; fields seen: "
                                 f"{fields_seen_text(fields)}")
    if spec.title_field:
        if per_index and {_field_status(m, spec.title_field) for m in per_index} == {"absent"}:
            session.warnings.append(f"no document has title field '{spec.title_field}'; titles are empty")
    return fields
