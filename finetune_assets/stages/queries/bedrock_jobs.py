"""The Bedrock path of bedrock_batch_outputs: batch jobs whose ARNs are saved the moment they exist.

A batch job runs for hours and is billed once it starts, so the moment it exists its ARN goes to `jobs.json` in
the storage's state location (`<root>/state/<index>/bedrock_batch_outputs/jobs.json`, outside the artifact
versions, so a failed step never discards it): a run that dies (or a restarted step) reads it back and
re-attaches instead of paying for the same job twice. The ARNs are kept only for the same requests (a
fingerprint of the model, settings and prompts): jobs of another corpus or settings must not be mixed into these
outputs. The published version also gets a copy of `jobs.json`, recording which jobs produced it.
"""

import hashlib
import json
from pathlib import Path

from dagster import AssetExecutionContext, AssetObservation, MetadataValue

from finetune_assets.clients.bedrock.outputs import BatchOutputs
from finetune_assets.core.jsonl import read_json, write_json
from finetune_assets.core.querygen.prompts import SYSTEM_PROMPT, build_query_prompt
from finetune_assets.resources.query_generator import QueryGeneratorResource
from finetune_assets.resources.storage import ArtifactStorage, MissingArtifact

ASSET = "bedrock_batch_outputs"
JOBS_FILE = "jobs.json"
WORK_FOLDER = "bedrock-batch"  # beside artifacts/: Bedrock's inputs and raw outputs are never fetched downstream


def previous_jobs(storage: ArtifactStorage, index: str) -> dict:
    """jobs.json of an earlier run of this partition ({} when there is none).

    Storage written before the state location existed kept it in the published artifact: read that as a fallback.
    """
    saved = storage.read_state(index, ASSET, JOBS_FILE)
    if saved is not None:
        return saved
    try:
        path = storage.fetch(index, ASSET) / JOBS_FILE
    except MissingArtifact:
        return {}
    return read_json(path) if path.is_file() else {}


def request_fingerprint(prompts: list[tuple[str, tuple[str, str]]], query_generator: QueryGeneratorResource,
                        queries_per_type: int) -> str:
    digest = hashlib.sha256(json.dumps({
        "model_id": query_generator.model_id, "salt": query_generator.idempotency_salt,
        "settings": query_generator.bedrock_settings(queries_per_type).as_dict()}, sort_keys=True).encode())
    for record_id, (system, user) in prompts:
        digest.update(f"\0{record_id}\0{system}\0{user}".encode())
    return digest.hexdigest()


def generate_with_bedrock(context: AssetExecutionContext, storage: ArtifactStorage,
                          query_generator: QueryGeneratorResource, documents: list[dict], queries_per_type: int,
                          max_document_chars: int, folder: Path) -> BatchOutputs:
    """Bedrock output records for every document; the final `jobs.json` is also written into `folder`, the
    version being staged."""
    index = context.partition_key
    options = query_generator.bedrock_job_options(storage)
    prompts = {str(d["id"]): (SYSTEM_PROMPT, build_query_prompt(d, queries_per_type, max_document_chars))
               for d in documents}
    fingerprint = request_fingerprint(list(prompts.items()), query_generator, queries_per_type)
    previous = previous_jobs(storage, index)
    existing = previous.get("job_arns", []) if previous.get("fingerprint") == fingerprint else []
    if previous.get("job_arns") and not existing:
        context.log.info(f"{JOBS_FILE} lists jobs for other requests (corpus, model or settings changed): "
                         f"not re-attaching to {previous['job_arns']}")
    elif existing:
        context.log.info(f"re-attaching to bedrock batch job(s) {existing} from {JOBS_FILE}")

    state = {"fingerprint": fingerprint, "model_id": query_generator.model_id, "job_arns": list(existing),
             "statuses": {}}
    jobs_uri = storage.state_uri(index, ASSET, JOBS_FILE)

    def save() -> None:
        storage.write_state(index, ASSET, JOBS_FILE, state)

    def on_job_created(arn: str) -> None:
        state["job_arns"].append(arn)
        save()
        context.log.info(f"bedrock batch job {arn} created; recorded in {jobs_uri}")
        context.log_event(AssetObservation(asset_key=context.asset_key, partition=index, metadata={
            "job_arn": arn, "jobs_file": MetadataValue.path(jobs_uri)}))

    def on_status(arn: str, status: str, description: dict) -> None:
        # The client logs every change to context.log; jobs.json keeps the latest for whoever looks in S3.
        state["statuses"][arn] = status
        save()

    result = query_generator.bedrock_client(log=context.log).generate(
        documents, index=index, s3_base_uri=f"{storage.root.rstrip('/')}/{WORK_FOLDER}",
        model_id=query_generator.model_id, prompt_fn=lambda d: prompts[str(d["id"])], options=options,
        settings=query_generator.bedrock_settings(queries_per_type), existing_job_arns=existing,
        on_job_created=on_job_created, on_status=on_status, idempotency_salt=query_generator.idempotency_salt)
    state["statuses"].update(result.job_statuses)
    state["mode"] = result.mode
    save()
    write_json(folder / JOBS_FILE, state)
    return result
