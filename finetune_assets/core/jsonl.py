"""Small JSONL helpers shared by every stage (records between assets are JSONL files)."""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import suppress
from pathlib import Path


def _naming(path: Path, error: OSError) -> OSError:
    # A failed write (disk full, quota) carries no file name of its own: name the file being written.
    return OSError(error.errno, error.strerror, str(path))


def _write_atomically(path: Path, write) -> None:
    """Call `write(handle)` on a temp file beside `path`, then rename it over `path`; a failed write removes the
    temp file and names `path` in its error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            write(out)
        tmp.replace(path)
    except OSError as error:
        with suppress(OSError):  # the disk may refuse this too; the first error is the one to report
            tmp.unlink(missing_ok=True)
        if error.filename is not None:
            raise
        raise _naming(path, error) from error


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records atomically (temp file + rename), so a crashed run never leaves half a file."""
    count = 0

    def write(out) -> None:
        nonlocal count
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1

    _write_atomically(Path(path), write)
    return count


def read_jsonl(path: str | Path) -> Iterator[dict]:
    with Path(path).open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{line_number}: not valid JSON ({exc.msg})") from exc


def write_json(path: str | Path, obj) -> None:
    """Write one JSON document atomically (temp file + rename)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"  # a value JSON cannot hold fails before any write
    _write_atomically(Path(path), lambda out: out.write(text))


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))
