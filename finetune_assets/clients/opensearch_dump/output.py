"""Write a dump's documents as corpus JSONL and its skipped documents beside them, checking the path first."""
from __future__ import annotations

import json
import os
from pathlib import Path

from finetune_assets.clients.opensearch_dump.result import DumpResult


def write_dump_jsonl(result: DumpResult, path: str | Path) -> int:
    """Documents as corpus JSONL (``{"_id", "title", "text"}``, BEIR layout), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for doc in result.documents:
            out.write(json.dumps({"_id": doc["id"], "title": doc.get("title") or "", "text": doc["text"]},
                                 ensure_ascii=False) + "\n")
    tmp.replace(path)
    return len(result.documents)


def write_skipped(result: DumpResult, path: Path) -> None:
    """The skipped documents (``{"id", "reason"}`` per line), written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for entry in result.skipped:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
    tmp.replace(path)


def output_problem(out: Path) -> str | None:
    """Why ``out`` cannot be written as the dump's JSONL file, or None; checked before the dump starts."""
    if out.is_dir():
        return f"--out {out} is a folder; give the file to write, e.g. {out / 'corpus.jsonl'}"
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"--out {out} cannot be created: {folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"--out {out} cannot be created: folder {folder} is not writable"
    if out.exists() and not os.access(out, os.W_OK):
        return f"--out {out} exists and is not writable"
    return None
