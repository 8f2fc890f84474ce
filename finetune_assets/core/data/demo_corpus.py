"""A real corpus every machine has offline: the docstrings of the running Python's standard library."""
from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

from finetune_assets.core.jsonl import write_jsonl

# Modules with rich docstrings across many topics, so the corpus has near-duplicates and distractors.
MODULES = (
    "argparse", "asyncio", "base64", "bisect", "calendar", "collections", "concurrent.futures", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fnmatch",
    "fractions", "ftplib", "functools", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "http.client",
    "imaplib", "inspect", "io", "ipaddress", "itertools", "json", "logging", "lzma", "mailbox", "math",
    "mimetypes", "multiprocessing", "operator", "os", "pathlib", "pickle", "platform", "plistlib", "poplib",
    "pprint", "queue", "random", "re", "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "signal",
    "smtplib", "socket", "sqlite3", "ssl", "statistics", "string", "struct", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "time", "timeit", "tokenize", "traceback", "typing", "unittest",
    "urllib.parse", "urllib.request", "uuid", "warnings", "weakref", "xml.etree.ElementTree", "zipfile", "zlib",
)


def _entries(module_name: str) -> Iterator[tuple[str, str]]:
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return
    yield module_name, inspect.getdoc(module) or ""
    for name, member in sorted(vars(module).items()):
        if name.startswith("_") or getattr(member, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(member) or inspect.isfunction(member) or inspect.isbuiltin(member):
            yield f"{module_name}.{name}", inspect.getdoc(member) or ""


def python_docs_documents(min_chars: int = 200, max_chars: int = 4000) -> list[dict]:
    """One document per module, class and function whose docstring has at least `min_chars` characters."""
    documents, seen = [], set()
    for module_name in MODULES:
        for qualified_name, doc in _entries(module_name):
            text = " ".join(doc.split())
            if len(text) < min_chars or text in seen:
                continue
            seen.add(text)
            documents.append({"id": qualified_name, "title": qualified_name, "text": text[:max_chars]})
    return documents


def write_python_docs_corpus(path: str | Path) -> tuple[Path, int]:
    path = Path(path)
    count = write_jsonl(path, python_docs_documents())
    return path, count


def describe() -> str:
    return f"Python {sys.version.split()[0]} standard library docstrings"
