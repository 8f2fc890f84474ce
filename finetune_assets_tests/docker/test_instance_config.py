"""Every dagster.yaml under docker/ goes through Dagster's own instance loading, without Postgres or AWS.

``InstanceRef.from_dir`` is what ``DagsterInstance.from_config`` starts with: it validates the file against the
instance schema and turns each section into a ``ConfigurableClassData``. Each class section is then checked
against its class's ``config_type()`` (what ``rehydrate`` does), and the classes that make no network call when
built (run coordinator, ECS run launcher, S3 compute log manager) are built for real. Storage is never built:
that would connect to Postgres.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.config import pg_config

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
CONFIGS = sorted(DOCKER.rglob("dagster.yaml"))
AWS_CONFIG = DOCKER / "aws" / "dagster.yaml"
CLASS_FIELDS = ("local_artifact_storage_data", "storage_data", "run_storage_data", "event_storage_data",
                "schedule_storage_data", "compute_logs_data", "scheduler_data", "run_coordinator_data",
                "run_launcher_data", "secrets_loader_data", "defs_state_storage_data")
BUILT_OFFLINE = ("run_coordinator_data", "run_launcher_data", "compute_logs_data")


def env_refs(value) -> set[str]:
    """Names of the environment variables a config reads through ``{env: NAME}``."""
    if isinstance(value, dict):
        if set(value) == {"env"} and isinstance(value["env"], str):
            return {value["env"]}
        return set().union(*(env_refs(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(env_refs(v) for v in value)) if value else set()
    return set()


@pytest.fixture
def placeholder_env(monkeypatch):
    """Every variable the configs read set to a recognisable value, and an offline AWS environment."""
    for config in CONFIGS:
        for name in env_refs(yaml.safe_load(config.read_text())):
            monkeypatch.setenv(name, f"<{name}>")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


def load_ref(config: Path, base_dir: Path) -> InstanceRef:
    return InstanceRef.from_dir(str(base_dir), config_dir=str(config.parent), config_filename=config.name)


def class_schema(data):
    try:
        return getattr(importlib.import_module(data.module_name), data.class_name).config_type()
    except ModuleNotFoundError:
        # dagster-postgres is in the `aws` extra, not the test environment; its storage classes use this schema.
        assert data.module_name == "dagster_postgres", f"cannot import {data.module_name}.{data.class_name}"
        return pg_config()


def check_class_config(data) -> dict:
    """The section's config processed against its class's schema (env values resolved), as rehydrate does."""
    result = process_config(resolve_to_config_type(class_schema(data)), data.config_dict)
    if not result.success:
        raise DagsterInvalidConfigError(f"{data.module_name}.{data.class_name}", result.errors, data.config_dict)
    return result.value


def validate_instance(config: Path, base_dir: Path) -> InstanceRef:
    """The instance schema, then every class section against its own schema; raises on the first error."""
    ref = load_ref(config, base_dir)
    for field in CLASS_FIELDS:
        if getattr(ref, field) is not None:
            check_class_config(getattr(ref, field))
    return ref


def test_the_docker_folder_has_the_local_and_the_aws_instance():
    assert DOCKER / "dagster.yaml" in CONFIGS and AWS_CONFIG in CONFIGS


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(DOCKER)))
def test_instance_config_loads_through_dagster(config, tmp_path, placeholder_env):
    ref = validate_instance(config, tmp_path)
    for field in BUILT_OFFLINE:
        built = getattr(ref, field).rehydrate()
        assert type(built).__name__ == getattr(ref, field).class_name


def test_aws_instance_uses_postgres_ecs_queue_and_s3_logs(tmp_path, placeholder_env):
    ref = validate_instance(AWS_CONFIG, tmp_path)
    assert (ref.storage_data.module_name, ref.storage_data.class_name) == ("dagster_postgres", "DagsterPostgresStorage")
    postgres = check_class_config(ref.storage_data)["postgres_db"]
    assert (postgres["hostname"], postgres["username"], postgres["password"], postgres["db_name"]) == (
        "<DAGSTER_PG_HOST>", "<DAGSTER_PG_USERNAME>", "<DAGSTER_PG_PASSWORD>", "<DAGSTER_PG_DB>")

    launcher = ref.run_launcher_data.rehydrate()
    assert type(launcher).__name__ == "EcsRunLauncher"
    assert launcher.include_sidecars is False
    assert launcher.task_role_arn == "<DAGSTER_RUN_TASK_ROLE_ARN>"
    assert launcher.execution_role_arn == "<DAGSTER_RUN_EXECUTION_ROLE_ARN>"
    assert launcher.run_resources["cpu"] and launcher.run_resources["memory"]
    assert {"name": "OPENSEARCH_PASSWORD", "valueFrom": "<FINETUNE_OPENSEARCH_PASSWORD_SECRET_ARN>"} in launcher.secrets
    assert launcher.secrets_tags == []   # no ListSecrets over the whole account

    coordinator = ref.run_coordinator_data.rehydrate()
    assert type(coordinator).__name__ == "QueuedRunCoordinator"
    assert coordinator.get_run_queue_config().max_concurrent_runs >= 1

    logs = ref.compute_logs_data.rehydrate()
    assert type(logs).__name__ == "S3ComputeLogManager"
    assert logs._s3_bucket == "<DAGSTER_COMPUTE_LOG_BUCKET>"


def test_run_tasks_receive_every_variable_the_instance_reads():
    """The run worker in its ECS task opens the same instance: whatever storage and compute logs read from
    the environment must be passed to the task (env_vars or secrets), or every run fails at start."""
    config = yaml.safe_load(AWS_CONFIG.read_text())
    launcher = config["run_launcher"]["config"]
    passed = set(launcher["env_vars"]) | {secret["name"] for secret in launcher["secrets"]}
    needed = env_refs(config["storage"]) | env_refs(config["compute_logs"])
    assert needed - passed == set()


# Settings the code location reads that a run on ECS may go without, and why.
NOT_FOR_RUN_TASKS = {name: "the OpenAI-compatible query generator targets a local server" for name in (
    "FINETUNE_OPENAI_BASE_URL", "FINETUNE_OPENAI_MODEL", "FINETUNE_OPENAI_API_KEY")}
# Read only to name the endpoint in an error message; on AWS the S3 endpoint is the region's own.
NOT_FOR_RUN_TASKS["AWS_ENDPOINT_URL"] = "only an S3-compatible endpoint (not AWS) needs it"


def environment_names_read(path: Path) -> set[str]:
    """Literal names passed to os.environ.get / os.getenv / EnvVar / _secret in one module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and \
                ast.unparse(node.func) in ("os.environ.get", "os.getenv", "EnvVar", "_secret"):
            names.add(node.args[0].value)
    return names


def test_run_tasks_receive_the_code_locations_settings():
    """The run worker imports finetune_assets.definitions in its own ECS task: a setting it reads from the
    environment but the launcher does not pass silently falls back to its local default there."""
    launcher = yaml.safe_load(AWS_CONFIG.read_text())["run_launcher"]["config"]
    passed = set(launcher["env_vars"]) | {secret["name"] for secret in launcher["secrets"]}
    read = environment_names_read(ROOT / "finetune_assets" / "definitions.py") | \
        environment_names_read(ROOT / "finetune_assets" / "resources" / "storage.py")
    assert "OPENSEARCH_URL" in read and "FINETUNE_STORAGE_ROOT" in read
    assert read - passed - set(NOT_FOR_RUN_TASKS) == set(), "add these to run_launcher.env_vars (or secrets) " \
                                                             "in docker/aws/dagster.yaml"


@pytest.mark.parametrize("path, key", [
    (("run_launcher", "config"), "include_sidecar"),                  # typo of include_sidecars
    (("run_launcher", "config", "task_definition"), "task_role"),     # not a task definition field
    (("storage", "postgres", "postgres_db"), "host"),                  # hostname is the key
    (("compute_logs", "config"), "bucket_name"),
    (("run_coordinator", "config"), "max_runs"),
])
def test_a_wrong_key_fails_validation(path, key, tmp_path, placeholder_env):
    config = yaml.safe_load(AWS_CONFIG.read_text())
    section = config
    for name in path:
        section = section[name]
    section[key] = "x"
    broken = tmp_path / "config" / "dagster.yaml"
    broken.parent.mkdir()
    broken.write_text(yaml.safe_dump(config))
    with pytest.raises(DagsterInvalidConfigError, match=key):
        validate_instance(broken, tmp_path)
