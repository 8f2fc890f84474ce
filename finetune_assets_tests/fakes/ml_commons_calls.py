"""The HTTP calls each ml-commons registration path makes, recorded from a run against the contract server.

Runs the real registration code (finetune_assets/clients/ml_commons/) once per path against FakeMLCommons,
which records every request, and prints per path the calls in order: generated ids become placeholders
({model_id}, {task_id}, {group_id}, {connector_id}, {pipeline}, {index}; a second id of one kind in the same
path is {model_id_2}), chunk numbers become {n}, and consecutive repeats (task polls, chunk uploads) are
folded into one line.

    .venv/bin/python -m finetune_assets_tests.fakes.ml_commons_calls [--markdown] [--synthetic]

Packages are exported once from the bundled MiniLM / SPLADE-tiny models (traced and self-checked: a minute or
two of CPU); ``--synthetic`` uses small random-byte packages instead (same calls, fewer chunks).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from finetune_assets_tests.fakes.ml_commons_fake import DEV_SETTINGS, ML, FakeMLCommons, Request, running_fake
from finetune_assets_tests.fakes.ml_commons_packages import Packages, exported_packages, synthetic_packages

INDEX = "demo"
TEXTS = ["The cat sat on the mat.", "OpenSearch registers fine-tuned embedding models.",
         "Bananas are yellow and sweet."]
DENSE_QUERY = "which models does opensearch register"
SPARSE_QUERY = "the cat likes bananas"
ROLE_ARN = "arn:aws:iam::123456789012:role/opensearch-sagemaker"
DEPLOY_FAILURE = "java.lang.IllegalArgumentException: the model file is not a TorchScript model"
DEPLOY_POLLS = 3      # the deploy task answers RUNNING twice before its final state, so polling shows

# Where a generated name sits in a path, and its placeholder. `(?!_)` keeps _search, _register, ... as they are.
ID_SLOTS = (
    (re.compile(rf"(?<={ML}/models/)(?!_)[^/]+"), "model_id"),
    (re.compile(rf"(?<={ML}/tasks/)[^/]+"), "task_id"),
    (re.compile(rf"(?<={ML}/model_groups/)(?!_)[^/]+"), "group_id"),
    (re.compile(rf"(?<={ML}/connectors/)(?!_)[^/]+"), "connector_id"),
    (re.compile(r"(?<=^/_ingest/pipeline/)[^/]+"), "pipeline"),
    (re.compile(r"(?<=^/)(?!_)[^/]+"), "index"),          # first path segment that is no API name
)
CHUNK_NUMBER = re.compile(r"(?<=/upload_chunk/)\d+$")


@dataclass(frozen=True)
class Step:
    call: str          # "POST /_plugins/_ml/models/{model_id}/_deploy"
    note: str = ""     # "(polled)", "(n = 0..8)"


@dataclass(frozen=True)
class PathCalls:
    number: int
    title: str
    steps: list[Step]
    outcome: str


class _Placeholders:
    """Raw id -> placeholder, numbered per kind in order of first appearance."""

    def __init__(self) -> None:
        self.names: dict[tuple[str, str], str] = {}

    def name(self, kind: str, raw: str) -> str:
        key = (kind, raw)
        if key not in self.names:
            count = sum(1 for k, _ in self.names if k == kind) + 1
            self.names[key] = f"{{{kind}}}" if count == 1 else f"{{{kind}_{count}}}"
        return self.names[key]


def normalize(request: Request, placeholders: _Placeholders) -> str:
    path = request.path
    for pattern, kind in ID_SLOTS:
        path = pattern.sub(lambda found: placeholders.name(kind, found.group(0)), path, count=1)
    path = CHUNK_NUMBER.sub("{n}", path)
    query = f"?{urlencode(request.params)}" if request.params else ""
    return f"{request.method} {path}{query}"


def fold(requests: list[Request]) -> list[Step]:
    """Consecutive requests with the same normalized call become one step (task polls, chunk uploads)."""
    placeholders = _Placeholders()
    runs: list[tuple[str, list[Request]]] = []
    for request in requests:
        call = normalize(request, placeholders)
        if runs and runs[-1][0] == call:
            runs[-1][1].append(request)
        else:
            runs.append((call, [request]))
    steps = []
    for call, group in runs:
        if call.endswith("/upload_chunk/{n}"):
            numbers = [int(CHUNK_NUMBER.search(r.path).group(0)) for r in group]
            note = f"(n = {numbers[0]})" if len(numbers) == 1 else f"(n = {numbers[0]}..{numbers[-1]})"
        elif len(group) > 1:
            note = "(polled)" if f"{ML}/tasks/" in call else f"(x{len(group)})"
        else:
            note = ""
        steps.append(Step(call, note))
    return steps


# ------------------------------------------------------------------------------------------------ the paths


def _client(fake: FakeMLCommons):
    from finetune_assets.clients.opensearch_dump.connection import opensearch_client

    return opensearch_client(fake.url, max_retries=0, timeout=60)


def _local_kwargs(packages: Packages) -> dict:
    return {"index": INDEX, "chunk_size": packages.chunk_size, "poll_interval": 0.01}


def local_dense(fake: FakeMLCommons, packages: Packages) -> str:
    from finetune_assets.clients.ml_commons.upload import register_local_package
    from finetune_assets.clients.ml_commons.verify import verify_neural_search

    client = _client(fake)
    result = register_local_package(client, packages.dense, **_local_kwargs(packages))
    top = verify_neural_search(client, result.model_id, result.function_name, TEXTS, DENSE_QUERY)
    return f"{result.state}, reused={result.reused}; neural query top hit {top}"


def local_sparse(fake: FakeMLCommons, packages: Packages) -> str:
    from finetune_assets.clients.ml_commons.upload import register_local_package
    from finetune_assets.clients.ml_commons.verify import verify_neural_search

    client = _client(fake)
    result = register_local_package(client, packages.sparse, **_local_kwargs(packages))
    top = verify_neural_search(client, result.model_id, result.function_name, TEXTS, SPARSE_QUERY)
    return f"{result.state}, reused={result.reused}; neural_sparse query top hit {top}"


def inference_free_pair(fake: FakeMLCommons, packages: Packages) -> str:
    from finetune_assets.clients.ml_commons.upload import register_inference_free_package
    from finetune_assets.clients.ml_commons.verify import verify_neural_search

    client = _client(fake)
    document, query = register_inference_free_package(client, packages.pair, **_local_kwargs(packages))
    top = verify_neural_search(client, document.model_id, document.function_name, TEXTS, SPARSE_QUERY,
                               query_model_id=query.model_id)
    return (f"{{model_id}} = document/ ({document.function_name}, {document.state}), {{model_id_2}} = query/ "
            f"({query.function_name}, {query.state}), one model group; neural_sparse query (query tokenizer) "
            f"top hit {top}")


def remote_sagemaker(fake: FakeMLCommons, packages: Packages) -> str:
    from finetune_assets.clients.ml_commons.connectors import SageMakerEndpoint
    from finetune_assets.clients.ml_commons.remote import register_sagemaker_model
    from finetune_assets.clients.ml_commons.verify import verify_neural_search

    client = _client(fake)
    endpoint = SageMakerEndpoint("demo-embedder", "us-east-1", role_arn=ROLE_ARN)
    result = register_sagemaker_model(client, endpoint, index=INDEX, poll_interval=0.01)
    top = verify_neural_search(client, result.model_id, result.function_name, TEXTS, DENSE_QUERY)
    return f"{result.state}, reused={result.reused}; neural query top hit {top}"


def rerun_local_dense(fake: FakeMLCommons, packages: Packages) -> str:
    local_dense(fake, packages)
    models = set(fake.models)
    fake.clear_requests()                       # list only the second run
    outcome = local_dense(fake, packages)
    same = "same model, nothing uploaded" if set(fake.models) == models else f"models now {len(fake.models)}"
    return f"{outcome} ({same})"


def failed_deploy(fake: FakeMLCommons, packages: Packages) -> str:
    from finetune_assets.clients.ml_commons.errors import TaskFailedError
    from finetune_assets.clients.ml_commons.upload import register_local_package

    fake.fail_deploy = DEPLOY_FAILURE
    try:
        register_local_package(_client(fake), packages.dense, **_local_kwargs(packages))
    except TaskFailedError as exc:
        state = exc.task.get("state")
        return (f"TaskFailedError (task {state}); left on the cluster: {len(fake.models)} model(s), "
                f"{len(fake.groups)} model group(s) (ml-commons drops a group with its last model)")
    raise AssertionError("the deploy was scripted to fail but registration succeeded")


PATHS: dict[int, tuple[str, Callable[[FakeMLCommons, Packages], str]]] = {
    1: ("Local TEXT_EMBEDDING package: register_local_package + verify_neural_search", local_dense),
    2: ("Local SPARSE_ENCODING package: register_local_package + verify_neural_search", local_sparse),
    3: ("Inference-free pair: register_inference_free_package (SPARSE_ENCODING + SPARSE_TOKENIZE) + "
        "neural_sparse verification", inference_free_pair),
    4: ("Remote SageMaker endpoint: register_sagemaker_model + verify_neural_search", remote_sagemaker),
    5: ("Re-run of (1) on the same cluster: the second run's calls (idempotent reuse)", rerun_local_dense),
    6: ("Failed deploy (task FAILED) of the package of (1): cleanup", failed_deploy),
}


def list_path(number: int, packages: Packages) -> PathCalls:
    """Run one path against a fresh contract server and fold what it recorded."""
    title, run = PATHS[number]
    with running_fake(settings=DEV_SETTINGS, deploy_polls=DEPLOY_POLLS) as fake:
        outcome = run(fake, packages)
        return PathCalls(number, title, fold(list(fake.requests)), outcome)


# ------------------------------------------------------------------------------------------------ output


def _package_line(packages: Packages) -> str:
    from finetune_assets.clients.ml_commons.upload import load_package

    parts = []
    for label, folder in (("dense", packages.dense), ("sparse", packages.sparse),
                          ("pair document/", packages.pair / "document"), ("pair query/", packages.pair / "query")):
        package = load_package(folder, packages.chunk_size)
        parts.append(f"{label} {package.size_bytes / 1e6:.1f} MB in {package.total_chunks} chunk(s)")
    source = "exported from the bundled MiniLM / SPLADE-tiny models" if packages.kind == "exported" \
        else "synthetic (random bytes)"
    return f"Packages {source}, chunk size {packages.chunk_size} bytes: {'; '.join(parts)}."


def render(listings: list[PathCalls], packages: Packages, markdown: bool) -> str:
    settings = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in DEV_SETTINGS.items())
    intro = [
        "Recorded by `finetune_assets_tests/fakes/ml_commons_calls.py`: the real registration code "
        "(`finetune_assets/clients/ml_commons/`) against the ml-commons contract server "
        f"(`ml_commons_fake.py`; cluster settings: ml-commons defaults + {settings}, so no `GET /_nodes`).",
        _package_line(packages),
        "Placeholders replace generated ids; a second id of the same kind in one path is "
        "`{model_id_2}`; consecutive repeats are folded: task polls say (polled), chunk uploads give the "
        "chunk numbers.",
    ]
    lines = ["## ml-commons calls per registration path", ""] if markdown else []
    lines += [line if markdown else line.replace("`", "") for line in intro]
    for listing in listings:
        lines.append("")
        lines.append(f"### ({listing.number}) {listing.title}" if markdown else f"({listing.number}) {listing.title}")
        if markdown:
            lines.append("")
        for position, step in enumerate(listing.steps, 1):
            note = f" {step.note}" if step.note else ""
            lines.append(f"{position}. `{step.call}`{note}" if markdown else f"  {position:>2}. {step.call}{note}")
        lines.append("")
        lines.append(f"Outcome: {listing.outcome}" if markdown else f"  outcome: {listing.outcome}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune_assets_tests.fakes.ml_commons_calls",
                                     description="List the ml-commons HTTP calls of each registration path.")
    parser.add_argument("--markdown", action="store_true", help="Markdown (for a closing note) instead of text")
    parser.add_argument("--synthetic", action="store_true",
                        help="small random-byte packages instead of exporting the bundled models")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")      # before torch is imported by the export
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="ml-commons-calls-") as scratch:
        if args.synthetic:
            packages = synthetic_packages(Path(scratch))
        else:
            print("exporting the packages (MiniLM, SPLADE-tiny, inference-free pair) ...", file=sys.stderr)
            packages = exported_packages(Path(scratch))
        listings = [list_path(number, packages) for number in PATHS]
        sys.stdout.write(render(listings, packages, args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
