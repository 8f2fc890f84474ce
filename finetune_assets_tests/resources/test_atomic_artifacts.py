"""Versioned, atomic artifacts: a failed, killed or interrupted step never loses the last good version.

The faults are real where the machine allows: the training subprocess gets SIGKILL, a tmpfs fills up and then
turns read-only, the moto S3 server is frozen or stopped in the middle of an upload, credentials are absent.
Where a fault cannot be produced (no permission to mount), a file whose writes fail with ENOSPC stands in.
"""
from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import boto3
import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus, materialize

from finetune_assets.core.data.demo_corpus import python_docs_documents
from finetune_assets.core.data.pairs import document_text
from finetune_assets.core.jsonl import read_jsonl, write_jsonl
from finetune_assets.resources.storage import (
    CURRENT,
    CURRENT_KEY,
    MANIFEST,
    ArtifactStorage,
    ArtifactStorageError,
    MissingArtifact,
)
from finetune_assets_tests.conftest import write_tiny_corpus
from finetune_assets_tests.fakes.moto_server import start_moto_server

INDEX = "docs"
BUCKET = "artifacts-bucket"


def publish_files(storage: ArtifactStorage, asset: str, files: dict[str, str]) -> Path:
    folder = storage.artifact_dir(INDEX, asset)
    for name, text in files.items():
        (folder / name).write_text(text)
    storage.publish(INDEX, asset, folder)
    return folder


def failure_message(result) -> str:
    """The step failure's message and its causes, as the Dagster UI shows them."""
    error = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def logged(instance, result) -> list[str]:
    return [e.user_message for e in instance.all_logs(result.run_id)]


def latest_path(instance, asset: str) -> Path:
    materialization = instance.get_latest_materialization_event(AssetKey(asset)).asset_materialization
    return Path(materialization.metadata["path"].value)


def other_versions(folder: Path) -> list[Path]:
    return sorted(p for p in folder.parent.iterdir() if p.is_dir() and not p.is_symlink() and p != folder
                  and not p.name.startswith("."))


# -- the layout and the pruning rule, on local disk --------------------------------------------------------------
def test_each_publish_becomes_current_and_old_versions_are_pruned_by_the_rule(tmp_path):
    storage = ArtifactStorage(root=str(tmp_path), keep_previous=2)
    asset_dir = tmp_path / "artifacts" / INDEX / "training_pairs"
    with pytest.raises(MissingArtifact, match="materialize 'training_pairs' for this partition first"):
        storage.fetch(INDEX, "training_pairs")
    published = []
    for number in range(4):
        folder = publish_files(storage, "training_pairs", {"train.jsonl": f"run {number}\n"})
        published.append(folder)
        assert os.readlink(asset_dir / CURRENT) == folder.name  # a relative symlink to the version
        assert storage.fetch(INDEX, "training_pairs") == folder
        assert (asset_dir / CURRENT / "train.jsonl").read_text() == f"run {number}\n"
        assert storage.uri(INDEX, "training_pairs", "train.jsonl") == str(folder / "train.jsonl")
    assert [p.name for p in published] == sorted(p.name for p in published)  # names sort in start order
    assert '"train.jsonl": 6' in (published[-1] / MANIFEST).read_text()
    # The current version plus the two newest others stay.
    assert not published[0].exists() and all(p.is_dir() for p in published[1:])

    running = storage.artifact_dir(INDEX, "training_pairs", run_id="c0ffee00-still-writing")
    failed_step = ArtifactStorage(root=str(tmp_path))
    abandoned = failed_step.artifact_dir(INDEX, "training_pairs", run_id="dead0000-failed")
    (abandoned / "train.jsonl").write_text("half a fi")
    failed_step.teardown_after_execution(None)  # the step ended without publishing
    assert storage.fetch(INDEX, "training_pairs") == published[-1]  # neither touched the current version
    newest = publish_files(storage, "training_pairs", {"train.jsonl": "run 4\n"})
    assert storage.fetch(INDEX, "training_pairs") == newest
    assert not abandoned.exists(), "an abandoned staging folder older than the current version is pruned"
    assert running.is_dir(), "a staging folder whose writer still holds its lock is never pruned"
    assert not published[1].exists() and published[2].is_dir() and published[3].is_dir()
    with pytest.raises(ValueError, match="publish the folder that artifact_dir"):
        storage.publish(INDEX, "training_pairs", tmp_path)


def test_files_stored_before_versioning_are_read_then_pruned_like_the_oldest_version(tmp_path):
    storage = ArtifactStorage(root=str(tmp_path), keep_previous=1)
    asset_dir = tmp_path / "artifacts" / INDEX / "raw_corpus"
    asset_dir.mkdir(parents=True)
    (asset_dir / "documents.jsonl").write_text('{"id": "old"}\n')  # the layout before versions
    assert storage.fetch(INDEX, "raw_corpus") == asset_dir
    assert storage.uri(INDEX, "raw_corpus") == str(asset_dir)
    first = publish_files(storage, "raw_corpus", {"documents.jsonl": '{"id": "new"}\n'})
    assert storage.fetch(INDEX, "raw_corpus") == first
    assert (asset_dir / "documents.jsonl").exists()  # kept as the one previous version
    publish_files(storage, "raw_corpus", {"documents.jsonl": '{"id": "newer"}\n'})
    assert not (asset_dir / "documents.jsonl").exists() and first.is_dir()


def test_bedrock_job_state_lives_outside_the_versions(tmp_path):
    storage = ArtifactStorage(root=str(tmp_path))
    assert storage.read_state(INDEX, "bedrock_batch_outputs", "jobs.json") is None
    uri = storage.write_state(INDEX, "bedrock_batch_outputs", "jobs.json", {"job_arns": ["arn:1"]})
    assert uri == str(tmp_path / "state" / INDEX / "bedrock_batch_outputs" / "jobs.json")
    staged = storage.artifact_dir(INDEX, "bedrock_batch_outputs")
    storage.teardown_after_execution(None)  # the step failed: its version is never published ...
    assert storage.read_state(INDEX, "bedrock_batch_outputs", "jobs.json") == {"job_arns": ["arn:1"]}  # ... state is
    assert staged.is_dir() and not (tmp_path / "artifacts" / INDEX / "bedrock_batch_outputs" / CURRENT).exists()


def test_job_arns_saved_in_an_artifact_before_versioning_are_still_found(tmp_path):
    from finetune_assets.stages.queries.bedrock_jobs import previous_jobs

    storage = ArtifactStorage(root=str(tmp_path))
    legacy = tmp_path / "artifacts" / INDEX / "bedrock_batch_outputs"
    legacy.mkdir(parents=True)
    (legacy / "jobs.json").write_text('{"fingerprint": "f", "job_arns": ["arn:running"]}')  # an upgrade mid-job
    assert previous_jobs(storage, INDEX)["job_arns"] == ["arn:running"]
    storage.write_state(INDEX, "bedrock_batch_outputs", "jobs.json", {"fingerprint": "f", "job_arns": ["arn:new"]})
    assert previous_jobs(storage, INDEX)["job_arns"] == ["arn:new"]  # the state location wins once written
    (tmp_path / "state" / INDEX / "bedrock_batch_outputs" / "jobs.json").write_text("[1, 2")
    with pytest.raises(ArtifactStorageError, match=r"state/docs/bedrock_batch_outputs/jobs.json is not valid JSON"):
        previous_jobs(storage, INDEX)


# -- (b) disk full while a stage writes --------------------------------------------------------------------------
def materialize_raw_corpus(instance, storage: ArtifactStorage, corpus: Path, raise_on_error: bool = True):
    from finetune_assets.definitions import defs
    from finetune_assets.stages.corpus.raw_corpus import raw_corpus

    return materialize([raw_corpus], partition_key=INDEX, instance=instance, raise_on_error=raise_on_error,
                       resources={**defs.resources, "storage": storage},
                       run_config={"ops": {"raw_corpus": {"config": {"source": str(corpus), "max_documents": 0}}}})


class FullDisk:
    """An open file whose writes fail as write(2) fails on a full disk: ENOSPC, without a file name."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def test_disk_full_while_writing_keeps_the_previous_version_and_names_the_file(tmp_path, monkeypatch):
    corpus, documents = write_tiny_corpus(tmp_path / "corpus", documents=8)
    storage = ArtifactStorage(root=str(tmp_path / "storage"))
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("index", [INDEX])
        materialize_raw_corpus(instance, storage, corpus)
        good = latest_path(instance, "raw_corpus")
        before = (good / "documents.jsonl").read_text()

        real_open = Path.open

        def open_on_a_full_disk(self, mode="r", *args, **kwargs):
            handle = real_open(self, mode, *args, **kwargs)
            staging = "w" in mode and self.parent.parent == good.parent and self.parent != good
            return FullDisk(handle) if staging else handle

        monkeypatch.setattr(Path, "open", open_on_a_full_disk)
        failed = materialize_raw_corpus(instance, storage, corpus, raise_on_error=False)
        monkeypatch.undo()
        assert not failed.success
        message = failure_message(failed)
        staged = other_versions(good)
        assert len(staged) == 1  # kept to look at ...
        assert f"No space left on device: '{staged[0] / 'documents.jsonl'}'" in message
        assert any("was not published" in line and str(good) in line for line in logged(instance, failed))
        assert storage.fetch(INDEX, "raw_corpus") == good and (good / "documents.jsonl").read_text() == before
        assert latest_path(instance, "raw_corpus") == good  # Dagster's latest path is the intact version

        materialize_raw_corpus(instance, storage, corpus)
        assert not staged[0].exists()  # ... until the next successful publish prunes it
        assert good.is_dir() and latest_path(instance, "raw_corpus") != good
    assert len(list(read_jsonl(storage.fetch(INDEX, "raw_corpus") / "documents.jsonl"))) == len(documents)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 2 MiB tmpfs that can really fill up (needs permission to mount: skipped without it)."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the FullDisk test covers ENOSPC")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_really_full_then_read_only_disk_keeps_the_previous_version(tmp_path, tiny_tmpfs):
    corpus, _ = write_tiny_corpus(tmp_path / "corpus", documents=24)
    storage = ArtifactStorage(root=str(tiny_tmpfs / "storage"))
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("index", [INDEX])
        materialize_raw_corpus(instance, storage, corpus)
        good = storage.fetch(INDEX, "raw_corpus")
        before = (good / "documents.jsonl").read_bytes()
        filler = os.open(tiny_tmpfs / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            with pytest.raises(OSError) as full:
                while True:
                    os.write(filler, b"\0" * 4096)
            assert full.value.errno == errno.ENOSPC
        finally:
            os.close(filler)
        failed = materialize_raw_corpus(instance, storage, corpus, raise_on_error=False)
        message = failure_message(failed)
        assert "No space left on device" in message and str(good.parent) in message
        assert storage.fetch(INDEX, "raw_corpus") == good and (good / "documents.jsonl").read_bytes() == before

        subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
        failed = materialize_raw_corpus(instance, storage, corpus, raise_on_error=False)
        message = failure_message(failed)
        assert f"cannot create a version folder for 'raw_corpus' (partition '{INDEX}') in {good.parent}" in message
        assert "Read-only file system" in message and "the current version is unchanged" in message
        assert storage.fetch(INDEX, "raw_corpus") == good and latest_path(instance, "raw_corpus") == good


# -- S3: (c) the server stops mid-upload, (d) no credentials --------------------------------------------------------
class PutRecorder:
    """Records the key of every PutObject the storage sends; once armed, runs an action after the first object of
    a version is stored (the middle of that version's upload)."""

    def __init__(self, monkeypatch):
        self.keys: list[str] = []
        self.version, self.action = "", None
        original = boto3.session.Session.client

        def client(session, *args, **kwargs):
            created = original(session, *args, **kwargs)
            created.meta.events.register("before-parameter-build.s3.PutObject", self._before)
            created.meta.events.register("after-call.s3.PutObject", self._after)
            return created

        monkeypatch.setattr(boto3.session.Session, "client", client)

    def arm(self, version: str, action) -> None:
        self.version, self.action = version, action

    def _before(self, params, **_):
        self.keys.append(params["Key"])

    def _after(self, **_):
        if self.action and any(f"/{self.version}/" in key for key in self.keys):
            action, self.action = self.action, None
            action()


def stage_parts(storage: ArtifactStorage, text: str) -> Path:
    folder = storage.artifact_dir(INDEX, "training_pairs")
    for number in range(5):
        (folder / f"part-{number}.jsonl").write_text(f"{text} {number}\n")
    return folder


def test_s3_server_frozen_mid_upload_leaves_the_pointer_on_the_previous_version(tmp_path, monkeypatch):
    server = start_moto_server()
    try:
        with server.environ():
            server.client("s3").create_bucket(Bucket=BUCKET)
            puts = PutRecorder(monkeypatch)
            writer = ArtifactStorage(root=f"s3://{BUCKET}/runs", cache_dir=str(tmp_path / "writer"),
                                     s3_max_attempts=1, s3_timeout_s=2)
            previous = stage_parts(writer, "good")
            writer.publish(INDEX, "training_pairs", previous)
            assert puts.keys[-1].endswith(f"/training_pairs/{CURRENT_KEY}")  # the pointer goes last ...
            assert puts.keys[-2].endswith(f"/{previous.name}/{MANIFEST}")  # ... after the manifest
            folder = stage_parts(writer, "new")
            sent_before = len(puts.keys)
            puts.arm(folder.name, lambda: os.kill(server.process.pid, signal.SIGSTOP))
            with pytest.raises(ArtifactStorageError) as raised:
                writer.publish(INDEX, "training_pairs", folder)
            os.kill(server.process.pid, signal.SIGCONT)
            message = str(raised.value)
            assert f"in bucket '{BUCKET}'" in message and "Timeout" in message
            assert f"could not publish 'training_pairs' for partition '{INDEX}' to " \
                   f"s3://{BUCKET}/runs/artifacts/{INDEX}/training_pairs/{folder.name}/" in message
            assert message.endswith(f"{CURRENT_KEY} still names the current version, "
                                    f"s3://{BUCKET}/runs/artifacts/{INDEX}/training_pairs/{previous.name}")
            assert not any(key.endswith(CURRENT_KEY) for key in puts.keys[sent_before:])
            pointer = server.client("s3").get_object(Bucket=BUCKET, Key=f"runs/artifacts/{INDEX}/training_pairs/"
                                                                         f"{CURRENT_KEY}")
            assert pointer["Body"].read().decode().strip() == previous.name
            reader = ArtifactStorage(root=f"s3://{BUCKET}/runs", cache_dir=str(tmp_path / "reader"))
            fetched = reader.fetch(INDEX, "training_pairs")
            assert fetched.name == previous.name and (fetched / "part-4.jsonl").read_text() == "good 4\n"
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


def test_s3_server_stopped_mid_upload_gives_a_clear_error_and_never_sends_the_pointer(tmp_path, monkeypatch):
    server = start_moto_server()
    try:
        with server.environ():
            server.client("s3").create_bucket(Bucket=BUCKET)
            puts = PutRecorder(monkeypatch)
            writer = ArtifactStorage(root=f"s3://{BUCKET}/runs", cache_dir=str(tmp_path / "writer"),
                                     s3_max_attempts=2, s3_timeout_s=5)
            previous = stage_parts(writer, "good")
            writer.publish(INDEX, "training_pairs", previous)
            folder = stage_parts(writer, "new")
            sent_before = len(puts.keys)
            puts.arm(folder.name, server.stop)
            with pytest.raises(ArtifactStorageError) as raised:
                writer.publish(INDEX, "training_pairs", folder)
            message = str(raised.value)
            assert f"in bucket '{BUCKET}'" in message and f"(endpoint {server.endpoint_url})" in message
            assert "EndpointConnectionError" in message or "ConnectionClosedError" in message
            assert message.endswith(f"still names the current version, {writer.version_uri(INDEX, 'training_pairs', previous.name)}")
            assert 1 <= len(puts.keys[sent_before:]) < 5
            assert not any(key.endswith(CURRENT_KEY) for key in puts.keys[sent_before:])
    finally:
        server.stop()


def test_an_s3_root_without_credentials_names_the_bucket_and_what_to_set(tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    storage = ArtifactStorage(root="s3://team-artifacts/finetune", cache_dir=str(tmp_path / "cache"))
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("index", [INDEX])
        from finetune_assets.definitions import defs
        from finetune_assets.stages.corpus.raw_corpus import raw_corpus

        result = materialize([raw_corpus], partition_key=INDEX, instance=instance, raise_on_error=False,
                             resources={**defs.resources, "storage": storage})
    message = failure_message(result)
    assert "no AWS credentials for the storage bucket s3://team-artifacts (root s3://team-artifacts/finetune)" \
           in message
    assert all(name in message for name in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_ENDPOINT_URL"))
    assert "NoCredentialsError" not in message
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(ArtifactStorageError, match=r"s3://team-artifacts .*no-such-profile.*AWS_ACCESS_KEY_ID"):
        ArtifactStorage(root="s3://team-artifacts/finetune").fetch(INDEX, "raw_corpus")


# -- trained_model: a failed and a killed re-materialization (slow: real training) --------------------------------
TRAIN = {"epochs": 1, "batch_size": 4, "learning_rate": 1e-5, "max_steps": 1, "loss": "mnrl"}


def training_inputs(root: Path) -> ArtifactStorage:
    """The cheapest real trained_model input: ten documents and one mined negative per query."""
    storage = ArtifactStorage(root=str(root))
    documents = [{"id": d["id"], "title": d["title"], "text": d["text"]} for d in python_docs_documents()[:10]]
    rows = [{"query": f"what does {d['title']} do", "positive": document_text(d), "doc_id": d["id"],
             "negative_1": document_text(documents[(n + 1) % len(documents)])} for n, d in enumerate(documents)]
    folder = storage.artifact_dir(INDEX, "raw_corpus")
    write_jsonl(folder / "documents.jsonl", documents)
    storage.publish(INDEX, "raw_corpus", folder)
    folder = storage.artifact_dir(INDEX, "mined_negatives")
    write_jsonl(folder / "train.jsonl", rows)
    storage.publish(INDEX, "mined_negatives", folder)
    return storage


def train(instance, storage: ArtifactStorage, config: dict, raise_on_error: bool = True):
    from finetune_assets.definitions import defs
    from finetune_assets.resources.base_model import BaseModelResource
    from finetune_assets.stages.training.trained_model import trained_model

    return materialize([trained_model], partition_key=INDEX, instance=instance, raise_on_error=raise_on_error,
                       resources={**defs.resources, "storage": storage,
                                  "base_model": BaseModelResource(max_seq_length=64)},
                       run_config={"ops": {"trained_model": {"config": config}}})


@pytest.mark.slow
def test_a_failed_rematerialization_keeps_the_last_good_model_and_its_metadata_path(tmp_path):
    storage = training_inputs(tmp_path / "storage")
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("index", [INDEX])
        train(instance, storage, TRAIN)
        good = latest_path(instance, "trained_model")  # <version>/model
        weights = (good / "model.safetensors").read_bytes()
        # Valid config that fails inside the step, after its version folder exists: SageMaker needs S3 storage.
        failed = train(instance, storage, {**TRAIN, "backend": "sagemaker"}, raise_on_error=False)
        assert not failed.success and "training on SageMaker reads its data from S3" in failure_message(failed)
        assert latest_path(instance, "trained_model") == good
    assert (good / "model.safetensors").read_bytes() == weights
    assert storage.fetch(INDEX, "trained_model") == good.parent
    assert (tmp_path / "storage" / "artifacts" / INDEX / "trained_model" / CURRENT / "model").resolve() == good


def kill_training_once_it_steps(instance, root: Path, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the `python -m finetune_assets.training` subprocess once a Pipes log line reports a step."""
    step = re.compile(r"^step \d+/\d+ loss")
    while not stop.wait(0.5):
        running = [r.dagster_run.run_id for r in instance.get_run_records()
                   if r.dagster_run.status == DagsterRunStatus.STARTED]
        if not any(step.match(e.user_message or "") for run_id in running for e in instance.all_logs(run_id)):
            continue
        for pid in os.listdir("/proc"):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError):
                continue
            if b"finetune_assets.training" in command and any(str(root).encode() in part for part in command):
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the training process through /proc")
def test_a_killed_training_subprocess_keeps_the_previous_model_and_a_rerun_completes(tmp_path):
    root = tmp_path / "storage"
    storage = training_inputs(root)
    (tmp_path / "dagster").mkdir()  # an instance on disk: the watcher thread reads its event log
    with DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster")) as instance:
        instance.add_dynamic_partitions("index", [INDEX])
        train(instance, storage, TRAIN)
        good = latest_path(instance, "trained_model")
        weights = (good / "model.safetensors").read_bytes()

        killed: list[int] = []
        stop = threading.Event()
        watcher = threading.Thread(target=kill_training_once_it_steps, args=(instance, root, killed, stop))
        watcher.start()
        try:
            long_run = {**TRAIN, "epochs": 200, "max_steps": 400}
            failed = train(instance, storage, long_run, raise_on_error=False)
        finally:
            stop.set()
            watcher.join()
        assert killed and not failed.success
        assert "-9" in failure_message(failed) or "SIGKILL" in failure_message(failed)
        assert latest_path(instance, "trained_model") == good
        assert storage.fetch(INDEX, "trained_model") == good.parent
        assert (good / "model.safetensors").read_bytes() == weights
        interrupted = other_versions(good.parent)
        assert len(interrupted) == 1 and (interrupted[0] / "hyperparameters.json").is_file()
        assert not (interrupted[0] / "model" / "training_log.json").exists()

        rerun = train(instance, storage, TRAIN)
        newest = latest_path(instance, "trained_model")
        assert rerun.success and newest != good and (newest / "model.safetensors").is_file()
        assert storage.fetch(INDEX, "trained_model") == newest.parent
    assert not interrupted[0].exists()  # the killed run's staging was pruned by the successful publish
    assert (good / "model.safetensors").read_bytes() == weights  # kept as one of the previous versions
