"""Register an exported package folder as a local model: check it, upload its zip in chunks, deploy it."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from finetune_assets.clients.ml_commons.api import ML, SPARSE, TOKENIZE, Api
from finetune_assets.clients.ml_commons.deploy import (
    RegistrationResult,
    cleanup_on_failure,
    create_adopting,
    deploy_model,
)
from finetune_assets.clients.ml_commons.errors import MLCommonsError, PackageError
from finetune_assets.clients.ml_commons.model_groups import (
    USABLE_STATES,
    ensure_model_group,
    group_models,
    model_group_name,
    pick_existing,
)
from finetune_assets.clients.ml_commons.settings import check_cluster_settings
from finetune_assets.clients.retry import RetryPolicy
from finetune_assets.core.export.package import (
    MANIFEST_FILE,
    MODEL_CHUNK_SIZE_BYTES,
    REGISTER_BODY_FILE,
    sha256_file,
    total_chunks,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelPackage:
    """A package folder written by ``finetune_assets.core.export`` (zip + register body + manifest)."""

    directory: Path
    zip_path: Path
    register_body: dict
    manifest: dict
    sha256: str
    size_bytes: int
    total_chunks: int
    function_name: str

    @property
    def embedding_dimension(self) -> int | None:
        config = self.register_body.get("model_config") or {}
        return config.get("embedding_dimension") or self.manifest.get("embedding_dimension")


def load_package(package_dir: str | Path, chunk_size: int = MODEL_CHUNK_SIZE_BYTES) -> ModelPackage:
    """Read and check a package folder: the zip's SHA-256, size and chunk count must match the register body."""
    directory = Path(package_dir).expanduser()
    if not directory.is_dir():
        raise PackageError(f"package folder {directory} does not exist (export the model first)")
    body_path = directory / REGISTER_BODY_FILE
    if not body_path.is_file():
        found = sorted(p.name for p in directory.iterdir())
        pair = " (an inference-free model: register its document/ and query/ packages)" \
            if {"document", "query"} <= set(found) else ""
        raise PackageError(f"no {REGISTER_BODY_FILE} in {directory}; found {found}{pair}")
    try:
        body = json.loads(body_path.read_text(encoding="utf-8"))
        manifest_path = directory / MANIFEST_FILE
        manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    except ValueError as exc:
        raise PackageError(f"unreadable JSON in {directory}: {exc}") from exc
    zip_name = (manifest.get("files") or {}).get("zip")
    zips = [directory / zip_name] if zip_name else sorted(directory.glob("*.zip"))
    if len(zips) != 1 or not zips[0].is_file():
        raise PackageError(f"expected one model zip in {directory}, found {[p.name for p in zips]}")
    zip_path = zips[0]
    missing = [k for k in ("name", "version", "model_format", "function_name", "model_content_hash_value",
                           "model_content_size_in_bytes", "total_chunks") if k not in body]
    if missing:
        raise PackageError(f"{body_path} lacks {missing}")
    size = zip_path.stat().st_size
    digest = sha256_file(zip_path)
    if digest != body["model_content_hash_value"] or size != int(body["model_content_size_in_bytes"]):
        raise PackageError(f"{zip_path.name} (sha256 {digest[:12]}..., {size} bytes) does not match "
                           f"{REGISTER_BODY_FILE} (sha256 {str(body['model_content_hash_value'])[:12]}..., "
                           f"{body['model_content_size_in_bytes']} bytes): re-export the package")
    chunks = total_chunks(size, chunk_size)
    if chunks != int(body["total_chunks"]):
        raise PackageError(f"{REGISTER_BODY_FILE} says total_chunks={body['total_chunks']} but a {size}-byte zip in "
                           f"{chunk_size}-byte chunks makes {chunks}")
    return ModelPackage(directory=directory, zip_path=zip_path, register_body=body, manifest=manifest, sha256=digest,
                        size_bytes=size, total_chunks=chunks, function_name=str(body["function_name"]))


def register_local_package(client: OpenSearch, package_dir: str | Path, *, index: str | None = None,
                           group_name: str | None = None, access_mode: str | None = None,
                           backend_roles: Sequence[str] | None = None, deploy: bool = True,
                           check_settings: bool = True, timeout: float = 900.0, poll_interval: float = 2.0,
                           chunk_size: int = MODEL_CHUNK_SIZE_BYTES, retry: RetryPolicy | None = None,
                           sleep: Callable[[float], None] = time.sleep) -> RegistrationResult:
    """Upload an exported package as a local model in the index's model group, deploy it, return its id.

    Idempotent: a model in the group with the same ``model_content_hash_value`` is reused (deployed again if it
    is only registered) instead of uploading a duplicate; a changed zip becomes a new version in the same group.
    A model this call creates is undeployed and deleted when a later step fails.
    """
    package = load_package(package_dir, chunk_size)
    api = Api(client, retry, sleep)
    notes: list[str] = []
    if check_settings:
        notes += check_cluster_settings(client, "local", model_access_params=bool(access_mode or backend_roles),
                                        _api=api).warnings
    name = group_name or model_group_name(index, package.register_body["name"])
    group_id, _ = ensure_model_group(client, name, access_mode=access_mode, backend_roles=backend_roles, _api=api)

    same = group_models(api, group_id, model_content_hash_value=package.sha256)
    for stale in (m for m in same if m.get("model_state") == "REGISTERING"):
        notes.append(f"model {stale['_id']} holds an interrupted upload of this package (REGISTERING); "
                     f"delete it with DELETE {ML}/models/{stale['_id']}")
        log.warning("%s", notes[-1])
    existing = pick_existing(same)
    if existing and (existing["model_state"] in USABLE_STATES or not deploy):
        log.info("model %s in group %s already has this package (sha256 %s..., %s): reused",
                 existing["_id"], name, package.sha256[:12], existing["model_state"])
        return RegistrationResult(existing["_id"], group_id, package.function_name, True, existing["model_state"],
                                  warnings=tuple(notes))
    if existing:     # registered earlier but not deployed: deploy it, no second upload
        log.info("model %s has this package but is %s: deploying it", existing["_id"], existing["model_state"])
        task_id, state, warnings = deploy_model(api, existing["_id"], timeout=timeout, poll_interval=poll_interval)
        return RegistrationResult(existing["_id"], group_id, package.function_name, True, state,
                                  deploy_task_id=task_id, warnings=tuple(notes + warnings))

    known = {model["_id"] for model in same}
    body = {k: v for k, v in package.register_body.items() if k != "url"}
    body["model_group_id"] = group_id
    created: dict[str, Any] = {}
    with cleanup_on_failure(api, created):
        answer = create_adopting(
            api, lambda: api.call("POST", f"{ML}/models/_register_meta", body=body, creates=True),
            lambda: next((m["_id"] for m in group_models(api, group_id, model_content_hash_value=package.sha256)
                          if m["_id"] not in known), None),
            f"registering the metadata of {package.zip_path.name}")
        model_id = answer.get("model_id")
        if not model_id:
            raise MLCommonsError(f"models/_register_meta answered without model_id: {answer}")
        created["model_id"] = model_id
        log.info("model %s created in group %s; uploading %d chunk(s), %d bytes", model_id, name,
                 package.total_chunks, package.size_bytes)
        with package.zip_path.open("rb") as handle:
            for number in range(package.total_chunks):
                chunk = handle.read(chunk_size)
                try:
                    api.call("POST", f"{ML}/models/{model_id}/upload_chunk/{number}", body=chunk, quiet=True)
                except os_errors.TransportError as exc:
                    raise api.fail(exc, f"uploading chunk {number + 1}/{package.total_chunks} of model {model_id}") \
                        from exc
        if not deploy:
            return RegistrationResult(model_id, group_id, package.function_name, False, "REGISTERED",
                                      warnings=tuple(notes))
        created["deployed"] = True
        task_id, state, warnings = deploy_model(api, model_id, timeout=timeout, poll_interval=poll_interval)
    log.info("model %s deployed (%s)", model_id, state)
    return RegistrationResult(model_id, group_id, package.function_name, False, state, deploy_task_id=task_id,
                              warnings=tuple(notes + warnings))


def register_inference_free_package(client: OpenSearch, package_dir: str | Path,
                                    **kwargs: Any) -> tuple[RegistrationResult, RegistrationResult]:
    """Both halves of an inference-free sparse model, each as a local model in the index's model group:
    ``document/`` (SPARSE_ENCODING, for ingest) and ``query/`` (SPARSE_TOKENIZE, for ``neural_sparse`` queries).
    Keyword arguments go to :func:`register_local_package`; re-runs reuse both models."""
    directory = Path(package_dir).expanduser()
    for part, expected in (("document", SPARSE), ("query", TOKENIZE)):
        found = load_package(directory / part, kwargs.get("chunk_size", MODEL_CHUNK_SIZE_BYTES)).function_name
        if found != expected:
            raise PackageError(f"{directory / part} holds a {found} package; an inference-free model's {part}/ "
                               f"package must be {expected}")
    return (register_local_package(client, directory / "document", **kwargs),
            register_local_package(client, directory / "query", **kwargs))
