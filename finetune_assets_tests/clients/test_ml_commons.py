"""Registration in ml-commons, tested at the HTTP level against the contract-test server (ml_commons_fake.py).

The fake answers with the documented ml-commons bodies and records every request, so these tests assert the
exact calls (paths, bodies, chunk bytes), the reuse rules, the cleanup after failures, the settings messages
and the retries. The last test runs the local-package path against a real cluster when OPENSEARCH_URL is set.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_assets.cli import main as cli_main
from finetune_assets.clients.ml_commons.connectors import SageMakerEndpoint
from finetune_assets.clients.ml_commons.errors import (
    ClusterSettingsError,
    MLCommonsError,
    MLCommonsNotInstalledError,
    PackageError,
    TaskFailedError,
    VerificationError,
)
from finetune_assets.clients.ml_commons.model_groups import ensure_model_group
from finetune_assets.clients.ml_commons.remote import register_sagemaker_model
from finetune_assets.clients.ml_commons.search_pipelines import put_search_pipeline
from finetune_assets.clients.ml_commons.settings import check_cluster_settings
from finetune_assets.clients.ml_commons.upload import load_package, register_local_package
from finetune_assets.clients.ml_commons.verify import verify_hybrid_search, verify_neural_search
from finetune_assets.clients.opensearch_dump.connection import opensearch_client
from finetune_assets.clients.retry import RetryPolicy
from finetune_assets.core.export.package import MODEL_CHUNK_SIZE_BYTES
from finetune_assets.core.retrieval.fusion import FusionSetting
from finetune_assets_tests.fakes.ml_commons_fake import (
    DEV_SETTINGS,
    LOCAL_FILE_DISABLED,
    NO_ELIGIBLE_NODE,
    FakeMLCommons,
    error_body,
    running_fake,
)
from finetune_assets_tests.fakes.ml_commons_packages import (
    CHUNK,
    GROUP,
    SYNTHETIC_IDF,
    export_dense_package,
    write_inference_free_pair,
    write_package,
    write_tokenizer_package,
)

ML = "/_plugins/_ml"
FAST = RetryPolicy(max_retries=3, initial_backoff=0.001, max_backoff=0.005)
ROLE_ARN = "arn:aws:iam::123456789012:role/opensearch-sagemaker"
TEXTS = ["The cat sat on the mat.", "OpenSearch registers fine-tuned embedding models.",
         "Bananas are yellow and sweet."]


# --------------------------------------------------------------------------------------------- helpers


def register(client, package: Path, **kwargs):
    kwargs.setdefault("index", "tiny")
    return register_local_package(client, package, chunk_size=CHUNK, poll_interval=0.001, retry=FAST, **kwargs)


def register_remote(client, endpoint, **kwargs):
    kwargs.setdefault("index", "tiny")
    return register_sagemaker_model(client, endpoint, poll_interval=0.001, retry=FAST, **kwargs)


def ml_calls(fake: FakeMLCommons) -> list[str]:
    return [call for call in fake.calls() if ML in call or "_cluster" in call or "_nodes" in call]


def bodies(fake: FakeMLCommons, suffix: str) -> list:
    return [r.json for r in fake.requests if r.path.endswith(suffix)]


@pytest.fixture
def fake():
    with running_fake(settings=DEV_SETTINGS, deploy_polls=2) as server:
        yield server


@pytest.fixture
def client(fake):
    return opensearch_client(fake.url, max_retries=0, timeout=10)


@pytest.fixture
def package(tmp_path) -> Path:
    return write_package(tmp_path / "package")


# --------------------------------------------------------------------------------------------- local package


def test_local_package_happy_path_exact_calls_and_bytes(fake, client, package):
    result = register(client, package)

    model_id, zip_bytes = result.model_id, next(package.glob("*.zip")).read_bytes()
    deploy_task = fake.requests[-1].path.rsplit("/", 1)[1]
    assert ml_calls(fake) == [
        "GET /_cluster/settings",
        f"POST {ML}/model_groups/_search",
        f"POST {ML}/model_groups/_register",
        f"POST {ML}/models/_search",
        f"POST {ML}/models/_register_meta",
        f"POST {ML}/models/{model_id}/upload_chunk/0",
        f"POST {ML}/models/{model_id}/upload_chunk/1",
        f"POST {ML}/models/{model_id}/upload_chunk/2",
        f"POST {ML}/models/{model_id}/_deploy",
        f"GET {ML}/tasks/{deploy_task}",
        f"GET {ML}/tasks/{deploy_task}",
    ]
    assert fake.requests[0].params == {"include_defaults": "true", "flat_settings": "true"}
    expected_body = json.loads((package / "ml_commons_register.json").read_text())
    expected_body["model_group_id"] = result.model_group_id
    assert bodies(fake, "/_register_meta") == [expected_body]
    assert bodies(fake, "/model_groups/_register")[0]["name"] == GROUP
    chunks = [r.body for r in fake.requests if "/upload_chunk/" in r.path]
    assert len(chunks) == 3 == expected_body["total_chunks"] and all(len(c) <= CHUNK for c in chunks)
    assert b"".join(chunks) == zip_bytes == fake.assembled(model_id)
    assert fake.models[model_id]["model_state"] == "DEPLOYED" == result.state
    assert fake.groups[result.model_group_id]["name"] == GROUP
    assert not result.reused and result.function_name == "TEXT_EMBEDDING" and result.deploy_task_id == deploy_task


def test_rerun_with_same_package_reuses_the_deployed_model(fake, client, package):
    first = register(client, package)
    fake.clear_requests()
    second = register(client, package)

    assert second.model_id == first.model_id and second.reused and second.state == "DEPLOYED"
    assert ml_calls(fake) == ["GET /_cluster/settings", f"POST {ML}/model_groups/_search", f"POST {ML}/models/_search"]
    search = bodies(fake, "/models/_search")[0]["query"]["bool"]
    assert {"term": {"model_content_hash_value": load_package(package, CHUNK).sha256}} in search["filter"]
    assert search["must_not"] == [{"exists": {"field": "chunk_number"}}]      # chunk docs are not models
    assert len(fake.models) == 1 and len(fake.groups) == 1


def test_changed_package_becomes_a_new_version_in_the_same_group(fake, client, tmp_path, package):
    first = register(client, package)
    second = register(client, write_package(tmp_path / "retrained", seed=1))

    assert second.model_id != first.model_id and second.model_group_id == first.model_group_id
    assert fake.calls().count(f"POST {ML}/model_groups/_register") == 1
    assert fake.models[second.model_id]["model_version"] == "2"
    assert {m["model_state"] for m in fake.models.values()} == {"DEPLOYED"}


def test_registered_but_undeployed_model_is_deployed_without_a_second_upload(fake, client, package):
    registered = register(client, package, deploy=False)
    assert registered.state == "REGISTERED" and f"POST {ML}/models/{registered.model_id}/_deploy" not in fake.calls()

    deployed = register(client, package)
    assert deployed.model_id == registered.model_id and deployed.reused and deployed.state == "DEPLOYED"
    assert fake.calls().count(f"POST {ML}/models/_register_meta") == 1
    assert len([c for c in fake.calls() if "/upload_chunk/" in c]) == 3


def test_group_registered_concurrently_is_reused_from_the_already_exists_error(fake, client, package):
    group_id, created = ensure_model_group(client, GROUP, retry=FAST)
    assert created
    fake.group_search_misses = 1          # another run registered it between our search and our register
    fake.clear_requests()

    result = register(client, package)
    assert result.model_group_id == group_id and len(fake.groups) == 1
    assert fake.calls()[1:3] == [f"POST {ML}/model_groups/_search", f"POST {ML}/model_groups/_register"]
    assert ensure_model_group(client, GROUP, retry=FAST) == (group_id, False)


def test_fresh_cluster_without_ml_system_indices(client, tmp_path):
    with running_fake(settings=DEV_SETTINGS, missing_system_indices=True) as fresh:
        c = opensearch_client(fresh.url, max_retries=0, timeout=10)
        result = register(c, write_package(tmp_path / "p"))
        assert fresh.models[result.model_id]["model_state"] == "DEPLOYED"


def test_failed_deploy_deletes_the_model_and_says_why(fake, client, package):
    fake.fail_deploy = "java.lang.IllegalArgumentException: the model file is not a TorchScript model"
    with pytest.raises(TaskFailedError) as caught:
        register(client, package)

    message = str(caught.value)
    assert "FAILED" in message and "not a TorchScript model" in message and "was deleted" in message
    model_id = next(r.path.split("/")[4] for r in fake.requests if "/upload_chunk/" in r.path)
    assert fake.calls()[-2:] == [f"POST {ML}/models/{model_id}/_undeploy", f"DELETE {ML}/models/{model_id}"]
    assert fake.models == {} and fake.chunks == {}
    assert caught.value.task["state"] == "FAILED"


def test_failed_chunk_upload_deletes_the_half_registered_model(fake, client, package):
    fake.fail_next("POST", r"/upload_chunk/2$", 500, body=error_body(500, "exception", "disk full")[1])
    with pytest.raises(MLCommonsError, match=r"uploading chunk 3/3 .* HTTP 500 exception: disk full") as caught:
        register(client, package)
    assert fake.models == {} and fake.chunks == {} and "was deleted" in str(caught.value)
    assert fake.calls()[-1].startswith(f"DELETE {ML}/models/")
    assert not any(c.endswith("/_undeploy") for c in fake.calls())         # never deployed: nothing to undeploy


def test_interrupted_upload_from_an_earlier_run_is_reported_not_reused(fake, client, package):
    group_id, _ = ensure_model_group(client, GROUP, retry=FAST)
    body = {**json.loads((package / "ml_commons_register.json").read_text()), "model_group_id": group_id}
    stale = client.transport.perform_request("POST", f"{ML}/models/_register_meta", body=body)["model_id"]

    result = register(client, package)
    assert result.model_id != stale and not result.reused and result.state == "DEPLOYED"
    assert any(stale in warning and "REGISTERING" in warning for warning in result.warnings)


def test_deploy_timeout_cleans_up_too(client, package):
    with running_fake(settings=DEV_SETTINGS, deploy_polls=10_000) as slow:
        c = opensearch_client(slow.url, max_retries=0, timeout=10)
        with pytest.raises(TaskFailedError, match="still RUNNING"):
            register(c, package, timeout=0.05)
        assert slow.models == {}


def test_package_must_match_its_register_body(tmp_path):
    folder = write_package(tmp_path / "p")
    with pytest.raises(PackageError, match="total_chunks"):
        load_package(folder)                      # 3 chunks of 4 kB, not 1 of 10 MB
    zip_path = next(folder.glob("*.zip"))
    zip_path.write_bytes(zip_path.read_bytes() + b"x")
    with pytest.raises(PackageError, match="does not match"):
        load_package(folder, CHUNK)
    with pytest.raises(PackageError, match="does not exist"):
        load_package(tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------- remote model


def test_remote_sagemaker_dense_connector_body_and_reuse(fake, client):
    endpoint = SageMakerEndpoint("tiny-embedder", "eu-west-1", role_arn=ROLE_ARN)
    result = register_remote(client, endpoint)

    url = "https://runtime.sagemaker.eu-west-1.amazonaws.com/endpoints/tiny-embedder/invocations"
    connector = bodies(fake, "/connectors/_create")[0]
    assert connector["protocol"] == "aws_sigv4"
    assert connector["credential"] == {"roleArn": ROLE_ARN}
    assert connector["parameters"] == {"region": "eu-west-1", "service_name": "sagemaker"}
    (action,) = connector["actions"]
    assert action["url"] == url and action["action_type"] == "predict" and action["method"] == "POST"
    assert action["request_body"] == "${parameters.input}"
    assert action["pre_process_function"] == "connector.pre_process.default.embedding"
    assert action["post_process_function"] == "connector.post_process.default.embedding"
    assert bodies(fake, "/models/_register") == [{
        "name": "sagemaker/tiny-embedder", "function_name": "remote", "model_group_id": result.model_group_id,
        "description": bodies(fake, "/models/_register")[0]["description"], "connector_id": result.connector_id}]
    task = fake.requests[-1].path.rsplit("/", 1)[1]
    assert ml_calls(fake) == [
        "GET /_cluster/settings",
        f"POST {ML}/connectors/_search", f"POST {ML}/connectors/_create",
        f"POST {ML}/model_groups/_search", f"POST {ML}/model_groups/_register",
        f"POST {ML}/models/_search", f"POST {ML}/models/_register",
        f"POST {ML}/models/{result.model_id}/_deploy", f"GET {ML}/tasks/{task}", f"GET {ML}/tasks/{task}",
    ]
    assert fake.models[result.model_id]["model_state"] == "DEPLOYED" and result.function_name == "TEXT_EMBEDDING"

    fake.clear_requests()
    again = register_remote(client, endpoint)
    assert (again.model_id, again.connector_id, again.reused) == (result.model_id, result.connector_id, True)
    assert f"POST {ML}/connectors/_create" not in fake.calls() and f"POST {ML}/models/_register" not in fake.calls()


def test_remote_sparse_with_access_keys_never_logs_secrets(fake, client, caplog):
    secret, token = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYFAKESECRET", "FwoGZXIvYXdzEFAKESESSIONTOKEN"
    endpoint = SageMakerEndpoint("tiny-splade", "us-east-1", function_name="SPARSE_ENCODING",
                                 access_key="AKIAFAKEACCESSKEY123", secret_key=secret, session_token=token)
    caplog.set_level(logging.DEBUG)
    result = register_remote(client, endpoint)

    (action,) = bodies(fake, "/connectors/_create")[0]["actions"]
    assert action["pre_process_function"] == "connector.pre_process.default.embedding"
    assert "post_process_function" not in action     # the endpoint's [{token: weight}] passes through as-is
    assert bodies(fake, "/connectors/_create")[0]["credential"] == {
        "access_key": "AKIAFAKEACCESSKEY123", "secret_key": secret, "session_token": token}
    assert result.function_name == "SPARSE_ENCODING"
    # opensearch-py did log request bodies at DEBUG, just not the connector's
    assert any(r.name == "opensearch" and r.levelno == logging.DEBUG and r.getMessage().startswith(">")
               for r in caplog.records)
    for text in (secret, token, "AKIAFAKEACCESSKEY123"):
        assert text not in caplog.text and text not in repr(endpoint)


def test_untrusted_connector_url_is_explained_without_leaking_keys(client, caplog):
    only_openai = {"plugins.ml_commons.trusted_connector_endpoints_regex": [r"^https://api\.openai\.com/.*$"]}
    endpoint = SageMakerEndpoint("tiny", "us-east-1", access_key="AKIAFAKEACCESSKEY123", secret_key="s3cr3t-value")
    caplog.set_level(logging.DEBUG)
    with running_fake(settings=only_openai) as strict:
        c = opensearch_client(strict.url, max_retries=0, timeout=10)
        with pytest.raises(ClusterSettingsError) as before:
            register_remote(c, endpoint)
        with pytest.raises(MLCommonsError) as server_side:            # the cluster's own refusal
            register_remote(c, endpoint, check_settings=False)
        assert strict.connectors == {} and strict.models == {}
    for error in (before.value, server_side.value):
        assert "plugins.ml_commons.trusted_connector_endpoints_regex" in str(error)
        assert "runtime\\\\.sagemaker" in str(error) or r"runtime\.sagemaker" in str(error)
        assert "s3cr3t-value" not in str(error)
    assert "s3cr3t-value" not in caplog.text


def test_connector_with_the_same_name_but_another_endpoint_is_not_reused(fake, client):
    register_remote(client, SageMakerEndpoint("one", "us-east-1", role_arn=ROLE_ARN), connector_name="shared")
    with pytest.raises(MLCommonsError, match="calls https://runtime.sagemaker.us-east-1.amazonaws.com/endpoints/one"):
        register_remote(client, SageMakerEndpoint("two", "us-east-1", role_arn=ROLE_ARN), connector_name="shared")


# --------------------------------------------------------------------------------------------- settings


def settings_error(settings: dict, path: str = "local", roles: dict | None = None, **kwargs) -> ClusterSettingsError:
    with running_fake(settings=settings, node_roles=roles) as server:
        c = opensearch_client(server.url, max_retries=0, timeout=10)
        with pytest.raises(ClusterSettingsError) as caught:
            check_cluster_settings(c, path, retry=FAST, **kwargs)
    return caught.value


def test_settings_local_file_upload_disabled(client, package):
    error = settings_error({}, roles={"ml-1": ["ml"]})
    assert [i.setting for i in error.issues] == ["plugins.ml_commons.allow_registering_model_via_local_file"]
    assert error.issues[0].required is True and error.issues[0].current == "false"
    assert '"plugins.ml_commons.allow_registering_model_via_local_file": true' in str(error)


def test_settings_only_run_on_ml_node_without_ml_nodes():
    allow = {"plugins.ml_commons.allow_registering_model_via_local_file": "true"}
    error = settings_error(allow, roles={"data-1": ["data", "ingest"], "data-2": ["data"]})
    assert [i.setting for i in error.issues] == ["plugins.ml_commons.only_run_on_ml_node"]
    assert '"plugins.ml_commons.only_run_on_ml_node": false' in str(error) and "node.roles: [ml]" in str(error)
    with running_fake(settings=allow, node_roles={"data-1": ["data"], "ml-1": ["ml"]}) as ok:
        check = check_cluster_settings(opensearch_client(ok.url, max_retries=0), "local", retry=FAST)
        assert check.issues == [] and check.node_roles == {"data-1": ["data"], "ml-1": ["ml"]}


def test_settings_block_before_anything_is_created(tmp_path):
    with running_fake() as strict:                    # ml-commons defaults: nothing allowed, no ML node
        with pytest.raises(ClusterSettingsError) as caught:
            register(opensearch_client(strict.url, max_retries=0), write_package(tmp_path / "p"))
        assert strict.calls() == ["GET /_cluster/settings", "GET /_nodes"]
    assert {i.setting for i in caught.value.issues} == {
        "plugins.ml_commons.allow_registering_model_via_local_file", "plugins.ml_commons.only_run_on_ml_node"}


def test_server_side_refusals_name_the_setting(tmp_path):
    package = write_package(tmp_path / "p")
    with running_fake() as strict:
        c = opensearch_client(strict.url, max_retries=0)
        with pytest.raises(MLCommonsError) as meta:
            register(c, package, check_settings=False)
        assert LOCAL_FILE_DISABLED in str(meta.value)
        assert "plugins.ml_commons.allow_registering_model_via_local_file" in str(meta.value)
        assert strict.models == {}

        strict.persistent["plugins.ml_commons.allow_registering_model_via_local_file"] = "true"
        with pytest.raises(MLCommonsError) as deploy:
            register(c, package, check_settings=False)
        assert NO_ELIGIBLE_NODE in str(deploy.value)
        assert '"plugins.ml_commons.only_run_on_ml_node": false' in str(deploy.value)
        assert strict.models == {} and "was deleted" in str(deploy.value)     # the uploaded model is removed


@pytest.mark.parametrize("settings, path, kwargs, setting, value", [
    ({"plugins.ml_commons.only_run_on_ml_node": "false"}, "url", {}, "allow_registering_model_via_url", "true"),
    ({"plugins.ml_commons.remote_inference.enabled": "false"}, "remote", {}, "remote_inference.enabled", "true"),
    ({}, "remote", {"connector_url": "https://example.com/embed"}, "trusted_connector_endpoints_regex", "sagemaker"),
    ({}, "remote", {"connector_access_params": True}, "connector_access_control_enabled", "true"),
    (DEV_SETTINGS, "local", {"model_access_params": True}, "model_access_control_enabled", "true"),
])
def test_settings_messages_per_path(settings, path, kwargs, setting, value):
    error = settings_error(settings, path, **kwargs)
    assert [i.setting for i in error.issues] == [f"plugins.ml_commons.{setting}"]
    assert f"plugins.ml_commons.{setting}" in str(error) and value in str(error)


def test_trusted_sagemaker_url_passes_the_default_regexes(fake, client):
    url = SageMakerEndpoint("e", "ap-southeast-2", role_arn=ROLE_ARN).url
    assert check_cluster_settings(client, "remote", connector_url=url, retry=FAST).issues == []


def test_settings_unreadable_for_the_user_is_a_warning(fake, client):
    fake.fail_next("GET", "/_cluster/settings", 403, body=error_body(403, "security_exception", "no permissions")[1])
    check = check_cluster_settings(client, "local", retry=FAST)
    assert check.issues == [] and "HTTP 403" in check.warnings[0]


@pytest.mark.parametrize("status", [404, 400])
def test_cluster_without_ml_commons(tmp_path, status):
    with running_fake(ml_commons=False, no_ml_commons_status=status) as bare:
        c = opensearch_client(bare.url, max_retries=0)
        for attempt in (lambda: check_cluster_settings(c, "local", retry=FAST),
                        lambda: register(c, write_package(tmp_path / "p"), check_settings=False),
                        lambda: ensure_model_group(c, GROUP, retry=FAST)):
            with pytest.raises(MLCommonsNotInstalledError, match="no ml-commons plugin") as caught:
                attempt()
            assert f"HTTP {status}" in str(caught.value) and "opensearch-ml" in str(caught.value)


# --------------------------------------------------------------------------------------------- retries


def test_429_is_retried(fake, client, package):
    fake.fail_next("POST", r"/models/_register_meta$", 429)
    fake.fail_next("POST", r"/model_groups/_search$", 429, times=2)
    result = register(client, package)
    assert fake.calls().count(f"POST {ML}/models/_register_meta") == 2
    assert fake.calls().count(f"POST {ML}/model_groups/_search") == 3
    assert list(fake.models) == [result.model_id]


def test_5xx_and_dropped_connections_on_chunks_are_retried(fake, client, package):
    fake.fail_next("POST", r"/upload_chunk/1$", 503)
    fake.fail_next("POST", r"/upload_chunk/2$", drop=True)
    fake.fail_next("GET", r"/tasks/", 504)
    result = register(client, package)
    assert fake.assembled(result.model_id) == next(package.glob("*.zip")).read_bytes()
    assert len([c for c in fake.calls() if "/upload_chunk/" in c]) == 5
    assert result.state == "DEPLOYED"


def test_lost_answer_to_a_create_call_adopts_instead_of_duplicating(fake, client, package):
    fake.fail_next("POST", r"/models/_register_meta$", 502, process=True)   # done, but the answer is lost
    result = register(client, package)
    assert fake.calls().count(f"POST {ML}/models/_register_meta") == 1
    assert list(fake.models) == [result.model_id] and fake.models[result.model_id]["model_state"] == "DEPLOYED"


def test_retries_are_bounded(fake, client, package):
    fake.fail_next("POST", r"/models/_search$", 429, times=100)
    with pytest.raises(MLCommonsError, match="HTTP 429"):
        register(client, package)
    assert fake.calls().count(f"POST {ML}/models/_search") == FAST.max_retries + 1


# --------------------------------------------------------------------------------------------- verification


def test_verify_neural_search_dense_local_model(fake, client, package):
    result = register(client, package)
    fake.clear_requests()
    top = verify_neural_search(client, result.model_id, "TEXT_EMBEDDING", TEXTS,
                               "which models does opensearch register", retry=FAST)
    assert top == "doc-1"
    index = next(r for r in fake.requests if r.method == "PUT" and not r.path.startswith("/_ingest")).json
    assert index["settings"]["index.knn"] is True
    assert index["mappings"]["properties"]["embedding"]["type"] == "knn_vector"
    assert index["mappings"]["properties"]["embedding"]["dimension"] == 32
    processor = next(r.json for r in fake.requests if r.path.startswith("/_ingest/pipeline/"))["processors"][0]
    assert processor == {"text_embedding": {"model_id": result.model_id, "field_map": {"text": "embedding"}}}
    query = [r.json for r in fake.requests if r.path.endswith("/_search")][0]["query"]
    assert query["neural"]["embedding"]["model_id"] == result.model_id
    assert fake.indices == {} and fake.pipelines == {}
    assert [c.split(" ")[0] for c in fake.calls()[-2:]] == ["DELETE", "DELETE"]


def test_verify_hybrid_search_runs_one_hybrid_query_through_a_scratch_pipeline(fake, client, package):
    result = register(client, package)
    body = FusionSetting("min_max", "arithmetic_mean", 0.7).pipeline_body("check")
    fake.clear_requests()
    tops = verify_hybrid_search(client, result.model_id, "TEXT_EMBEDDING", TEXTS, "bananas yellow", body, retry=FAST)
    assert tops == {"neural": tops["neural"], "hybrid": "doc-2"}  # the BM25 side finds the shared words
    put = next(r for r in fake.requests if r.method == "PUT" and r.path.startswith("/_search/pipeline/"))
    assert put.json == body
    search = next(r for r in fake.requests if r.path.endswith("/_search") and "hybrid" in r.json["query"])
    assert search.params["search_pipeline"] == put.path.rsplit("/", 1)[1]
    assert search.json["query"]["hybrid"]["queries"][0] == {"match": {"text": {"query": "bananas yellow"}}}
    assert fake.search_pipelines == {} and fake.indices == {} and fake.pipelines == {}


def test_verify_prunes_sparse_documents_in_the_ingest_pipeline(fake, client):
    endpoint = SageMakerEndpoint("tiny-splade", "us-east-1", function_name="SPARSE_ENCODING", role_arn=ROLE_ARN)
    result = register_remote(client, endpoint)
    fake.clear_requests()
    top = verify_neural_search(client, result.model_id, "SPARSE_ENCODING", TEXTS, "yellow bananas",
                               document_prune_ratio=0.5, retry=FAST)
    assert top == "doc-2"
    processor = next(r.json for r in fake.requests if r.path.startswith("/_ingest/pipeline/"))["processors"][0]
    assert processor["sparse_encoding"]["prune_type"] == "max_ratio"
    assert processor["sparse_encoding"]["prune_ratio"] == 0.5
    assert fake.pipelines == {} and fake.indices == {}


def test_the_contract_server_prunes_as_each_documented_prune_type_reads():
    from finetune_assets_tests.fakes.ml_commons_fake import prune

    weights = {"a": 4.0, "b": 2.0, "c": 1.0, "d": 0.5}  # total 7.5
    assert prune(weights, "max_ratio", 0.3) == {"a": 4.0, "b": 2.0}  # >= 1.2
    assert prune(weights, "abs_value", 1.0) == {"a": 4.0, "b": 2.0, "c": 1.0}
    assert prune(weights, "top_k", 2) == {"a": 4.0, "b": 2.0}
    assert prune(weights, "alpha_mass", 0.9) == {"a": 4.0, "b": 2.0}  # 6.0 within 6.75, 7.0 is not
    assert prune(weights, "none", None) == weights and prune(weights, None, None) == weights


def test_a_cluster_before_2_19_refuses_pruning_by_name(fake, client):
    from finetune_assets.clients.ml_commons.errors import PruningUnsupportedError

    endpoint = SageMakerEndpoint("tiny-splade", "us-east-1", function_name="SPARSE_ENCODING", role_arn=ROLE_ARN)
    result = register_remote(client, endpoint)
    fake.pruning = False
    with pytest.raises(PruningUnsupportedError, match="HTTP 400.*prune_ratio, prune_type.*2.19"):
        verify_neural_search(client, result.model_id, "SPARSE_ENCODING", TEXTS, "yellow bananas",
                             document_prune_ratio=0.1, retry=FAST)
    assert fake.pipelines == {} and fake.indices == {}  # nothing was made, nothing is left
    # without pruning the same cluster indexes and searches
    assert verify_neural_search(client, result.model_id, "SPARSE_ENCODING", TEXTS, "yellow bananas",
                                retry=FAST) == "doc-2"


def test_put_search_pipeline_is_idempotent(fake, client):
    body = FusionSetting("l2", "geometric_mean", 0.6).pipeline_body("hybrid for docs")
    assert put_search_pipeline(client, "hybrid-docs", body, retry=FAST) == "created"
    assert put_search_pipeline(client, "hybrid-docs", body, retry=FAST) == "unchanged"
    assert len(fake.calls("PUT /_search/pipeline/hybrid-docs")) == 1
    other = FusionSetting("rrf").pipeline_body("hybrid for docs")
    assert put_search_pipeline(client, "hybrid-docs", other, retry=FAST) == "updated"
    assert fake.search_pipelines["hybrid-docs"] == other


def test_put_search_pipeline_names_a_refused_body(fake, client):
    bad = {"phase_results_processors": [{"normalization-processor": {
        "normalization": {"technique": "min_max"},
        "combination": {"technique": "arithmetic_mean", "parameters": {"weights": [0.5, 0.6]}}}}]}
    with pytest.raises(MLCommonsError, match="PUT /_search/pipeline/bad failed: HTTP 400.*sum of weights"):
        put_search_pipeline(client, "bad", bad, retry=FAST)


def test_a_cluster_without_the_score_ranker_refuses_rrf_as_an_unknown_processor(fake, client):
    from finetune_assets.clients.ml_commons.errors import UnknownProcessorError
    from finetune_assets.core.retrieval.fusion import WITHOUT_RRF, FusionSetting

    rrf = FusionSetting("rrf").pipeline_body("rrf")
    assert put_search_pipeline(client, "rrf", rrf, retry=FAST) == "created"  # 2.19 and later
    fake.score_ranker = False  # before 2.19
    with pytest.raises(UnknownProcessorError, match="HTTP 400.*Invalid processor type score-ranker-processor"):
        put_search_pipeline(client, "older", rrf, retry=FAST)
    assert "older" not in fake.search_pipelines
    assert put_search_pipeline(client, "older", WITHOUT_RRF.pipeline_body("min_max"), retry=FAST) == "created"


def test_cluster_version_reads_the_root_endpoint(fake, client):
    from finetune_assets.clients.ml_commons.search_pipelines import cluster_version

    assert cluster_version(client, retry=FAST) == (3, 1, 0)
    fake.version = "2.19.1-SNAPSHOT"
    assert cluster_version(client, retry=FAST) == (2, 19, 1)
    fake.version = "unknown"
    assert cluster_version(client, retry=FAST) is None


@pytest.mark.parametrize("version", ["3.1.0", "3.0.0"])
def test_rrf_weights_count_from_opensearch_3_1_and_are_ignored_before(fake, client, version):
    """The fake follows score-ranker-processor.md: weights apply from 3.1; before, the body is accepted as plain RRF."""
    from finetune_assets.core.retrieval.fusion import FusionSetting
    from finetune_assets_tests.fakes.ml_commons_fake import _fuse

    fake.version = version
    body = FusionSetting("rrf", model_weight=0.8).pipeline_body("check")  # BM25 0.2 / model 0.8
    assert put_search_pipeline(client, "weighted", body, retry=FAST) == "created"
    lists = [[(9.0, "lexical"), (1.0, "semantic")], [(0.9, "semantic"), (0.1, "lexical")]]
    fused, problem = _fuse(fake.search_pipelines["weighted"], lists, rrf_weights=fake._rrf_weights())
    assert problem is None
    if version >= "3.1":
        assert fused == pytest.approx({"lexical": 0.2 / 61 + 0.8 / 62, "semantic": 0.2 / 62 + 0.8 / 61})
    else:
        assert fused == pytest.approx({"lexical": 1 / 61 + 1 / 62, "semantic": 1 / 62 + 1 / 61})
    bad = FusionSetting("rrf", model_weight=0.8).pipeline_body("check")
    bad["phase_results_processors"][0]["score-ranker-processor"]["combination"]["parameters"]["weights"] = [0.5, 0.6]
    if version >= "3.1":
        with pytest.raises(MLCommonsError, match="sum of weights"):
            put_search_pipeline(client, "bad", bad, retry=FAST)
    else:
        assert put_search_pipeline(client, "bad", bad, retry=FAST) == "created"


def test_z_score_needs_opensearch_3_0_and_the_arithmetic_mean(fake, client):
    from finetune_assets.core.retrieval.fusion import FusionSetting

    body = FusionSetting("z_score", "arithmetic_mean", 0.6).pipeline_body("z")
    fake.version = "2.19.1"
    with pytest.raises(MLCommonsError, match=r"HTTP 400.*normalization technique \[z_score\] is not supported"):
        put_search_pipeline(client, "z", body, retry=FAST)
    fake.version = "3.0.0"
    assert put_search_pipeline(client, "z", body, retry=FAST) == "created"
    body["phase_results_processors"][0]["normalization-processor"]["combination"]["technique"] = "geometric_mean"
    with pytest.raises(MLCommonsError, match="Z Score supports only arithmetic_mean"):
        put_search_pipeline(client, "z-geometric", body, retry=FAST)


def test_the_fake_fuses_every_candidate_setting_as_the_offline_fusion_does():
    """The offline choice is only worth its figures if the cluster ranks the same: the documented arithmetic, twice."""
    import random

    from finetune_assets.core.retrieval.fusion import candidate_settings, fuse
    from finetune_assets_tests.fakes.ml_commons_fake import _fuse

    rng = random.Random(7)
    for trial in range(20):
        docs = [f"d{i}" for i in range(30)]
        bm25 = sorted(((d, rng.uniform(0.5, 20.0)) for d in rng.sample(docs, 15)), key=lambda p: -p[1])
        model = sorted(((d, rng.uniform(0.1, 0.9)) for d in rng.sample(docs, 12 + trial % 5)), key=lambda p: -p[1])
        for setting in candidate_settings():
            fused, problem = _fuse(setting.pipeline_body("check"), [[(s, d) for d, s in bm25], [(s, d) for d, s in model]])
            assert problem is None
            assert dict(fuse(bm25, model, setting)) == pytest.approx(fused), setting.name


def test_verify_neural_search_sparse_remote_model(fake, client):
    endpoint = SageMakerEndpoint("tiny-splade", "us-east-1", function_name="SPARSE_ENCODING", role_arn=ROLE_ARN)
    result = register_remote(client, endpoint)
    top = verify_neural_search(client, result.model_id, "SPARSE_ENCODING", TEXTS, "yellow bananas", retry=FAST)
    assert top == "doc-2"
    index = [r.json for r in fake.requests if r.method == "PUT" and r.path.startswith("/finetune-assets-verify")][0]
    assert index["mappings"]["properties"]["sparse"] == {"type": "rank_features"}
    assert [r.json for r in fake.requests if r.path.endswith("/_search") and "verify" in r.path][0]["query"] == {
        "neural_sparse": {"sparse": {"query_text": "yellow bananas", "model_id": result.model_id}}}
    assert fake.indices == {} and fake.pipelines == {}


def test_inference_free_pair_ingests_with_the_encoder_and_queries_with_the_tokenizer(fake, client, tmp_path):
    from finetune_assets.clients.ml_commons.upload import register_inference_free_package

    write_inference_free_pair(tmp_path / "pair", SYNTHETIC_IDF)      # "bananas" weighs 4.0, "the" 0.0
    document, query = register_inference_free_package(client, tmp_path / "pair", index="tiny", chunk_size=CHUNK,
                                                      poll_interval=0.001, retry=FAST)
    assert (document.function_name, query.function_name) == ("SPARSE_ENCODING", "SPARSE_TOKENIZE")
    assert document.model_group_id == query.model_group_id and document.model_id != query.model_id
    assert {fake.models[m]["algorithm"] for m in (document.model_id, query.model_id)} == {
        "SPARSE_ENCODING", "SPARSE_TOKENIZE"}
    assert all(fake.models[m]["model_state"] == "DEPLOYED" for m in (document.model_id, query.model_id))
    assert "model_config" not in bodies(fake, "/models/_register_meta")[1]
    fake.clear_requests()
    # Word counts alone would rank "The cat sat on the mat." first; the idf.json weights rank the bananas first.
    top = verify_neural_search(client, document.model_id, "SPARSE_ENCODING", TEXTS, "the cat likes bananas",
                               query_model_id=query.model_id, retry=FAST)
    assert top == "doc-2"
    processor = next(r.json for r in fake.requests if r.path.startswith("/_ingest/pipeline/"))["processors"][0]
    assert processor["sparse_encoding"]["model_id"] == document.model_id
    search = [r.json for r in fake.requests if r.path.endswith("/_search") and "verify" in r.path][0]
    assert search["query"]["neural_sparse"]["sparse"]["model_id"] == query.model_id
    again = register_inference_free_package(client, tmp_path / "pair", index="tiny", chunk_size=CHUNK, retry=FAST)
    assert [r.reused for r in again] == [True, True]


def test_inference_free_pair_with_a_wrong_half_is_refused_before_any_call(fake, client, tmp_path):
    from finetune_assets.clients.ml_commons.upload import register_inference_free_package

    write_package(tmp_path / "pair" / "document", function_name="SPARSE_ENCODING")
    write_tokenizer_package(tmp_path / "pair" / "query", {}, function_name="SPARSE_ENCODING")
    with pytest.raises(PackageError, match="query/ package must be SPARSE_TOKENIZE"):
        register_inference_free_package(client, tmp_path / "pair", index="tiny", chunk_size=CHUNK, retry=FAST)
    assert fake.calls() == []
    with pytest.raises(PackageError, match="register its document/ and query/ packages"):
        load_package(tmp_path / "pair")
    with pytest.raises(ValueError, match="query_model_id"):
        verify_neural_search(client, "m", "TEXT_EMBEDDING", TEXTS, "cat", query_model_id="q")


def test_tokenizer_package_without_a_tokenizer_fails_to_deploy_and_is_removed(fake, client, tmp_path):
    package = write_package(tmp_path / "query", function_name="SPARSE_TOKENIZE")   # tokenizer.json is "{}"
    with pytest.raises(TaskFailedError, match="FAILED"):
        register(client, package)
    assert fake.models == {}


def test_register_meta_needs_model_config_except_for_sparse_functions(fake, client, tmp_path):
    package = write_package(tmp_path / "dense")
    body = json.loads((package / "ml_commons_register.json").read_text())
    del body["model_config"]
    (package / "ml_commons_register.json").write_text(json.dumps(body))
    with pytest.raises(MLCommonsError, match="model config is null"):
        register(client, package)


def test_verify_dense_remote_model_asks_the_model_for_its_dimension(fake, client):
    result = register_remote(client, SageMakerEndpoint("tiny-embedder", "us-east-1", role_arn=ROLE_ARN))
    assert verify_neural_search(client, result.model_id, "TEXT_EMBEDDING", TEXTS, "a cat on a mat",
                                retry=FAST) == "doc-0"
    assert f"POST {ML}/models/{result.model_id}/_predict" in fake.calls()


def test_verify_failure_still_removes_index_and_pipeline(fake, client, package):
    result = register(client, package)
    fake.models[result.model_id]["model_state"] = "UNDEPLOYED"
    with pytest.raises(VerificationError, match="not deployed"):
        verify_neural_search(client, result.model_id, "TEXT_EMBEDDING", TEXTS, "cat", retry=FAST)
    assert fake.indices == {} and fake.pipelines == {}


# --------------------------------------------------------------------------------------------- CLI


def register_cli(*args: str) -> int:
    return cli_main(["register", *args])


def test_register_cli_prints_the_model_id(tmp_path, monkeypatch, capsys):
    package = write_package(tmp_path / "p", chunk_size=MODEL_CHUNK_SIZE_BYTES)
    monkeypatch.setenv("OPENSEARCH_PASSWORD", "pw-not-in-logs")
    with running_fake(settings=DEV_SETTINGS) as server:
        rc = register_cli(str(package), "--opensearch-url", server.url, "--index", "cli", "--username", "admin")
        out, err = capsys.readouterr()
        assert rc == 0, err
        assert out == f"{next(iter(server.models))}\n"
        headers = {k.lower(): v for k, v in server.requests[0].headers.items()}
        assert headers["authorization"].startswith("Basic ")
        assert next(iter(server.groups.values()))["name"] == "finetune-assets/cli"
        assert "pw-not-in-logs" not in err

        assert register_cli(str(tmp_path / "missing"), "--opensearch-url", server.url) == 2
        assert "package folder" in capsys.readouterr().err
    with running_fake() as strict:
        rc = register_cli(str(package), "--opensearch-url", strict.url)
        assert rc == 1 and "allow_registering_model_via_local_file" in capsys.readouterr().err
    monkeypatch.delenv("OPENSEARCH_URL", raising=False)
    assert register_cli(str(package)) == 2
    assert "--opensearch-url (or OPENSEARCH_URL) is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as help_exit:
        register_cli("--help")
    assert help_exit.value.code == 0 and "--skip-settings-check" in capsys.readouterr().out


def test_register_cli_against_an_unreachable_cluster_prints_one_line(tmp_path, capfd):
    """What a user sees in a terminal (a child process, so pytest's log capture cannot hide anything): one
    line naming the cluster, password redacted, and no client retry tracebacks."""
    package = write_package(tmp_path / "p", chunk_size=MODEL_CHUNK_SIZE_BYTES)
    with socket.socket() as closed:                # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        env = {**os.environ, "OPENSEARCH_PASSWORD": "pw-not-in-logs", "PYTHONUNBUFFERED": "1"}
        rc = subprocess.run([sys.executable, "-m", "finetune_assets.cli", "register", str(package),
                             "--opensearch-url", f"http://admin:pw-not-in-logs@127.0.0.1:{port}", "--index", "x"],
                            env=env, timeout=120).returncode
    out, err = capfd.readouterr()
    lines = (out + err).strip().splitlines()
    assert rc == 1
    assert "Traceback" not in out + err and len(lines) <= 3, "\n".join(lines[:40])
    assert f"cannot reach OpenSearch at http://***@127.0.0.1:{port}" in err and "Connection refused" in err
    assert "pw-not-in-logs" not in out + err


# --------------------------------------------------------------------------------------------- call listing


def test_call_listing_of_a_local_package_has_every_registration_step_in_order(tmp_path):
    from finetune_assets_tests.fakes.ml_commons_calls import list_path
    from finetune_assets_tests.fakes.ml_commons_packages import synthetic_packages

    listing = list_path(1, synthetic_packages(tmp_path))

    calls = [step.call for step in listing.steps]
    steps = [f"POST {ML}/model_groups/_search", f"POST {ML}/model_groups/_register", f"POST {ML}/models/_search",
             f"POST {ML}/models/_register_meta", f"POST {ML}/models/{{model_id}}/upload_chunk/{{n}}",
             f"POST {ML}/models/{{model_id}}/_deploy", f"GET {ML}/tasks/{{task_id}}", "POST /{index}/_search"]
    missing = [step for step in steps if step not in calls]
    assert not missing, f"registration skipped {missing}; listed {calls}"
    positions = [calls.index(step) for step in steps]
    assert positions == sorted(positions), calls
    notes = {step.call: step.note for step in listing.steps}
    assert notes[steps[4]] == "(n = 0..2)"          # the 10 kB synthetic zip, in 4 kB chunks, folded into one line
    assert notes[steps[6]] == "(polled)"
    assert len(calls) == len(set(calls))            # folded: each call once
    assert all(not any(len(part) == 20 and part.isalnum() for part in call.split("/")) for call in calls), calls
    assert listing.outcome.startswith("DEPLOYED, reused=False")


# --------------------------------------------------------------------------------------------- real cluster


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("OPENSEARCH_URL"), reason="set OPENSEARCH_URL to run against a real cluster")
def test_real_cluster_local_package_end_to_end(tmp_path):
    """OPENSEARCH_URL (+ OPENSEARCH_USERNAME / OPENSEARCH_PASSWORD, OPENSEARCH_VERIFY_CERTS=false for self-signed
    demo certificates); OPENSEARCH_TEST_PACKAGE points at an exported package, else the bundled MiniLM is
    exported here. The cluster needs allow_registering_model_via_local_file=true and an ML node (or
    only_run_on_ml_node=false)."""
    package = os.environ.get("OPENSEARCH_TEST_PACKAGE")
    if not package:
        package = export_dense_package(tmp_path / "package", name="finetune-assets/it-minilm")
    username = os.environ.get("OPENSEARCH_USERNAME")
    client = opensearch_client(os.environ["OPENSEARCH_URL"], username=username,
                         password=os.environ.get("OPENSEARCH_PASSWORD") if username else None,
                         verify_certs=os.environ.get("OPENSEARCH_VERIFY_CERTS", "true") != "false")
    result = register_local_package(client, package, index="finetune-assets-it", timeout=600, poll_interval=2)
    try:
        top = verify_neural_search(client, result.model_id, result.function_name, TEXTS,
                                   "how are embedding models registered in opensearch")
        assert top == "doc-1"
        again = register_local_package(client, package, index="finetune-assets-it", timeout=600)
        assert again.model_id == result.model_id and again.reused
    finally:
        if not result.reused:
            client.transport.perform_request("POST", f"{ML}/models/{result.model_id}/_undeploy")
            client.transport.perform_request("DELETE", f"{ML}/models/{result.model_id}")
