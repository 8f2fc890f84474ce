"""Write the package folder ml-commons registers: a deterministic model zip, its register body and a manifest.

What ml-commons needs for a local model (register through `POST /_plugins/_ml/models/meta` plus
`POST /_plugins/_ml/models/<model_id>/chunk/<n>`, or `_register` with a `url` pointing at the zip):

* a zip with exactly one model file (`*.pt` TorchScript or `*.onnx`) and `tokenizer.json`, both at the
  zip root: ml-commons unzips it and looks for the model file among the top-level files only;
* a register body with `name`, `version`, `model_format`, `function_name`, `model_content_hash_value`
  (SHA-256 of the zip), `model_content_size_in_bytes`, `total_chunks` and, for text embedding,
  `model_config` (`model_type`, `embedding_dimension`, `framework_type`, `pooling_mode`,
  `normalize_result`, `all_config`).

Reproducible: zip entries are STORED with a fixed timestamp, so the same model files give the same zip bytes
and SHA-256. Imports nothing heavy, so the ml-commons client can read these constants cheaply.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# opensearch-py-ml's ModelUploader uploads the zip in chunks of this size (MODEL_CHUNK_MAX_SIZE).
MODEL_CHUNK_SIZE_BYTES = 10_000_000
# A fixed timestamp for every zip entry, so the zip bytes (and its SHA-256) only depend on content.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
REGISTER_BODY_FILE = "ml_commons_register.json"
MANIFEST_FILE = "package.json"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FORMAT_VERSION = 1


class ExportError(ValueError):
    """The model directory cannot be exported, or the exported package does not reproduce the model."""


@dataclass(frozen=True)
class ExportedPackage:
    out_dir: Path
    zip_path: Path
    register_body_path: Path
    manifest_path: Path
    register_body: dict
    manifest: dict
    sha256: str
    size_bytes: int
    model_format: str
    function_name: str
    embedding_dimension: int  # vocabulary size for sparse models
    max_seq_length: int
    cosine: float  # lowest cosine between the packaged model and the original over the probe texts
    seconds: float
    warnings: tuple[str, ...] = field(default_factory=tuple)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def total_chunks(size_bytes: int, chunk_size_bytes: int = MODEL_CHUNK_SIZE_BYTES) -> int:
    """How many `POST .../chunk/<n>` uploads ml-commons expects for a zip of `size_bytes`."""
    return max(1, math.ceil(size_bytes / chunk_size_bytes))


def safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip()).strip("._")
    return stem or "model"


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    """Deterministic zip: sorted entries, fixed timestamp and permissions, STORED (no compression).

    STORED keeps the bytes independent of the zlib build (deflate saves only ~8% on float weights and
    costs ~5 s per 90 MB) and writes sizes in the local headers (no data descriptors), which Java's
    ZipInputStream, used by DJL inside ml-commons, requires for stored entries.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o100644 << 16
            archive.writestr(info, entries[name])
    return buffer.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "sentence-transformers", "transformers", "tokenizers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def write_package(
    *,
    out_dir: Path,
    kind: str,
    model_dir: Path,
    zip_name: str,
    entries: dict[str, bytes],
    name: str,
    version: str,
    description: str,
    model_group_id: str | None,
    model_format: str,
    function_name: str,
    model_config: dict | None,
    embedding_dimension: int,
    max_seq_length: int,
    extra_manifest: dict,
    verification: dict,
    warnings: list[str],
    started: float,
) -> ExportedPackage:
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_data = zip_bytes(entries)
    digest = hashlib.sha256(zip_data).hexdigest()
    size = len(zip_data)
    zip_path = out_dir / zip_name
    _write_atomic(zip_path, zip_data)

    body: dict[str, Any] = {
        "name": name,
        "version": str(version),
        "description": description,
        "model_format": model_format,
        "function_name": function_name,
        "model_content_hash_value": digest,
        "model_content_size_in_bytes": size,
        "total_chunks": total_chunks(size),
    }
    if model_group_id:
        body["model_group_id"] = model_group_id
    if model_config is not None:
        body["model_config"] = model_config
    manifest = {
        "format_version": MANIFEST_FORMAT_VERSION,
        "kind": kind,
        "name": name,
        "version": str(version),
        "model_format": model_format,
        "function_name": function_name,
        "source_model_dir": str(model_dir),
        "embedding_dimension": embedding_dimension,
        "max_seq_length": max_seq_length,
        **extra_manifest,
        "files": {
            "zip": zip_name,
            "register_body": REGISTER_BODY_FILE,
            "manifest": MANIFEST_FILE,
        },
        "zip": {
            "file": zip_name,
            "sha256": digest,
            "size_bytes": size,
            "entries": [
                {"name": entry, "sha256": hashlib.sha256(entries[entry]).hexdigest(), "size_bytes": len(entries[entry])}
                for entry in sorted(entries)
            ],
        },
        "upload": {
            "register_meta": "POST /_plugins/_ml/models/meta  (body: ml_commons_register.json)",
            "upload_chunk": "POST /_plugins/_ml/models/{model_id}/chunk/{chunk_number}",
            "chunk_size_bytes": MODEL_CHUNK_SIZE_BYTES,
            "total_chunks": total_chunks(size),
        },
        "verification": verification,
        "versions": _versions(),
        "warnings": warnings,
    }
    body_path = out_dir / REGISTER_BODY_FILE
    manifest_path = out_dir / MANIFEST_FILE
    _write_atomic(body_path, _json_bytes(body))
    _write_atomic(manifest_path, _json_bytes(manifest))
    return ExportedPackage(
        out_dir=out_dir,
        zip_path=zip_path,
        register_body_path=body_path,
        manifest_path=manifest_path,
        register_body=body,
        manifest=manifest,
        sha256=digest,
        size_bytes=size,
        model_format=model_format,
        function_name=function_name,
        embedding_dimension=embedding_dimension,
        max_seq_length=max_seq_length,
        cosine=float(verification["min_cosine"]),
        seconds=round(time.perf_counter() - started, 2),
        warnings=tuple(warnings),
    )
