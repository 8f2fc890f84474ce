"""Download a finished job's model.tar.gz and unpack it safely into a local model folder."""
from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path

from finetune_assets.clients.sagemaker_training.aws import split_s3_uri


def _replaceable(folder: Path) -> None:
    resolved = folder.resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        raise ValueError(f"refusing to replace {resolved}: give the model its own folder")


def download_model(s3, model_artifacts_uri: str, model_dir: str | Path) -> Path:
    """Download ``model.tar.gz`` and untar it (tarfile ``data`` filter: no links out, no absolute paths).

    ``model_dir`` is replaced: its old contents are removed once the new ones are extracted next to it.
    """
    bucket, key = split_s3_uri(model_artifacts_uri)
    model_dir = Path(model_dir)
    _replaceable(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".model-", dir=model_dir.parent) as staging:
        archive = Path(staging) / "model.tar.gz"
        s3.download_file(bucket, key, str(archive))
        extracted = Path(staging) / "model"
        extracted.mkdir()
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(extracted, filter="data")
        if model_dir.exists():
            shutil.rmtree(model_dir)
        shutil.move(str(extracted), str(model_dir))
    return model_dir
