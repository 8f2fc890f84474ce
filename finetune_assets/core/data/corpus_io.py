"""Read a user's corpus (JSONL, plain text or parquet) into validated, deduplicated documents.

Every record read ends up either in ``documents`` or in ``quarantined`` (with a reason naming the file, the
line and the field), so ``records_read == len(documents) + len(quarantined)`` always holds. Files are
streamed: JSONL and text line by line, parquet by record batch.

Pure logic: nothing here imports Dagster or boto3.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from finetune_assets.core.jsonl import write_jsonl

JSON_LINES_SUFFIXES = (".jsonl", ".json", ".ndjson")
TEXT_SUFFIXES = (".txt",)
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED_SUFFIXES = JSON_LINES_SUFFIXES + TEXT_SUFFIXES + PARQUET_SUFFIXES
DEFAULT_ID_FIELDS = ("_id", "id", "doc_id")
RAW_MAX_CHARS = 500
PARQUET_BATCH_ROWS = 1024

# C0 controls except \t (0x09) and \n (0x0a); \r is turned into \n first. Lone surrogates (from JSON escapes
# such as "\ud800") cannot be written as UTF-8, so they go too.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b-\x1f\ud800-\udfff]")
_SURROGATES = re.compile("[\ud800-\udfff]")
_UTF8_BOM = b"\xef\xbb\xbf"


class CorpusError(ValueError):
    """Nothing usable was found at a corpus location (the message says where and why)."""


@dataclass
class QuarantinedRecord:
    source: str           # file path
    line: int | None      # 1-based line (JSONL/txt) or row (parquet); None for a whole file
    record_id: str | None
    reason: str           # human readable, names the field
    raw: str              # the offending raw record, truncated to RAW_MAX_CHARS
    kind: str = ""        # short category for counting, e.g. "malformed json", "duplicate id"


@dataclass
class CorpusReadResult:
    documents: list[dict]
    quarantined: list[QuarantinedRecord]
    files: list[str]
    records_read: int
    duplicate_ids: int
    duplicate_texts: int
    location: str = ""

    def quarantine_counts(self) -> Counter:
        """Quarantined records per kind, most common first."""
        return Counter(entry.kind or entry.reason for entry in self.quarantined)


# ---------------------------------------------------------------------------------------------- files


def find_corpus_files(location: str | Path) -> list[Path]:
    """The supported files at `location`: the file itself, or a folder searched recursively (sorted, hidden
    files and folders skipped)."""
    root = Path(location).expanduser()
    if not root.exists():
        raise CorpusError(f"corpus location {str(location)!r} does not exist")
    if root.is_file():
        if root.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise CorpusError(f"corpus file {str(root)!r} has unsupported type {root.suffix or '(no suffix)'!r}; "
                              f"supported: {', '.join(SUPPORTED_SUFFIXES)}")
        return [root]
    if not root.is_dir():
        raise CorpusError(f"corpus location {str(root)!r} is neither a file nor a folder")

    supported: list[Path] = []
    others: list[str] = []
    seen_dirs: set[str] = set()
    for folder, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen_dirs:  # a symlink loop
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(folder) / name
            if path.suffix.lower() in SUPPORTED_SUFFIXES:
                supported.append(path)
            else:
                others.append(path.relative_to(root).as_posix())
    if not supported:
        if others:
            shown = ", ".join(sorted(others)[:10]) + (f" and {len(others) - 10} more" if len(others) > 10 else "")
            raise CorpusError(f"no supported corpus files in folder {str(root)!r} (supported: "
                              f"{', '.join(SUPPORTED_SUFFIXES)}); found {len(others)} other file(s): {shown}")
        raise CorpusError(f"corpus folder {str(root)!r} is empty (no supported files: "
                          f"{', '.join(SUPPORTED_SUFFIXES)})")
    return sorted(supported, key=lambda p: p.relative_to(root).as_posix())


# -------------------------------------------------------------------------------------------- helpers


def clean_text(value: str) -> str:
    """Line ends to \\n; NUL and other C0 controls (except \\n and \\t) and lone surrogates removed."""
    if "\r" in value:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL_CHARS.sub("", value)


def normalize_for_dedup(text: str) -> str:
    """Whitespace-collapsed, case-folded text: two documents equal under this are duplicates."""
    return " ".join(text.split()).casefold()


def _truncate(text: str) -> str:
    return text if len(text) <= RAW_MAX_CHARS else text[:RAW_MAX_CHARS]


def _raw_from_bytes(line: bytes) -> str:
    return _truncate(line.decode("utf-8", errors="replace").rstrip("\r\n"))


def _raw_from_record(record: Any) -> str:
    try:
        return _truncate(json.dumps(record, ensure_ascii=False, default=str))
    except (TypeError, ValueError):
        return _truncate(repr(record))


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array"}.get(type(value), type(value).__name__)


_MISSING = object()


def _get_path(record: dict, path: str) -> Any:
    """record[path], or a dotted path into nested objects ("body.content"); _MISSING when absent."""
    if path in record:
        return record[path]
    if "." not in path:
        return _MISSING
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _decode_utf8(data: bytes) -> tuple[str | None, str | None]:
    """(text, None) or (None, reason naming the byte offset)."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        bad = data[exc.start:exc.end]
        return None, f"not valid UTF-8 (byte 0x{bad[:1].hex()} at byte offset {exc.start}: {exc.reason})"


class _Problem(Exception):
    def __init__(self, kind: str, reason: str, record_id: str | None = None):
        super().__init__(reason)
        self.kind, self.reason, self.record_id = kind, reason, record_id


# ------------------------------------------------------------------------------------------ the reader


_NO_BODY_KINDS = frozenset({"missing text", "null text", "empty text"})


@dataclass
class _Reader:
    root: Path
    id_field: str | None
    text_fields: tuple[str, ...]
    title_field: str | None
    txt_mode: str
    min_chars: int
    documents: list[dict] = field(default_factory=list)
    quarantined: list[QuarantinedRecord] = field(default_factory=list)
    records_read: int = 0
    duplicate_ids: int = 0
    duplicate_texts: int = 0
    # id -> (display name, line); normalized-text digest -> id
    _seen_ids: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    _seen_texts: dict[bytes, str] = field(default_factory=dict)

    def display_name(self, path: Path) -> str:
        """The file as named in generated ids and messages: relative to the corpus folder, or its name."""
        if self.root.is_dir():
            return path.relative_to(self.root).as_posix()
        return path.name

    # -- outcome of one record

    def quarantine(self, path: Path, line: int | None, record_id: str | None, kind: str, reason: str,
                   raw: str) -> None:
        self.records_read += 1
        self.quarantined.append(QuarantinedRecord(str(path), line, record_id, reason, raw, kind))

    def accept(self, path: Path, line: int | None, doc_id: str, text: str, title: str, raw_fn) -> None:
        name = self.display_name(path)
        first = self._seen_ids.get(doc_id)
        if first is not None:
            self.duplicate_ids += 1
            where = first[0] if first[1] is None else f"{first[0]}:{first[1]}"
            self.quarantine(path, line, doc_id, "duplicate id", f"duplicate id '{doc_id}' (first seen at {where})",
                            raw_fn())
            return
        digest = hashlib.blake2b(normalize_for_dedup(text).encode("utf-8"), digest_size=16).digest()
        original = self._seen_texts.get(digest)
        if original is not None:
            self.duplicate_texts += 1
            self.quarantine(path, line, doc_id, "duplicate text", f"duplicate text of document '{original}'",
                            raw_fn())
            return
        self._seen_ids[doc_id] = (name, line)
        self._seen_texts[digest] = doc_id
        self.records_read += 1
        self.documents.append({"id": doc_id, "text": text, "title": title})

    # -- field rules shared by JSON lines and parquet

    def _record_id(self, record: dict, path: Path, line: int) -> str:
        candidates = (self.id_field,) if self.id_field else DEFAULT_ID_FIELDS
        for name in candidates:
            value = _get_path(record, name)
            if value is _MISSING or value is None:
                continue
            if isinstance(value, bool):
                raise _Problem("bad id", f"id field '{name}' is not a string or integer (got bool)")
            if isinstance(value, int):
                return str(value)
            if isinstance(value, float) and value.is_integer():
                return str(int(value))
            if isinstance(value, str):
                value = _SURROGATES.sub("", value)
                if value.strip():
                    return value
                continue  # an empty id counts as no id
            raise _Problem("bad id", f"id field '{name}' is not a string or integer (got {_type_name(value)})")
        return f"{self.display_name(path)}:{line}"

    def _record_text(self, record: dict, doc_id: str) -> str:
        parts: list[str] = []
        problems: list[tuple[str, str]] = []
        for name in self.text_fields:
            value = _get_path(record, name)
            if value is _MISSING:
                problems.append(("missing text", f"missing text field '{name}'"))
            elif value is None:
                problems.append(("null text", f"text field '{name}' is null"))
            elif not isinstance(value, str):
                problems.append(("text not a string", f"text field '{name}' is not a string (got {_type_name(value)})"))
            else:
                cleaned = clean_text(value).strip()
                if cleaned:
                    parts.append(cleaned)
                else:
                    problems.append(("empty text", f"text field '{name}' is empty"))
        if not parts:
            kinds = [kind for kind, _ in problems]
            kind = kinds[0] if len(set(kinds)) == 1 else "no usable text"
            raise _Problem(kind, "; ".join(reason for _, reason in problems), doc_id)
        return self._check_length("\n".join(parts), doc_id)

    def _check_length(self, text: str, doc_id: str) -> str:
        if len(text) < self.min_chars:
            raise _Problem("too short", f"text too short ({len(text)} chars, minimum {self.min_chars})", doc_id)
        return text

    def _record_title(self, record: dict) -> str:
        if not self.title_field:
            return ""
        value = _get_path(record, self.title_field)
        if isinstance(value, str):
            return clean_text(value).strip()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        return ""

    def add_record(self, record: Any, path: Path, line: int, raw_fn) -> None:
        if not isinstance(record, dict):
            self.quarantine(path, line, None, "not an object",
                            f"JSON value is {_type_name(record)}, not an object", raw_fn())
            return
        doc_id: str | None = None
        title = self._record_title(record)
        try:
            doc_id = self._record_id(record, path, line)
            try:
                text = self._record_text(record, doc_id)
            except _Problem as problem:
                # A record with a title but no body is still a document (half of CACM is titles only):
                # its title becomes its text rather than the record being lost.
                if not title or problem.kind not in _NO_BODY_KINDS:
                    raise
                text, title = self._check_length(title, doc_id), ""
        except _Problem as problem:
            self.quarantine(path, line, problem.record_id or doc_id, problem.kind, problem.reason, raw_fn())
            return
        self.accept(path, line, doc_id, text, title, raw_fn)

    # -- formats

    def read_json_lines(self, path: Path) -> None:
        try:
            handle = path.open("rb")
        except OSError as exc:
            self.quarantine(path, None, None, "unreadable file", f"cannot open file ({exc})", "")
            return
        with handle:
            for number, data in enumerate(handle, start=1):
                if number == 1 and data.startswith(_UTF8_BOM):
                    data = data[len(_UTF8_BOM):]
                if not data.strip():
                    continue
                raw_fn = lambda data=data: _raw_from_bytes(data)  # noqa: E731
                line, problem = _decode_utf8(data)
                if problem:
                    self.quarantine(path, number, None, "not utf-8", problem, raw_fn())
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    self.quarantine(path, number, None, "malformed json",
                                    f"malformed JSON ({exc.msg} at column {exc.colno})", raw_fn())
                    continue
                self.add_record(record, path, number, raw_fn)

    def read_text(self, path: Path) -> None:
        if self.txt_mode == "file":
            self._read_text_file(path)
            return
        stem = self.display_name(path)
        stem = stem[: -len(path.suffix)] if path.suffix else stem
        try:
            handle = path.open("rb")
        except OSError as exc:
            self.quarantine(path, None, None, "unreadable file", f"cannot open file ({exc})", "")
            return
        with handle:
            for number, data in enumerate(handle, start=1):
                if number == 1 and data.startswith(_UTF8_BOM):
                    data = data[len(_UTF8_BOM):]
                if not data.strip():
                    continue
                doc_id = f"{stem}:{number}"
                raw_fn = lambda data=data: _raw_from_bytes(data)  # noqa: E731
                self._accept_text(path, number, doc_id, data, raw_fn, "text line is empty")

    def _read_text_file(self, path: Path) -> None:
        doc_id = self.display_name(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            self.quarantine(path, None, doc_id, "unreadable file", f"cannot read file ({exc})", "")
            return
        if data.startswith(_UTF8_BOM):
            data = data[len(_UTF8_BOM):]
        raw_fn = lambda: _truncate(data.decode("utf-8", errors="replace"))  # noqa: E731
        self._accept_text(path, None, doc_id, data, raw_fn, "text file is empty")

    def _accept_text(self, path: Path, number: int | None, doc_id: str, data: bytes, raw_fn, empty_reason: str) -> None:
        """One plain-text document (a line or a whole file): decode, clean, check, then accept or quarantine."""
        content, problem = _decode_utf8(data)
        if problem:
            self.quarantine(path, number, doc_id, "not utf-8", problem, raw_fn())
            return
        text = clean_text(content).strip()
        try:
            if not text:
                raise _Problem("empty text", empty_reason, doc_id)
            self._check_length(text, doc_id)
        except _Problem as problem:
            self.quarantine(path, number, doc_id, problem.kind, problem.reason, raw_fn())
            return
        self.accept(path, number, doc_id, text, "", raw_fn)

    def read_parquet(self, path: Path) -> None:
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except Exception as exc:  # noqa: BLE001 - any arrow error means the file cannot be read
            self.quarantine(path, None, None, "unreadable file", f"cannot read parquet file ({exc})", "")
            return
        names = set(parquet.schema_arrow.names)
        wanted = [*((self.id_field,) if self.id_field else DEFAULT_ID_FIELDS), *self.text_fields]
        if self.title_field:
            wanted.append(self.title_field)
        columns: list[str] = []
        for name in wanted:
            for candidate in (name, name.split(".")[0]):
                if candidate in names and candidate not in columns:
                    columns.append(candidate)
        row = 0
        try:
            for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
                records = batch.to_pylist() if columns else [{} for _ in range(batch.num_rows)]
                for record in records:
                    row += 1
                    self.add_record(record, path, row, lambda record=record: _raw_from_record(record))
        except Exception as exc:  # noqa: BLE001 - a corrupt row group: say where reading stopped
            self.quarantine(path, None, None, "unreadable file",
                            f"cannot read parquet file after row {row} ({exc})", "")


def read_corpus(location: str | Path, *, id_field: str | None = None, text_fields: Sequence[str] = ("text",),
                title_field: str | None = "title", txt_mode: Literal["line", "file"] = "line",
                min_chars: int = 1) -> CorpusReadResult:
    """Read every supported file at `location` into documents ({"id", "text", "title"}) and quarantined records.

    Raises CorpusError when the location has no supported file or no valid document.
    """
    if isinstance(text_fields, str):
        text_fields = (text_fields,)
    text_fields = tuple(text_fields)
    if not text_fields:
        raise ValueError("text_fields must name at least one field")
    if txt_mode not in ("line", "file"):
        raise ValueError(f"txt_mode must be 'line' or 'file', not {txt_mode!r}")
    root = Path(location).expanduser()
    files = find_corpus_files(root)
    reader = _Reader(root=root, id_field=id_field or None, text_fields=text_fields,
                     title_field=title_field or None, txt_mode=txt_mode, min_chars=max(1, int(min_chars)))
    for path in files:
        suffix = path.suffix.lower()
        if suffix in PARQUET_SUFFIXES:
            reader.read_parquet(path)
        elif suffix in TEXT_SUFFIXES:
            reader.read_text(path)
        else:
            reader.read_json_lines(path)
    assert reader.records_read == len(reader.documents) + len(reader.quarantined)
    result = CorpusReadResult(documents=reader.documents, quarantined=reader.quarantined,
                              files=[str(p) for p in files], records_read=reader.records_read,
                              duplicate_ids=reader.duplicate_ids, duplicate_texts=reader.duplicate_texts,
                              location=str(location))
    if not result.documents:
        raise CorpusError(_no_documents_message(result, text_fields))
    return result


def _no_documents_message(result: CorpusReadResult, text_fields: tuple[str, ...]) -> str:
    shown = ", ".join(result.files[:5]) + (f" and {len(result.files) - 5} more" if len(result.files) > 5 else "")
    if result.records_read == 0:
        return (f"no valid documents in corpus {result.location!r}: {len(result.files)} file(s) ({shown}) "
                f"hold no records (all empty)")
    examples: dict[str, QuarantinedRecord] = {}
    for entry in result.quarantined:
        examples.setdefault(entry.kind or entry.reason, entry)
    top = "; ".join(
        f"{count} x {kind} (e.g. {examples[kind].source}:{examples[kind].line}: {examples[kind].reason})"
        for kind, count in result.quarantine_counts().most_common(3))
    hint = ""
    if any(e.kind in ("missing text", "no usable text") for e in result.quarantined):
        hint = f"; text is read from field(s) {', '.join(repr(f) for f in text_fields)} (set text_fields)"
    return (f"no valid documents in corpus {result.location!r}: read {result.records_read} record(s) from "
            f"{len(result.files)} file(s) ({shown}), all {len(result.quarantined)} quarantined. "
            f"Top reasons: {top}{hint}")


def write_quarantine(path: str | Path, quarantined: Iterable[QuarantinedRecord]) -> int:
    """Write quarantined records as JSONL, one object per entry; returns how many."""
    return write_jsonl(path, (asdict(entry) for entry in quarantined))


def iter_quarantine_reasons(quarantined: Iterable[QuarantinedRecord]) -> Iterator[str]:
    """'file:line: reason' lines, for logs."""
    for entry in quarantined:
        where = entry.source if entry.line is None else f"{entry.source}:{entry.line}"
        yield f"{where}: {entry.reason}"
