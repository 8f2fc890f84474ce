"""Where every artifact lives: a local folder (the default) or an `s3://bucket/prefix` URI.

Assets work on local folders either way: with S3, `artifact_dir` is a local staging folder that `publish`
uploads and `fetch` downloads, so the retrieval code never needs to know about S3. Every materialization writes
a new version; only a successful `publish` makes it current, so a failed or killed step never loses the last
good artifact (see `ArtifactStorage`).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

from dagster import ConfigurableResource, get_dagster_logger
from pydantic import Field, PrivateAttr

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; abandoned staging folders are then recognised by age order only
    fcntl = None

DEFAULT_ROOT = "data"
CURRENT = "current"  # local pointer: a symlink to the current version folder, swapped atomically
CURRENT_KEY = "CURRENT"  # S3 pointer: an object holding the current version's name, written last
MANIFEST = ".published.json"  # written into a version when it is sealed: its files, their sizes, the time
# A version is `<UTC time to the microsecond>Z-<run id prefix>`: names sort in the order the runs started.
VERSION_PATTERN = re.compile(r"^\d{8}T\d{12}Z-[0-9a-z]{1,32}$")
LEGACY_VERSION = "00000000T000000000000Z-legacy"  # files stored before versioning, directly in the asset folder
CREDENTIAL_HINT = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (a profile in ~/.aws), and "
                   "AWS_ENDPOINT_URL when the bucket is on an S3-compatible endpoint rather than AWS")


class MissingArtifact(FileNotFoundError):
    pass


class ArtifactStorageError(RuntimeError):
    """Storage could not be read or written; the message names the path or bucket and what was left current."""


def new_version(run_id: str = "") -> str:
    """A sortable version name: the UTC time now, then the first characters of the run id (random without one)."""
    tag = re.sub(r"[^0-9a-z]", "", run_id.lower())[:8] or secrets.token_hex(4)
    return f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}Z-{tag}"


def expired_versions(current: str, versions: set[str], complete: set[str], keep_previous: int) -> list[str]:
    """The versions pruning removes: complete ones beyond the newest `keep_previous` besides `current`, and
    incomplete ones (failed or killed staging) that started before `current`. Never `current` itself."""
    others = sorted((complete & versions) - {current}, reverse=True)
    stale = sorted(v for v in versions - complete if v < current)
    return others[keep_previous:] + stale


class ArtifactStorage(ConfigurableResource):
    """Artifacts live in versions: `<root>/artifacts/<index>/<asset>/<version>/`, where a version is
    `<UTC start time>Z-<run id prefix>` (names sort by time). Corpora are read from `<root>/corpora/<index>/`.

    - A step writes into the fresh version folder that `artifact_dir` returns; `publish` seals it (a
      `.published.json` manifest of files and sizes, everything fsynced) and only then makes it current: locally
      by atomically swapping the `<asset>/current` symlink, on S3 by uploading the files, then the manifest, and
      last the `<asset>/CURRENT` object naming the version. A failed or killed step leaves the previous version
      and the pointer untouched; each materialization's metadata `path` names its own version folder.
    - `fetch` resolves the pointer (S3: downloads that version once into the local cache). Locally the path
      `<root>/artifacts/<index>/<asset>/current/...` always shows the current files.
    - Pruning, after every successful publish: the current version and the `keep_previous` newest other complete
      versions stay; older complete versions are deleted; incomplete versions (failed or killed staging) that
      started before the current one are deleted too, except, locally, one whose writer is still running (it
      holds a lock file). Nothing newer than the current version is touched unless it is complete and beyond
      `keep_previous`. Files from before versioning count as the oldest complete version. S3 has no such lock:
      two runs materializing the same asset and partition at once against S3 can prune each other's upload.
    - Resumable state that must outlive a failed step (e.g. Bedrock job ARNs) is not versioned: `write_state`
      stores it at `<root>/state/<index>/<asset>/<name>`.
    """

    root: str = Field(default=DEFAULT_ROOT, description="A local folder, or s3://bucket/prefix")
    cache_dir: str = Field(default="", description="Local staging folder for S3 (default: ~/.cache/finetune-assets)")
    server_side_encryption: str = Field(default="AES256", description="S3 SSE: AES256 or aws:kms")
    kms_key_id: str = Field(default="", description="KMS key for aws:kms encryption (optional)")
    keep_previous: int = Field(default=2, ge=0, description="Complete versions kept besides the current one, "
                                                            "to roll back to or compare with")
    s3_max_attempts: int = Field(default=8, ge=1, description="Attempts per S3 request (throttling, 5xx and "
                                                               "connection errors are retried with backoff)")
    s3_timeout_s: float = Field(default=60.0, gt=0, description="Seconds to connect to S3, and to wait for each "
                                                                 "response, before an attempt counts as failed")

    _locks: dict = PrivateAttr(default_factory=dict)  # staging folder -> open lock file descriptor
    _client: object = PrivateAttr(default=None)

    # -- layout ---------------------------------------------------------------------------------
    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    @property
    def bucket(self) -> str:
        return urlparse(self.root).netloc

    def _key(self, *parts: str) -> str:
        prefix = urlparse(self.root).path.strip("/") if self.is_s3 else ""
        return "/".join(p.strip("/") for p in (prefix, *parts) if p and p.strip("/"))

    def _local_root(self) -> Path:
        if not self.is_s3:
            return Path(self.root).expanduser().resolve()
        parsed = urlparse(self.root)
        base = Path(self.cache_dir or Path.home() / ".cache" / "finetune-assets").expanduser()
        return base / parsed.netloc / parsed.path.strip("/")

    def _asset_dir(self, index: str, asset: str) -> Path:
        return self._local_root() / "artifacts" / index / asset

    def _location(self, *parts: str) -> str:
        if self.is_s3:
            return f"s3://{self.bucket}/{self._key(*parts)}"
        return str(self._local_root().joinpath(*[p for p in parts if p]))

    def asset_uri(self, index: str, asset: str) -> str:
        """Where all versions of an asset live (for messages; read files through `fetch`)."""
        return self._location("artifacts", index, asset)

    def version_uri(self, index: str, asset: str, version: str, name: str = "") -> str:
        return self._location("artifacts", index, asset, version, name)

    def uri(self, index: str, asset: str, name: str = "") -> str:
        """URI of the current version (or of `name` in it); MissingArtifact when never published."""
        version = self.current_version(index, asset)
        if version is None:
            if not self._has_legacy(index, asset):
                raise self._missing(index, asset)
            return self._location("artifacts", index, asset, name)
        return self.version_uri(index, asset, version, name)

    def corpus_uri(self, index: str) -> str:
        if self.is_s3:
            return f"s3://{self.bucket}/{self._key('corpora', index)}/"
        return str(self._local_root() / "corpora" / index)

    def state_uri(self, index: str, asset: str, name: str) -> str:
        return self._location("state", index, asset, name)

    def _missing(self, index: str, asset: str) -> MissingArtifact:
        return MissingArtifact(f"no '{asset}' artifact for partition '{index}' at {self.asset_uri(index, asset)}: "
                               f"materialize '{asset}' for this partition first")

    # -- artifacts ------------------------------------------------------------------------------
    def artifact_dir(self, index: str, asset: str, *, run_id: str = "") -> Path:
        """A new, empty version folder for this materialization's files; it becomes current only through
        `publish`, so a step that fails before then leaves the current version as it was."""
        asset_dir = self._asset_dir(index, asset)
        try:
            asset_dir.mkdir(parents=True, exist_ok=True)
            while True:
                version = new_version(run_id)
                lock = self._lock(asset_dir, version, wait=False)  # before the folder: a live writer always holds it
                try:
                    (asset_dir / version).mkdir()
                except FileExistsError:  # the same microsecond and run: take the next name
                    self._unlock(asset_dir, version, lock)
                    continue
                except OSError:
                    self._unlock(asset_dir, version, lock)
                    raise
                self._locks[str(asset_dir / version)] = lock
                return asset_dir / version
        except OSError as error:
            raise ArtifactStorageError(
                f"cannot create a version folder for '{asset}' (partition '{index}') in {asset_dir}: "
                f"{error.strerror or error}; the current version is unchanged") from error

    def publish(self, index: str, asset: str, folder: Path) -> str:
        """Seal the version `folder` (from `artifact_dir`), make it durable (uploaded for S3), make it the
        current version, prune old ones, and return its URI."""
        folder = Path(folder)
        asset_dir = self._asset_dir(index, asset)
        version = folder.name
        if not VERSION_PATTERN.match(version) or folder.parent.resolve() != asset_dir.resolve() or not folder.is_dir():
            raise ValueError(f"{folder} is not a version folder of '{asset}' for partition '{index}': publish the "
                             f"folder that artifact_dir('{index}', '{asset}') returned")
        manifest = self._seal(folder, index, asset)
        if self.is_s3:
            self._upload_version(index, asset, folder, manifest)
        else:
            self._point_local(index, asset, version)
        self._release(folder)
        self._prune_quietly(index, asset, version)
        return self.version_uri(index, asset, version)

    def fetch(self, index: str, asset: str) -> Path:
        """Local folder with the current version of an upstream asset; a clear error when it was never published."""
        if self.is_s3:
            version = self._s3_current(index, asset)
            if version is not None:
                return self._download_version(index, asset, version)
            folder = self._download_legacy(index, asset)
            if folder is None:
                raise self._missing(index, asset)
            return folder
        asset_dir = self._asset_dir(index, asset)
        version = self._local_current(asset_dir)
        if version is not None:
            folder = asset_dir / version
            if not folder.is_dir():
                raise ArtifactStorageError(f"{asset_dir / CURRENT} names version {version}, which is missing from "
                                           f"{asset_dir}: materialize '{asset}' for partition '{index}' again")
            return folder
        if self._has_legacy(index, asset):
            return asset_dir
        raise self._missing(index, asset)

    def current_version(self, index: str, asset: str) -> str | None:
        """The current version's name, or None when nothing was published (or only unversioned older files)."""
        if self.is_s3:
            return self._s3_current(index, asset)
        return self._local_current(self._asset_dir(index, asset))

    def corpus_location(self, index: str) -> Path:
        """Local folder with the partition's corpus files (downloaded from S3 when the root is S3)."""
        folder = self._local_root() / "corpora" / index
        if self.is_s3:
            self._download_prefix(self._key("corpora", index), folder)
        return folder

    # -- resumable state ------------------------------------------------------------------------
    def read_state(self, index: str, asset: str, name: str) -> dict | None:
        """JSON state saved by `write_state` (None when there is none)."""
        if not self.is_s3:
            path = self._local_root() / "state" / index / asset / name
            return _parse_state(path.read_bytes(), str(path)) if path.is_file() else None
        from botocore.exceptions import ClientError

        key = self._key("state", index, asset, name)
        client = self._s3()
        try:
            body = client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._s3_error(f"could not read s3://{self.bucket}/{key}", error) from error
        except _transfer_errors() as error:
            raise self._s3_error(f"could not read s3://{self.bucket}/{key}", error) from error
        return _parse_state(body, f"s3://{self.bucket}/{key}")

    def write_state(self, index: str, asset: str, name: str, data: dict) -> str:
        """Save JSON state outside the versions, replacing it atomically, so it survives a failed step."""
        body = json.dumps(data, indent=2, ensure_ascii=False).encode()
        if not self.is_s3:
            path = self._local_root() / "state" / index / asset / name
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_atomically(path, body)
            except OSError as error:
                raise ArtifactStorageError(f"could not save {path}: {error.strerror or error}") from error
            return str(path)
        key = self._key("state", index, asset, name)
        client = self._s3()
        try:
            client.put_object(Bucket=self.bucket, Key=key, Body=body, **self._extra_args())
        except _transfer_errors() as error:
            raise self._s3_error(f"could not save s3://{self.bucket}/{key}", error) from error
        return f"s3://{self.bucket}/{key}"

    # -- lifecycle ------------------------------------------------------------------------------
    def teardown_after_execution(self, context) -> None:
        # A step that failed never published: free its staging folders for pruning, keeping their files to look at.
        for name in list(self._locks):
            folder = Path(name)
            self._release(folder)
            index, asset = folder.parent.parent.name, folder.parent.name
            message = (f"'{asset}' (partition '{index}') was not published: its unfinished version {folder} is kept "
                       f"for inspection until pruned; the current version is still "
                       f"{self._current_or_none(index, asset)}")
            (context.log if getattr(context, "log", None) else get_dagster_logger()).warning(message)

    # -- versions on local disk -----------------------------------------------------------------
    def _seal(self, folder: Path, index: str, asset: str) -> dict:
        """Write the manifest after fsyncing every file, so a version is only ever current with all its bytes."""
        files = {}
        path = folder
        try:
            for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
                files[path.relative_to(folder).as_posix()] = path.stat().st_size
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
            manifest = {"index": index, "asset": asset, "version": folder.name,
                        "published_at": datetime.now(timezone.utc).isoformat(), "files": files}
            path = folder / MANIFEST
            _write_atomically(path, json.dumps(manifest, indent=2, ensure_ascii=False).encode())
        except OSError as error:
            raise ArtifactStorageError(
                f"could not publish '{asset}' for partition '{index}': {path}: {error.strerror or error}; "
                f"the current version is still {self._current_or_none(index, asset)}") from error
        return manifest

    def _point_local(self, index: str, asset: str, version: str) -> None:
        asset_dir = self._asset_dir(index, asset)
        temporary = asset_dir / f".{CURRENT}.{version}"
        try:
            if temporary.is_symlink():
                temporary.unlink()
            os.symlink(version, temporary)  # relative: the tree can be moved or mounted elsewhere
            os.replace(temporary, asset_dir / CURRENT)  # rename(2): readers see the old or the new version
            _fsync_dir(asset_dir)
        except OSError as error:
            if temporary.is_symlink():
                temporary.unlink()
            raise ArtifactStorageError(
                f"could not make {asset_dir / version} current ({asset_dir / CURRENT}): {error.strerror or error}; "
                f"the current version is still {self._current_or_none(index, asset)}") from error

    @staticmethod
    def _local_current(asset_dir: Path) -> str | None:
        try:
            version = os.readlink(asset_dir / CURRENT)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ArtifactStorageError(f"{asset_dir / CURRENT} must be a symlink to a version folder: "
                                       f"{error.strerror or error}") from error
        if not VERSION_PATTERN.match(version):
            raise ArtifactStorageError(f"{asset_dir / CURRENT} points at {version!r}, not at a version folder "
                                       "of this asset; point it at one or remove it")
        return version

    def _current_or_none(self, index: str, asset: str) -> str:
        try:
            version = self.current_version(index, asset)
            if version is None and self._has_legacy(index, asset):
                return f"{self.asset_uri(index, asset)} (files stored before versioning)"
        except Exception as error:  # already reporting a failure: name this one too rather than hide the first
            return f"unknown ({error})"
        return self.version_uri(index, asset, version) if version else "none (never published)"

    def _legacy_entries(self, asset_dir: Path) -> list[Path]:
        if not asset_dir.is_dir():
            return []
        return [p for p in asset_dir.iterdir()
                if not p.name.startswith(".") and p.name != CURRENT and not VERSION_PATTERN.match(p.name)]

    def _has_legacy(self, index: str, asset: str) -> bool:
        if self.is_s3:
            return bool(self._legacy_keys(index, asset, limit=1))
        return bool(self._legacy_entries(self._asset_dir(index, asset)))

    # -- locks ----------------------------------------------------------------------------------
    @staticmethod
    def _lock(asset_dir: Path, version: str, wait: bool) -> int | None:
        """Hold `.<version>.lock` (flock): a writer while staging, a downloader while filling the cache.
        None when the lock is held elsewhere (wait=False) or the platform has no flock."""
        if fcntl is None:
            return None
        descriptor = os.open(asset_dir / f".{version}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(descriptor)
            return None
        return descriptor

    @staticmethod
    def _unlock(asset_dir: Path, version: str, descriptor: int | None, remove: bool = True) -> None:
        if descriptor is None:
            return
        if remove:
            (asset_dir / f".{version}.lock").unlink(missing_ok=True)
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)

    def _release(self, folder: Path) -> None:
        descriptor = self._locks.pop(str(folder), None)
        self._unlock(folder.parent, folder.name, descriptor)

    # -- pruning --------------------------------------------------------------------------------
    def _prune_quietly(self, index: str, asset: str, current: str) -> None:
        # The new version is already current: a failed clean-up must not fail the step, but it is reported.
        try:
            removed = self._prune_local(self._asset_dir(index, asset), current)
            if self.is_s3:
                removed += self._prune_s3(index, asset, current)
        except (*_transfer_errors(), ArtifactStorageError) as error:
            get_dagster_logger().warning(f"pruning old versions of '{asset}' (partition '{index}') in "
                                         f"{self.asset_uri(index, asset)} failed: {error}")
            return
        if removed:
            get_dagster_logger().info(f"pruned {len(removed)} old or failed version(s) of '{asset}' "
                                      f"(partition '{index}'): {', '.join(removed)}")

    def _prune_local(self, asset_dir: Path, current: str) -> list[str]:
        """Apply the pruning rule to a local asset folder (the artifact tree, or the S3 cache's copy)."""
        versions = {p.name for p in asset_dir.iterdir() if p.is_dir() and not p.is_symlink()
                    and VERSION_PATTERN.match(p.name)}
        complete = {v for v in versions if (asset_dir / v / MANIFEST).is_file()}
        legacy = self._legacy_entries(asset_dir) if not self.is_s3 else []
        if legacy:
            versions.add(LEGACY_VERSION)
            complete.add(LEGACY_VERSION)
        removed = []
        for version in expired_versions(current, versions, complete, self.keep_previous):
            if version == LEGACY_VERSION and legacy:
                for entry in legacy:
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
                removed.append("unversioned files")
                continue
            lock = self._lock(asset_dir, version, wait=False)
            if lock is None and fcntl is not None:
                continue  # its writer (or a download) is still running
            shutil.rmtree(asset_dir / version, ignore_errors=False)
            shutil.rmtree(asset_dir / f".{version}.download", ignore_errors=True)
            self._unlock(asset_dir, version, lock)
            removed.append(version)
        return removed

    def _prune_s3(self, index: str, asset: str, current: str) -> list[str]:
        prefix = self._key("artifacts", index, asset) + "/"
        client = self._s3()
        by_version: dict[str, list[str]] = {}
        complete = set()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix):]
                first, _, rest = relative.partition("/")
                if relative == CURRENT_KEY:
                    continue
                version = first if rest and VERSION_PATTERN.match(first) else LEGACY_VERSION
                by_version.setdefault(version, []).append(item["Key"])
                if rest == MANIFEST or version == LEGACY_VERSION:
                    complete.add(version)
        expired = expired_versions(current, set(by_version), complete, self.keep_previous)
        keys = [key for version in expired for key in by_version[version]]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes up to 1000 keys
            response = client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": key} for key in keys[start:start + 1000]], "Quiet": True})
            if response.get("Errors"):
                first = response["Errors"][0]
                raise ArtifactStorageError(f"could not delete {len(response['Errors'])} object(s) in "
                                           f"s3://{self.bucket}/{prefix}, e.g. {first.get('Key')}: "
                                           f"{first.get('Code')} {first.get('Message')}")
        return [f"s3:{v}" if v != LEGACY_VERSION else "s3: unversioned files" for v in expired]

    # -- S3 -------------------------------------------------------------------------------------
    def _s3(self):
        if self._client is not None:
            return self._client
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError

        try:
            session = boto3.session.Session()
            credentials = session.get_credentials()
        except BotoCoreError as error:  # e.g. AWS_PROFILE names a profile that does not exist
            raise ArtifactStorageError(f"cannot load AWS credentials for the storage bucket s3://{self.bucket} "
                                       f"(root {self.root}): {error}; {CREDENTIAL_HINT}") from error
        if credentials is None:
            raise ArtifactStorageError(f"no AWS credentials for the storage bucket s3://{self.bucket} "
                                       f"(root {self.root}): {CREDENTIAL_HINT}")
        # Standard retry mode retries throttling, 5xx and connection errors with backoff; boto3 honours
        # AWS_ENDPOINT_URL.
        self._client = session.client("s3", config=Config(
            retries={"mode": "standard", "max_attempts": self.s3_max_attempts},
            connect_timeout=self.s3_timeout_s, read_timeout=self.s3_timeout_s))
        return self._client

    def _s3_error(self, what: str, error: Exception, then: str = "") -> Exception:
        """`error` as an ArtifactStorageError that says what failed in which bucket, and how to fix credentials;
        `then` says what was left as it was."""
        from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

        if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
            reason = f"no usable AWS credentials ({error}): {CREDENTIAL_HINT}"
        elif isinstance(error, ClientError):
            details = error.response.get("Error", {})
            reason = f"S3 answered {details.get('Code')}: {details.get('Message')}"
        else:
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or "AWS"
            reason = f"{type(error).__name__}: {error} (endpoint {endpoint})"
        return ArtifactStorageError(f"{what} in bucket '{self.bucket}': {reason}" + (f"; {then}" if then else ""))

    def _extra_args(self) -> dict:
        extra = {"ServerSideEncryption": self.server_side_encryption}
        if self.server_side_encryption == "aws:kms" and self.kms_key_id:
            extra["SSEKMSKeyId"] = self.kms_key_id
        return extra

    def _upload_version(self, index: str, asset: str, folder: Path, manifest: dict) -> None:
        """Files first, then the manifest, then the pointer: until the last put, readers see the old version."""
        previous = self._current_or_none(index, asset)
        prefix = self._key("artifacts", index, asset, folder.name)
        pointer = self._key("artifacts", index, asset, CURRENT_KEY)
        client = self._s3()
        try:
            # upload_file streams from disk and switches to multipart above 8 MB: no file is held in memory.
            for relative in [*manifest["files"], MANIFEST]:
                client.upload_file(str(folder / relative), self.bucket, f"{prefix}/{relative}",
                                   ExtraArgs=self._extra_args())
            client.put_object(Bucket=self.bucket, Key=pointer, Body=f"{folder.name}\n".encode(),
                              **self._extra_args())
        except _transfer_errors() as error:
            raise self._s3_error(f"could not publish '{asset}' for partition '{index}' to s3://{self.bucket}/{prefix}/",
                                 error, then=f"s3://{self.bucket}/{pointer} still names the current version, "
                                             f"{previous}") from error

    def _s3_current(self, index: str, asset: str) -> str | None:
        from botocore.exceptions import ClientError

        key = self._key("artifacts", index, asset, CURRENT_KEY)
        client = self._s3()
        try:
            version = client.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode().strip()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._s3_error(f"could not read s3://{self.bucket}/{key}", error) from error
        except _transfer_errors() as error:
            raise self._s3_error(f"could not read s3://{self.bucket}/{key}", error) from error
        if not VERSION_PATTERN.match(version):
            raise ArtifactStorageError(f"s3://{self.bucket}/{key} holds {version[:80]!r}, not a version name: "
                                       f"write the name of a version under s3://{self.bucket}/{key[:-len(CURRENT_KEY)]}"
                                       " into it or delete it")
        return version

    def _download_version(self, index: str, asset: str, version: str) -> Path:
        """The version in the local cache: downloaded once (versions never change), checked against its manifest."""
        asset_dir = self._asset_dir(index, asset)
        target = asset_dir / version
        if _complete(target):
            return target
        prefix = self._key("artifacts", index, asset, version)
        asset_dir.mkdir(parents=True, exist_ok=True)
        lock = self._lock(asset_dir, version, wait=True)  # one download per version on this machine
        try:
            if _complete(target):
                return target
            staging = asset_dir / f".{version}.download"
            client = self._s3()
            key = f"{prefix}/{MANIFEST}"
            try:
                manifest = json.loads(client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
                if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
                    raise ValueError("the manifest has no 'files' mapping")
                for relative, size in manifest["files"].items():
                    destination = staging / relative
                    if destination.is_file() and destination.stat().st_size == size:
                        continue  # left by an interrupted download
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    key = f"{prefix}/{relative}"
                    client.download_file(self.bucket, key, str(destination))
            except (*_transfer_errors(), ValueError) as error:
                raise self._s3_error(f"could not download version {version} of '{asset}' (partition '{index}'): "
                                     f"s3://{self.bucket}/{key}", error) from error
            staging.mkdir(parents=True, exist_ok=True)
            _write_atomically(staging / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False).encode())
            if not _complete(staging):
                raise ArtifactStorageError(f"s3://{self.bucket}/{prefix}/ does not match its manifest (sizes "
                                           f"differ): materialize '{asset}' for partition '{index}' again")
            if target.exists():
                shutil.rmtree(target)  # an incomplete staging copy of the same version
            os.rename(staging, target)
        finally:
            self._unlock(asset_dir, version, lock, remove=False)
        self._prune_cache(asset_dir, version)
        return target

    def _prune_cache(self, asset_dir: Path, current: str) -> None:
        try:
            self._prune_local(asset_dir, current)
        except OSError as error:
            get_dagster_logger().warning(f"pruning the local cache {asset_dir} failed: {error}")

    def _legacy_keys(self, index: str, asset: str, limit: int = 0) -> list[dict]:
        """Objects stored directly under the asset's prefix before versioning (not in a version, not the pointer)."""
        prefix = self._key("artifacts", index, asset) + "/"
        found = []
        client = self._s3()
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    relative = item["Key"][len(prefix):]
                    first, _, rest = relative.partition("/")
                    if relative == CURRENT_KEY or (rest and VERSION_PATTERN.match(first)) or relative.endswith("/"):
                        continue
                    found.append(item)
                    if limit and len(found) >= limit:
                        return found
        except _transfer_errors() as error:
            raise self._s3_error(f"could not list s3://{self.bucket}/{prefix}", error) from error
        return found

    def _download_legacy(self, index: str, asset: str) -> Path | None:
        items = self._legacy_keys(index, asset)
        if not items:
            return None
        prefix = self._key("artifacts", index, asset) + "/"
        folder = self._asset_dir(index, asset) / LEGACY_VERSION
        self._s3()
        try:
            for item in items:
                self._download_item(item, folder / item["Key"][len(prefix):])
        except _transfer_errors() as error:
            raise self._s3_error(f"could not download s3://{self.bucket}/{prefix}", error) from error
        return folder

    def _download_item(self, item: dict, target: Path) -> None:
        if target.exists() and target.stat().st_size == item["Size"] and \
                target.stat().st_mtime >= item["LastModified"].timestamp():
            return  # already cached and not older than the object
        target.parent.mkdir(parents=True, exist_ok=True)
        self._s3().download_file(self.bucket, item["Key"], str(target))

    def _download_prefix(self, prefix: str, folder: Path) -> None:
        client = self._s3()
        try:
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix.rstrip("/") + "/"):
                for item in page.get("Contents", []):
                    relative = item["Key"][len(prefix.rstrip("/")) + 1:]
                    if relative and not relative.endswith("/"):
                        self._download_item(item, folder / relative)
        except _transfer_errors() as error:
            raise self._s3_error(f"could not download s3://{self.bucket}/{prefix}", error) from error


def _transfer_errors() -> tuple[type[BaseException], ...]:
    """What an S3 call or a transfer to or from local disk raises when the service, network or disk fails."""
    from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    return BotoCoreError, ClientError, S3UploadFailedError, S3TransferFailedError, OSError


def _write_atomically(path: Path, body: bytes) -> None:
    """Write to a temporary file beside `path`, fsync it, then rename it over `path`."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _parse_state(body: bytes, location: str) -> dict:
    try:
        state = json.loads(body)
    except ValueError as error:
        raise ArtifactStorageError(f"{location} is not valid JSON ({error}): fix or delete it") from error
    if not isinstance(state, dict):
        raise ArtifactStorageError(f"{location} must hold a JSON object: fix or delete it")
    return state


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _complete(folder: Path) -> bool:
    """Whether `folder` holds a manifest and every file it lists, at the listed size."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        return all((folder / name).stat().st_size == size for name, size in manifest["files"].items())
    except (OSError, ValueError, KeyError, AttributeError):
        return False


def default_storage() -> ArtifactStorage:
    return ArtifactStorage(root=os.environ.get("FINETUNE_STORAGE_ROOT", DEFAULT_ROOT))
