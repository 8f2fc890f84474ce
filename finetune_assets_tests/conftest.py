"""Shared fixtures: a small real corpus (Python docs) with bad records mixed in, and a Dagster home."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_assets.core.data.demo_corpus import python_docs_documents
from finetune_assets.instance import INSTANCE_YAML

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BAD_LINES = [
    b'{"_id": "broken", "text": "no closing brace"\n',   # malformed JSON
    b'{"_id": "no-text", "body": "a text under another field"}\n',  # missing text field (and no title)
    b'{"_id": "latin1", "text": "caf\xe9 au lait"}\n',    # not UTF-8
]


def write_tiny_corpus(folder: Path, documents: int = 24) -> tuple[Path, list[dict]]:
    """Real documents plus one of each bad record; returns the file and the valid documents."""
    docs = [{"_id": d["id"], "title": d["title"], "text": d["text"]} for d in python_docs_documents()[:documents]]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "docs.jsonl"
    with path.open("wb") as out:
        for number, doc in enumerate(docs):
            out.write(json.dumps(doc).encode() + b"\n")
            if number == 2:
                out.writelines(BAD_LINES)
        out.write(json.dumps(docs[0]).encode() + b"\n")  # duplicate id (and text)
    return path, docs


@pytest.fixture(scope="session")
def dagster_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    return home


INDEX = "tiny-docs"
DAGSTER = str(Path(sys.executable).with_name("dagster"))
RUN_CONFIG = {
    "execution": {"config": {"in_process": {}}},
    "ops": {
        "raw_corpus": {"config": {"max_documents": 0}},
        "training_pairs": {"config": {"held_out_fraction": 0.3}},
        "mined_negatives": {"config": {"num_negatives": 1, "range_min": 1}},
        "trained_model": {"config": {"epochs": 1, "batch_size": 4}},
        # 24 documents leave about 12 held-out queries: one query moving a rank shifts nDCG@10 by ~0.03, so the
        # gate (tested alone in test_end_to_end) would judge noise; this run checks that every stage runs.
        "evaluation_report": {"config": {"tolerance": 0.1}},
    },
    "resources": {"base_model": {"config": {"max_seq_length": 128}}},
}


def dagster_env(home: Path, storage: Path) -> dict:
    return {**os.environ, "DAGSTER_HOME": str(home), "FINETUNE_STORAGE_ROOT": str(storage)}


@pytest.fixture(scope="session")
def pipeline_run(dagster_home, tmp_path_factory):
    """Add the partition with the CLI-facing helper, then `dagster asset materialize` every asset."""
    storage = tmp_path_factory.mktemp("storage")
    _, valid_docs = write_tiny_corpus(storage / "corpora" / INDEX)
    env = dagster_env(dagster_home, storage)
    subprocess.run([sys.executable, "-c", f"from finetune_assets.instance import add_index_partition; "
                    f"add_index_partition({INDEX!r})"], env=env, check=True)
    command = [DAGSTER, "asset", "materialize", "-m", "finetune_assets.definitions", "--select", "*",
               "--partition", INDEX, "--config-json", json.dumps(RUN_CONFIG)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    return {"home": dagster_home, "storage": storage, "completed": completed, "valid_docs": valid_docs}
