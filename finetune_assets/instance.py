"""A Dagster home folder for local runs: instance config plus the partition that names the corpus."""
from __future__ import annotations

import os
from pathlib import Path

INSTANCE_YAML = """\
# Written by finetune-assets for local runs.
telemetry:
  enabled: false
nux:
  enabled: false
"""


def ensure_dagster_home(default: str | Path = ".dagster_home") -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or default).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(INSTANCE_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def add_index_partition(index: str) -> None:
    """Register `index` as a partition in the instance at $DAGSTER_HOME (no-op when it exists)."""
    from dagster import DagsterInstance

    from finetune_assets.core.data.index_names import validate_index_name
    from finetune_assets.partitions import index_partitions

    validate_index_name(index)
    with DagsterInstance.get() as instance:
        if not instance.has_dynamic_partition(index_partitions.name, index):
            instance.add_dynamic_partitions(index_partitions.name, [index])
