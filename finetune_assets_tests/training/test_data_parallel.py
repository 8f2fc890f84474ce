"""batch_kl under torchrun: two CPU processes (Gloo) train one model, the way several GPUs do with NCCL.

The Workers helpers run in two processes started here; the training entry point runs under torchrun itself."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from finetune_assets.core.jsonl import write_json, write_jsonl
from finetune_assets.core.teachers.teacher_top_k import build_top_k
from finetune_assets.core.training.data_parallel import Workers, join_workers, leave_workers

ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _in_two_processes(target, tmp_path: Path) -> list[dict]:
    """Run target(workers, rank) in ranks 0 and 1 of a Gloo group; each returns a JSON-able dict."""
    port = _free_port()
    mp.spawn(_child, args=(target, port, str(tmp_path)), nprocs=2, join=True)
    return [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]


def _child(rank: int, target, port: int, folder: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)})
    workers = join_workers(cuda=False)
    try:
        result = target(workers, rank)
    finally:
        leave_workers()
    Path(folder, f"rank{rank}.json").write_text(json.dumps(result))


def _gradients(workers: Workers, rank: int) -> dict:
    from finetune_assets.core.training import data_parallel

    data_parallel.BUCKET_ELEMENTS = 4  # parameters of 6, 2, 2 and 1 values: averaged in three buckets
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    torch.nn.init.constant_(model[0].weight, float(rank))  # different on each rank until broadcast
    workers.broadcast_parameters(model)
    # Each rank's own input gives its own gradient; rank 1 leaves the second layer out, so it has no gradient there.
    x = torch.full((1, 3), float(rank + 1))
    out = model[0](x).sum() if rank == 1 else model(x).sum()
    out.backward()
    own = [p.grad.tolist() if p.grad is not None else None for p in model.parameters()]
    workers.average_gradients(model.parameters())
    return {"weight0": model[0].weight.tolist(), "own": own, "averaged": [p.grad.tolist() for p in model.parameters()],
            "mean": workers.mean(rank + 1.0)}


def test_workers_start_from_rank_0_and_average_gradients_counting_a_missing_one_as_zero(tmp_path):
    ranks = _in_two_processes(_gradients, tmp_path)
    assert ranks[0]["weight0"] == ranks[1]["weight0"] == [[0.0] * 3] * 2  # rank 0's weights everywhere
    assert ranks[0]["averaged"] == ranks[1]["averaged"]
    for index, (a, b) in enumerate(zip(ranks[0]["own"], ranks[1]["own"])):
        expected = (np.asarray(a) + (np.asarray(b) if b is not None else 0.0)) / 2
        assert np.allclose(ranks[0]["averaged"][index], expected)
    assert ranks[1]["own"][2] is None and ranks[0]["own"][2] is not None  # the missing gradient was counted
    assert ranks[0]["mean"] == ranks[1]["mean"] == 1.5


def _diverged(workers: Workers, rank: int) -> dict:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    workers.broadcast_parameters(model)
    workers.check_in_sync(model)  # equal: passes
    with torch.no_grad():
        model[1].bias += rank  # rank 1 drifts
    try:
        workers.check_in_sync(model)
    except RuntimeError as error:
        return {"error": str(error)}
    return {"error": None}


def test_weights_that_drift_apart_are_an_error_naming_the_process_and_parameter(tmp_path):
    ranks = _in_two_processes(_diverged, tmp_path)
    for rank in ranks:
        assert rank["error"] == ("data-parallel training diverged: process 1's weights differ from process 0's "
                                 "(first at parameter '1.bias')")


def test_one_process_is_the_plain_loop_and_mpirun_without_torchrun_is_refused(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE", raising=False)
    workers = join_workers(cuda=False)
    assert workers == Workers() and workers.main and not workers.parallel
    assert workers.device(cuda=False) == "cpu" and workers.device(cuda=True) == "cuda"
    assert Workers(rank=1, world_size=2, local_rank=1).device(cuda=True) == "cuda:1"
    assert workers.mean(0.25) == 0.25
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "8")  # SMDDP's mpirun: no RANK or WORLD_SIZE for torch
    with pytest.raises(RuntimeError, match="under torchrun .* set the distribution to torch_distributed"):
        join_workers(cuda=True)


TEXTS = ["heat transfer to a flat plate in hypersonic flow", "buckling of thin cylindrical shells under load",
         "flutter of a wing at transonic speed", "boundary layer transition on a cone",
         "stress in a rotating disk", "shock wave reflection from a wall"]
QUERIES = ["shells", "flow", "wing", "disk", "wall", "cone", "plate", "buckling"]


def _batch_kl_inputs(tmp_path: Path, **settings) -> list[str]:
    """What mined_negatives writes for batch_kl: rows, documents and the teacher's top documents per row."""
    train = tmp_path / "train"
    train.mkdir()
    write_jsonl(train / "train.jsonl", [{"query": q} for q in QUERIES])
    write_jsonl(train / "documents.jsonl", [{"id": str(i), "text": t} for i, t in enumerate(TEXTS)])
    teacher = np.random.default_rng(0).normal(size=(len(QUERIES), len(TEXTS)))
    build_top_k(lambda rows: teacher[rows], len(QUERIES), len(TEXTS), folder=train)
    write_json(tmp_path / "hp.json", {"loss": "batch_kl", "model_type": "dense", "max_seq_length": "32",
                                      "candidates_per_query": "2", "logging_steps": "1", **settings})
    return ["--train-dir", str(train), "--model-dir", str(tmp_path / "model"),
            "--hyperparameters", str(tmp_path / "hp.json")]


@pytest.mark.slow
def test_torchrun_trains_one_model_from_two_processes_each_on_its_own_batches(tmp_path):
    from sentence_transformers import SentenceTransformer

    from finetune_assets.core.offline_models import minilm_path

    # 8 rows, 2 processes x batch 2: 2 steps an epoch, 2 epochs; a soup of 2 members averaged by process 0.
    arguments = _batch_kl_inputs(tmp_path, batch_size="2", epochs="2", soup_size="2", learning_rate="3e-4")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")} | ENV
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "finetune_assets.training", *arguments],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = [json.loads(line) for line in done.stderr.splitlines() if line.startswith('{"steps"')]
    assert len(summaries) == 1  # only process 0 reports
    [summary] = summaries
    assert (summary["steps"], summary["rows"], summary["processes"]) == (8, 8, 2)
    log = json.loads((tmp_path / "model" / "training_log.json").read_text())
    assert [(e["member_seed"], e["step"]) for e in log["loss_history"]] == [
        (0, 1), (0, 2), (0, 3), (0, 4), (1, 1), (1, 2), (1, 3), (1, 4)]
    tuned = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    base = SentenceTransformer(str(minilm_path()), device="cpu")
    moved = tuned.encode(TEXTS[:2]) - base.encode(TEXTS[:2])
    assert np.abs(moved).max() > 1e-3  # trained, not the base model written back


def test_rows_too_few_for_every_process_a_batch_are_refused(tmp_path, monkeypatch):
    from finetune_assets.core.teachers.teacher_top_k import TeacherTopK
    from finetune_assets.core.training import batch_distillation
    from finetune_assets.core.training.dense_training import Hyperparameters

    monkeypatch.setattr(batch_distillation, "join_workers", lambda cuda: Workers(rank=0, world_size=16))
    scores = np.zeros((len(QUERIES), len(TEXTS)), dtype=np.float16)
    with pytest.raises(ValueError, match="8 training rows cannot give each of 16 processes a batch"):
        batch_distillation.train_batch_kl([{"query": q} for q in QUERIES],
                                          [{"id": str(i), "text": t} for i, t in enumerate(TEXTS)],
                                          TeacherTopK.from_matrix(scores), Hyperparameters(loss="batch_kl"),
                                          tmp_path / "model")

