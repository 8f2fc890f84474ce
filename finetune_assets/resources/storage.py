"""Where every artifact lives: a local folder (the default) or an `s3://bucket/prefix` URI.

Assets work on local folders either way: with S3, `artifact_dir` is a local staging copy that
`publish` uploads and `fetch` downloads, so the retrieval code never needs to know about S3.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

from dagster import ConfigurableResource
from pydantic import Field

DEFAULT_ROOT = "data"


class MissingArtifact(FileNotFoundError):
    pass


class ArtifactStorage(ConfigurableResource):
    """Artifacts are stored under `<root>/artifacts/<index>/<asset>/`; corpora under `<root>/corpora/<index>/`."""

    root: str = Field(default=DEFAULT_ROOT, description="A local folder, or s3://bucket/prefix")
    cache_dir: str = Field(default="", description="Local staging folder for S3 (default: ~/.cache/finetune-assets)")
    server_side_encryption: str = Field(default="AES256", description="S3 SSE: AES256 or aws:kms")
    kms_key_id: str = Field(default="", description="KMS key for aws:kms encryption (optional)")

    # -- layout ---------------------------------------------------------------------------------
    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def _key(self, *parts: str) -> str:
        prefix = urlparse(self.root).path.strip("/") if self.is_s3 else ""
        return "/".join(p.strip("/") for p in (prefix, *parts) if p and p.strip("/"))

    def _local_root(self) -> Path:
        if not self.is_s3:
            return Path(self.root).expanduser().resolve()
        parsed = urlparse(self.root)
        base = Path(self.cache_dir or Path.home() / ".cache" / "finetune-assets").expanduser()
        return base / parsed.netloc / parsed.path.strip("/")

    def uri(self, index: str, asset: str, name: str = "") -> str:
        if self.is_s3:
            return f"s3://{urlparse(self.root).netloc}/{self._key('artifacts', index, asset, name)}"
        return str(self._local_root() / "artifacts" / index / asset / name).rstrip("/")

    def corpus_uri(self, index: str) -> str:
        if self.is_s3:
            return f"s3://{urlparse(self.root).netloc}/{self._key('corpora', index)}/"
        return str(self._local_root() / "corpora" / index)

    # -- artifacts ------------------------------------------------------------------------------
    def artifact_dir(self, index: str, asset: str, *, clean: bool = True) -> Path:
        """A fresh local folder to write an asset's files into (emptied, so re-runs never mix files)."""
        folder = self._local_root() / "artifacts" / index / asset
        if clean and folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def publish(self, index: str, asset: str) -> str:
        """Make the staged files durable (uploaded for S3) and return the asset's URI."""
        folder = self._local_root() / "artifacts" / index / asset
        if self.is_s3:
            self._upload_folder(folder, self._key("artifacts", index, asset))
        return self.uri(index, asset)

    def fetch(self, index: str, asset: str) -> Path:
        """Local folder with an upstream asset's files; a clear error when it was never materialized."""
        folder = self._local_root() / "artifacts" / index / asset
        if self.is_s3:
            self._download_prefix(self._key("artifacts", index, asset), folder)
        if not folder.is_dir() or not any(folder.iterdir()):
            raise MissingArtifact(f"no '{asset}' artifact for partition '{index}' at {self.uri(index, asset)}: "
                                  f"materialize '{asset}' for this partition first")
        return folder

    def corpus_location(self, index: str) -> Path:
        """Local folder with the partition's corpus files (downloaded from S3 when the root is S3)."""
        folder = self._local_root() / "corpora" / index
        if self.is_s3:
            self._download_prefix(self._key("corpora", index), folder)
        return folder

    # -- S3 -------------------------------------------------------------------------------------
    def _s3(self):
        import boto3
        from botocore.config import Config

        # Standard retry mode retries throttling and 5xx with backoff; boto3 honours AWS_ENDPOINT_URL.
        return boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 8}))

    def _extra_args(self) -> dict:
        extra = {"ServerSideEncryption": self.server_side_encryption}
        if self.server_side_encryption == "aws:kms" and self.kms_key_id:
            extra["SSEKMSKeyId"] = self.kms_key_id
        return extra

    def _upload_folder(self, folder: Path, prefix: str) -> None:
        client, bucket = self._s3(), urlparse(self.root).netloc
        # upload_file streams from disk and switches to multipart above 8 MB: no file is held in memory.
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(folder).as_posix()}"
            client.upload_file(str(path), bucket, key, ExtraArgs=self._extra_args())

    def _download_prefix(self, prefix: str, folder: Path) -> None:
        client, bucket = self._s3(), urlparse(self.root).netloc
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix.rstrip("/")) + 1:]
                if not relative or relative.endswith("/"):
                    continue
                target = folder / relative
                if target.exists() and target.stat().st_size == item["Size"] and \
                        target.stat().st_mtime >= item["LastModified"].timestamp():
                    continue  # already cached and not older than the object
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, item["Key"], str(target))


def default_storage() -> ArtifactStorage:
    return ArtifactStorage(root=os.environ.get("FINETUNE_STORAGE_ROOT", DEFAULT_ROOT))
