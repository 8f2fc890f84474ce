"""Read a user's corpus (JSON Lines, a JSON array, plain text or parquet) into validated, deduplicated documents.

Every record read ends up either in ``documents`` or in ``quarantined`` (with a reason naming the file, the
line and the field), so ``records_read == len(documents) + len(quarantined)`` holds when no sample is asked for. Files are
streamed: JSON Lines and text line by line, parquet by record batch. A ``.json``/``.jsonl``/``.ndjson`` file
whose first character is ``[`` and that parses as one JSON array is read as a list of documents (parsed whole,
so use JSON Lines for corpora larger than memory); its records are numbered by element (1-based) where JSON
Lines records are numbered by line.

Duplicates are resolved by a rule that does not depend on file or line order: among records with the same id,
and then among the remaining documents whose texts are equal once whitespace and case are normalized, the
document kept is the one with the longest text; on equal length, the one whose canonical JSON (``{"id",
"text", "title"}``, keys sorted, UTF-8, no spaces) has the smallest SHA-256. Two records that tie on both are
the same document. The others are quarantined with the location of the one kept.

With ``max_documents``, the sample is taken while streaming, so memory follows the sample, not the corpus: only
the records whose ids have the smallest seeded hashes (sampling.sample_key) are kept, a window a quarter larger
than the sample, and duplicates are resolved among them (a duplicate id always falls in or out of the window
with its twin; a duplicate text is found when both copies compete for the sample). The sample is the window's
first ``max_documents`` documents by hash; should duplicates leave it short, the files are read again with a
window four times larger. Records outside the window are counted in ``not_sampled``, so ``records_read ==
len(documents) + len(quarantined) + not_sampled``.

Pure logic: nothing here imports Dagster or boto3.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from finetune_assets.core.data.sampling import sample_key
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
    line: int | None      # 1-based line (JSONL/txt), row (parquet) or element (JSON array); None for a whole file
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
    not_sampled: int = 0  # valid records left outside the sample's window (max_documents), never compared

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


def canonical_json(document: dict) -> bytes:
    """The document's {"id", "text", "title"} as JSON with sorted keys and no spaces, UTF-8: what duplicates are
    compared by."""
    fields = {"id": document["id"], "text": document["text"], "title": document.get("title") or ""}
    return json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _rank(document: dict) -> tuple[int, bytes]:
    """Smaller is kept: the longest text first, then the smallest SHA-256 of the canonical JSON."""
    return -len(document["text"]), hashlib.sha256(canonical_json(document)).digest()


def _beats(challenger: dict, holder: dict) -> bool:
    if len(challenger["text"]) != len(holder["text"]):
        return len(challenger["text"]) > len(holder["text"])
    return _rank(challenger) < _rank(holder)


def _why(loser: dict, winner: dict) -> str:
    """Why `winner` was kept over `loser`, for the quarantine reason."""
    if len(winner["text"]) != len(loser["text"]):
        return f"longer text, {len(winner['text'])} vs {len(loser['text'])} chars"
    if canonical_json(winner) == canonical_json(loser):
        return "the same document"
    return "same text length, smaller SHA-256 of its canonical JSON"


def _duplicate_indices(documents: Sequence[dict]) -> tuple[list[int], list[tuple[int, int, str]]]:
    """Indices kept (ascending) and (dropped, kept instead, kind) for each duplicate, by the module's rule."""
    def tournament(indices: list[int], key) -> tuple[list[int], list[tuple[int, int]]]:
        groups = [key(documents[index]) for index in indices]
        best: dict[Any, int] = {}
        for index, group in zip(indices, groups):
            if group not in best or _beats(documents[index], documents[best[group]]):
                best[group] = index
        losers = [(index, best[group]) for index, group in zip(indices, groups) if best[group] != index]
        return sorted(best.values()), losers

    by_id, id_losers = tournament(list(range(len(documents))), lambda doc: doc["id"])
    kept, text_losers = tournament(by_id, _text_digest)
    return kept, ([(loser, winner, "duplicate id") for loser, winner in id_losers]
                  + [(loser, winner, "duplicate text") for loser, winner in text_losers])


def deduplicate(documents: Sequence[dict]) -> tuple[list[dict], list[tuple[dict, dict, str, str]]]:
    """Documents with duplicate ids, then duplicate normalized texts, removed by the module's rule.

    Returns the documents kept (in input order) and (dropped, kept instead, kind, why) for each one removed;
    kind is "duplicate id" or "duplicate text". Which documents are kept does not depend on the input order.
    """
    kept, losers = _duplicate_indices(documents)
    return ([documents[index] for index in kept],
            [(documents[loser], documents[winner], kind, _why(documents[loser], documents[winner]))
             for loser, winner, kind in losers])


def duplicate_reason(dropped: dict, kept: dict, kind: str, why: str, where: str) -> str:
    """The quarantine reason for a dropped duplicate; `where` locates the record kept (file:line or a URL)."""
    if kind == "duplicate id":
        return f"duplicate id '{dropped['id']}' (kept {where}: {why})"
    return f"duplicate text of document '{kept['id']}' (kept {where}: {why})"


def _text_digest(document: dict) -> bytes:
    return hashlib.blake2b(normalize_for_dedup(document["text"]).encode("utf-8"), digest_size=16).digest()


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
    # Valid records before deduplication, with where each was read (the file, and its line, row or element).
    _candidates: list[tuple[dict, Path, int | None]] = field(default_factory=list)
    # With a window (ids kept while streaming a sample): each kept id's records, and a max-heap (negated keys)
    # of the kept ids, whose top is the id the next better one pushes out.
    window: int | None = None
    seed: int = 0
    not_sampled: int = 0
    _members: dict[str, list[tuple[dict, Path, int | None]]] = field(default_factory=dict)
    _heap: list[tuple[int, str]] = field(default_factory=list)
    # How each JSON file was read ("lines" or "array") and which parquet columns, to re-read a loser's raw record.
    _json_modes: dict[Path, str] = field(default_factory=dict)
    _parquet_columns: dict[Path, list[str]] = field(default_factory=dict)

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

    def accept(self, path: Path, line: int | None, doc_id: str, text: str, title: str) -> None:
        """A valid record; whether it stays a document is decided in `finish` (duplicates)."""
        self.records_read += 1
        record = ({"id": doc_id, "text": text, "title": title}, path, line)
        if self.window is None:
            self._candidates.append(record)
        elif doc_id in self._members:
            self._members[doc_id].append(record)
        else:
            key = sample_key(self.seed, doc_id)
            if len(self._heap) < self.window:
                heapq.heappush(self._heap, (-key, doc_id))
            elif key < -self._heap[0][0]:
                _, out = heapq.heapreplace(self._heap, (-key, doc_id))
                self.not_sampled += len(self._members.pop(out))
            else:
                self.not_sampled += 1
                return
            self._members[doc_id] = [record]

    # -- duplicates, decided once everything is read

    def _where(self, path: Path, line: int | None) -> str:
        name = self.display_name(path)
        return name if line is None else f"{name}:{line}"

    def finish(self, files: Sequence[Path]) -> None:
        """Resolve duplicate ids, then duplicate texts; quarantine the losers with the raw record they came from.

        Quarantined records end up in reading order: by file (`files`' order), then line, row or element.
        """
        if self.window is not None:  # the window's records, in the order they were read
            position = {path: i for i, path in enumerate(files)}
            self._candidates = sorted((r for records in self._members.values() for r in records),
                                      key=lambda r: (position.get(r[1], len(position)), r[2] or 0))
            self._members, self._heap = {}, []
        documents = [doc for doc, _, _ in self._candidates]
        kept, losers = _duplicate_indices(documents)
        self.duplicate_ids = sum(1 for *_, kind in losers if kind == "duplicate id")
        self.duplicate_texts = len(losers) - self.duplicate_ids
        raws = self._raw_records([self._candidates[loser][1:] for loser, _, _ in losers])
        for loser, winner, kind in losers:
            doc, path, line = self._candidates[loser]
            won, won_path, won_line = self._candidates[winner]
            reason = duplicate_reason(doc, won, kind, _why(doc, won), self._where(won_path, won_line))
            self.quarantined.append(QuarantinedRecord(str(path), line, doc["id"], reason, raws[(path, line)], kind))
        self.documents = [documents[index] for index in kept]
        self._candidates = []
        order = {str(path): position for position, path in enumerate(files)}
        self.quarantined.sort(key=lambda e: (order.get(e.source, len(order)), e.line or 0))

    def _raw_records(self, locations: list[tuple[Path, int | None]]) -> dict[tuple[Path, int | None], str]:
        """The raw record at each (file, line/row/element), re-read in one pass per file (losers are few)."""
        wanted: dict[Path, set[int | None]] = {}
        for path, line in locations:
            wanted.setdefault(path, set()).add(line)
        raws: dict[tuple[Path, int | None], str] = {}
        for path, lines in wanted.items():
            try:
                raws.update(((path, line), raw) for line, raw in self._reread(path, lines))
            except (OSError, ValueError, LookupError) as exc:  # the file changed or vanished since it was read
                raws.update(((path, line), f"(raw record not re-readable: {exc})") for line in lines)
        return {location: raws.get(location, "") for location in locations}

    def _reread(self, path: Path, lines: set[int | None]) -> Iterator[tuple[int | None, str]]:
        suffix = path.suffix.lower()
        if suffix in PARQUET_SUFFIXES:
            import pyarrow.parquet as pq

            columns = self._parquet_columns.get(path, [])
            row = 0
            for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
                for record in batch.to_pylist() if columns else [{}] * batch.num_rows:
                    row += 1
                    if row in lines:
                        yield row, _raw_from_record(record)
        elif suffix in TEXT_SUFFIXES and self.txt_mode == "file":
            data = path.read_bytes()
            yield None, _truncate(data.removeprefix(_UTF8_BOM).decode("utf-8", errors="replace"))
        elif self._json_modes.get(path) == "array":
            records = json.loads(path.read_bytes().removeprefix(_UTF8_BOM).decode("utf-8"))
            for line in lines:
                yield line, _raw_from_record(records[line - 1])
        else:
            with path.open("rb") as handle:
                for number, data in enumerate(handle, start=1):
                    if number in lines:
                        yield number, _raw_from_bytes(data.removeprefix(_UTF8_BOM) if number == 1 else data)

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
        self.accept(path, line, doc_id, text, title)

    # -- formats

    def read_json(self, path: Path) -> None:
        """JSON Lines, or one JSON array of records when the file starts with "[" and parses as one."""
        try:
            with path.open("rb") as handle:
                start = handle.read(4096).removeprefix(_UTF8_BOM).lstrip()
        except OSError as exc:
            self.quarantine(path, None, None, "unreadable file", f"cannot open file ({exc})", "")
            return
        if start.startswith(b"[") and self.read_json_array(path):
            return
        self._json_modes[path] = "lines"
        self.read_json_lines(path)

    def read_json_array(self, path: Path) -> bool:
        """Read `path` as one JSON array; False when it is JSON Lines after all (a value per line)."""
        try:
            data = path.read_bytes().removeprefix(_UTF8_BOM)
        except OSError as exc:
            self.quarantine(path, None, None, "unreadable file", f"cannot read file ({exc})", "")
            return True
        content, problem = _decode_utf8(data)
        if problem:
            self.quarantine(path, None, None, "not utf-8", f"JSON array file {problem}; nothing in it was read",
                            _raw_from_bytes(data))
            return True
        try:
            records = json.loads(content)
        except json.JSONDecodeError as exc:
            if exc.msg == "Extra data" and "\n" in content[:exc.pos]:
                return False  # more than one JSON value, on separate lines: JSON Lines
            self.quarantine(path, None, None, "malformed json",
                            f"malformed JSON array ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                            f"nothing in this file was read", _truncate(content))
            return True
        self._json_modes[path] = "array"
        for number, record in enumerate(records, start=1):
            self.add_record(record, path, number, lambda record=record: _raw_from_record(record))
        return True

    def _lines(self, path: Path) -> Iterator[tuple[int, bytes]]:
        """(line number, bytes) of each non-blank line, a leading UTF-8 BOM removed; an unreadable file is
        quarantined and yields nothing."""
        try:
            handle = path.open("rb")
        except OSError as exc:
            self.quarantine(path, None, None, "unreadable file", f"cannot open file ({exc})", "")
            return
        with handle:
            for number, data in enumerate(handle, start=1):
                if number == 1 and data.startswith(_UTF8_BOM):
                    data = data[len(_UTF8_BOM):]
                if data.strip():
                    yield number, data

    def read_json_lines(self, path: Path) -> None:
        for number, data in self._lines(path):
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
        for number, data in self._lines(path):
            raw_fn = lambda data=data: _raw_from_bytes(data)  # noqa: E731
            self._accept_text(path, number, f"{stem}:{number}", data, raw_fn, "text line is empty")

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
        self.accept(path, number, doc_id, text, "")

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
        self._parquet_columns[path] = columns
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
                min_chars: int = 1, max_documents: int | None = None, seed: int = 0) -> CorpusReadResult:
    """Read every supported file at `location` into documents ({"id", "text", "title"}) and quarantined records.

    Duplicate ids and texts are resolved by the order-independent rule in the module docstring (longest text,
    then smallest SHA-256 of the canonical JSON). With `max_documents`, the documents are the seeded sample of
    that many (sampling.sample_documents' choice and order), taken while streaming. Raises CorpusError when the
    location has no supported file or no valid document.
    """
    if isinstance(text_fields, str):
        text_fields = (text_fields,)
    text_fields = tuple(text_fields)
    if not text_fields:
        raise ValueError("text_fields must name at least one field")
    if txt_mode not in ("line", "file"):
        raise ValueError(f"txt_mode must be 'line' or 'file', not {txt_mode!r}")
    if max_documents is not None and max_documents < 1:
        raise ValueError(f"max_documents must be at least 1 or None (every document), got {max_documents}")
    root = Path(location).expanduser()
    files = find_corpus_files(root)
    window = max_documents + max(max_documents // 4, 16) if max_documents else None
    while True:
        reader = _read_files(files, window, seed, root=root, id_field=id_field or None, text_fields=text_fields,
                             title_field=title_field or None, txt_mode=txt_mode, min_chars=max(1, int(min_chars)))
        if window is None or len(reader.documents) >= max_documents or not reader.not_sampled:
            break
        window *= 4  # duplicates inside the window left the sample short while other ids wait outside it
    documents, not_sampled = reader.documents, reader.not_sampled
    if max_documents and len(documents) > max_documents:
        documents = sorted(documents, key=lambda d: (sample_key(seed, d["id"]), d["id"]))
        not_sampled += len(documents) - max_documents
        documents = documents[:max_documents]
    assert reader.records_read == len(documents) + len(reader.quarantined) + not_sampled
    result = CorpusReadResult(documents=documents, quarantined=reader.quarantined,
                              files=[str(p) for p in files], records_read=reader.records_read,
                              duplicate_ids=reader.duplicate_ids, duplicate_texts=reader.duplicate_texts,
                              location=str(location), not_sampled=not_sampled)
    if not result.documents:
        raise CorpusError(_no_documents_message(result, text_fields))
    return result


def _read_files(files: Sequence[Path], window: int | None, seed: int, **options: Any) -> _Reader:
    reader = _Reader(window=window, seed=seed, **options)
    for path in files:
        suffix = path.suffix.lower()
        if suffix in PARQUET_SUFFIXES:
            reader.read_parquet(path)
        elif suffix in TEXT_SUFFIXES:
            reader.read_text(path)
        else:
            reader.read_json(path)
    reader.finish(files)
    return reader


def _no_documents_message(result: CorpusReadResult, text_fields: tuple[str, ...]) -> str:
    shown = ", ".join(result.files[:5]) + (f" and {len(result.files) - 5} more" if len(result.files) > 5 else "")
    if result.records_read == 0:
        return (f"no valid documents in corpus {result.location!r}: {len(result.files)} file(s) ({shown}) "
                f"hold no records (all empty)")
    examples: dict[str, QuarantinedRecord] = {}
    for entry in result.quarantined:
        examples.setdefault(entry.kind or entry.reason, entry)
    top = "; ".join(f"{count} x {kind} (e.g. {_location(examples[kind])}: {examples[kind].reason})"
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


def _location(entry: QuarantinedRecord) -> str:
    """'file:line', or the file alone for an entry about a whole file."""
    return entry.source if entry.line is None else f"{entry.source}:{entry.line}"


def iter_quarantine_reasons(quarantined: Iterable[QuarantinedRecord]) -> Iterator[str]:
    """'file:line: reason' lines, for logs."""
    for entry in quarantined:
        yield f"{_location(entry)}: {entry.reason}"
