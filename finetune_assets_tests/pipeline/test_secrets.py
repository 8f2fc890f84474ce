"""No credential reaches a log, the run's event log, asset metadata or an artifact.

raw_corpus dumps an index from osmem with a password in OPENSEARCH_URL, basic auth from OPENSEARCH_USERNAME /
OPENSEARCH_PASSWORD and other secret env vars set, through a real Dagster instance whose DAGSTER_HOME is on disk;
then everything under DAGSTER_HOME (SQLite cells decompressed too), the artifacts and the captured output is
searched for each secret, as written and in its base64 basic-auth form. osmem does not check credentials; what
matters here is what gets written.
"""
from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from opensearchpy import OpenSearch

from finetune_assets import cli
from finetune_assets_tests.fakes import osmem_server as osmem_helpers
from finetune_assets_tests.fakes.osmem_server import bulk_index

osmem = osmem_helpers.osmem                  # fixtures: session osmem, per-test fault proxy in front of it
fault_proxy = osmem_helpers.fault_proxy

URL_PASSWORD = "UrlPw-7f3k2q"
SECRETS = {"OPENSEARCH_PASSWORD": "EnvPw-9q8w7e", "FINETUNE_OPENAI_API_KEY": "sk-openai-5t6y7u8i",
           "AWS_SECRET_ACCESS_KEY": "AwsSecret-1a2b3c4d", "AWS_SESSION_TOKEN": "AwsToken-4d5e6f7g"}
USER = "reader"
GOOD_DOCS = 20


def needles() -> dict[str, bytes]:
    """Every secret as written, and the basic-auth base64 forms that carry the two passwords."""
    found = {name: value.encode() for name, value in SECRETS.items()}
    found["url password"] = URL_PASSWORD.encode()
    found["basic auth header"] = base64.b64encode(f"{USER}:{SECRETS['OPENSEARCH_PASSWORD']}".encode())
    found["url basic auth"] = base64.b64encode(f"admin:{URL_PASSWORD}".encode())
    return found


def _cells(database: Path):
    """Every cell of every table, as bytes; zlib-compressed blobs (Dagster's snapshots) decompressed."""
    with sqlite3.connect(database) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    data = value if isinstance(value, bytes) else str(value).encode()
                    yield data
                    try:
                        yield zlib.decompress(data)
                    except zlib.error:
                        pass


def find_secrets(roots: list[Path], output: str = "") -> list[str]:
    """'where: which secret' for every hit under `roots` (files, SQLite cells) and in `output`."""
    hits = [f"output: {name}" for name, needle in needles().items() if needle in output.encode()]
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            blobs = [path.read_bytes()]
            if blobs[0].startswith(b"SQLite format 3\x00"):
                blobs.extend(_cells(path))
            hits += [f"{path}: {name}" for name, needle in needles().items() if any(needle in b for b in blobs)]
    return hits


def secret_env(monkeypatch, tmp_path: Path, url: str) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    variables = {**SECRETS, "OPENSEARCH_URL": url, "OPENSEARCH_USERNAME": USER, "DAGSTER_HOME": str(home),
                 "FINETUNE_STORAGE_ROOT": str(tmp_path / "storage"), "HF_HUB_OFFLINE": "1",
                 "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE"}
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


def with_url_password(url: str) -> str:
    return url.replace("http://", f"http://admin:{URL_PASSWORD}@")


@pytest.fixture(scope="module")
def index(osmem) -> str:
    name = "secret-docs"
    documents = [{"_id": f"s-{i}", "text": f"Document {i} is about rotor blades and their wakes."}
                 for i in range(GOOD_DOCS)]
    bulk_index(OpenSearch(osmem.url), name, [*documents, {"_id": "no-text", "title": "only a title field"}],
               mappings={"properties": {"text": {"type": "text"}, "title": {"type": "text"}}})
    return name


def test_materializing_from_an_index_writes_no_secret_anywhere(osmem, index, tmp_path, monkeypatch):
    from finetune_assets.instance import add_index_partition

    env = secret_env(monkeypatch, tmp_path, with_url_password(osmem.url))
    add_index_partition(index)
    config = {"ops": {"raw_corpus": {"config": {"from_opensearch": True, "max_documents": 2}}}}
    run = subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "finetune_assets.definitions",
         "--select", "raw_corpus", "--partition", index, "--config-json", json.dumps(config)],
        cwd=Path(__file__).resolve().parents[2], env={**__import__("os").environ, **env}, capture_output=True,
        text=True, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    host = osmem.url.removeprefix("http://")
    assert f"from http://***@{host} (fields" in output          # the URL is logged, without its password
    # 1 record without text among the 21 read: 4.8%, though only 2 documents are sampled
    assert "Asset check 'few_records_quarantined' on 'raw_corpus' passed" in output
    quarantine = tmp_path / "storage" / "artifacts" / index / "raw_corpus"
    assert any(f"http://***@{host}/{index}" in p.read_text() for p in quarantine.rglob("quarantine.jsonl"))
    assert find_secrets([Path(env["DAGSTER_HOME"]), tmp_path / "storage"], output) == []


def test_a_failure_that_echoes_credentials_is_stored_redacted(index, fault_proxy, tmp_path, monkeypatch, capfd):
    from dagster import DagsterInstance, EnvVar, materialize

    from finetune_assets.resources.base_model import BaseModelResource
    from finetune_assets.resources.opensearch import OpenSearchResource
    from finetune_assets.resources.storage import ArtifactStorage
    from finetune_assets.stages.corpus.raw_corpus import raw_corpus

    env = secret_env(monkeypatch, tmp_path, with_url_password(fault_proxy.url))
    header = "Basic " + needles()["basic auth header"].decode()
    echo = f"proxy refused {with_url_password(fault_proxy.url)}/{index}/_count with Authorization: {header}"
    fault_proxy.add("status", status=400, times=100, body={"error": {
        "root_cause": [{"type": "proxy_exception", "reason": echo}], "type": "proxy_exception", "reason": echo},
        "status": 400})
    resources = {"storage": ArtifactStorage(root=env["FINETUNE_STORAGE_ROOT"]), "base_model": BaseModelResource(),
                 "opensearch": OpenSearchResource(url=EnvVar("OPENSEARCH_URL"), username=EnvVar("OPENSEARCH_USERNAME"),
                                                  password=EnvVar("OPENSEARCH_PASSWORD"))}
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("index", [index])
        result = materialize([raw_corpus], partition_key=index, resources=resources, instance=instance,
                             run_config={"ops": {"raw_corpus": {"config": {"from_opensearch": True}}}},
                             raise_on_error=False)
    assert not result.success
    assert all(r.headers.get("authorization") == header for r in fault_proxy.requests)   # the credentials were sent
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    error, messages = failure.step_failure_data.error, []
    while error is not None:                                    # Dagster's wrapper, then what the asset raised
        messages.append(error.message)
        error = error.cause or error.context
    assert any(m.startswith("finetune_assets.core.redact.RedactedError: IndexDumpError: cannot count documents")
               and "Authorization: ***" in m and "http://***@" in m for m in messages), messages
    captured = capfd.readouterr()
    assert find_secrets([Path(env["DAGSTER_HOME"]), tmp_path / "storage"], captured.out + captured.err) == []


def test_extract_cli_error_shows_no_secret(index, fault_proxy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENSEARCH_PASSWORD", SECRETS["OPENSEARCH_PASSWORD"])
    echo = f"upstream {with_url_password(fault_proxy.url)} rejected Authorization: Basic " + \
        needles()["basic auth header"].decode()
    fault_proxy.add("status", status=400, times=100, body={"error": {"type": "proxy_exception", "reason": echo},
                                                           "status": 400})
    code = cli.main(["extract", "--opensearch-url", with_url_password(fault_proxy.url), "--index", index,
                     "--text-field", "text", "--username", USER, "--out", str(tmp_path / "dump.jsonl")])
    captured = capsys.readouterr()
    assert code == 1
    assert "error: cannot count documents of 'secret-docs': HTTP 400 proxy_exception: upstream http://***@" in \
        captured.err
    assert "Traceback" not in captured.err + captured.out
    assert find_secrets([tmp_path], captured.out + captured.err) == []
