"""Data parallelism for batch_kl: under torchrun (locally, or SageMaker's `torch_distributed`) every process trains
the same model on its own batches, and gradients are averaged across processes before each optimizer step.

The Trainer-based losses get this from Hugging Face's Trainer; batch_kl runs its own loop, so it does the same
here: one process group over the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), NCCL
on GPUs and Gloo on CPUs. `batch_size` stays per process, as it is for the Trainer, so N processes read N
batches per step and an epoch takes 1/N of the steps. Without a launcher (WORLD_SIZE unset or 1) nothing here
touches torch.distributed and training is exactly the single-process loop.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

BUCKET_ELEMENTS = 1 << 24  # gradients are averaged in flat buckets of at most this many values (64 MiB in fp32)


def launched_rank() -> int:
    """This process's global rank as the launcher set it (0 without one): torchrun's RANK, mpirun's
    OMPI_COMM_WORLD_RANK."""
    return int(os.environ.get("RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or 0)


@dataclass(frozen=True)
class Workers:
    """The processes that train one model together; a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that logs and saves the model."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    def device(self, cuda: bool) -> str:
        return f"cuda:{self.local_rank}" if cuda and self.parallel else ("cuda" if cuda else "cpu")

    def broadcast_parameters(self, module) -> None:
        """Start every process from rank 0's weights."""
        if self.parallel:
            import torch.distributed as dist

            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def average_gradients(self, parameters) -> None:
        """Replace each parameter's gradient by its mean over the processes (a missing gradient counts as 0)."""
        if not self.parallel:
            return
        import torch

        params = [p for p in parameters if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        bucket, size = [], 0
        for p in params:
            bucket.append(p)
            size += p.grad.numel()
            if size >= BUCKET_ELEMENTS:
                self._average(bucket)
                bucket, size = [], 0
        if bucket:
            self._average(bucket)

    def _average(self, params) -> None:
        import torch
        import torch.distributed as dist

        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.grad.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n

    def mean(self, value: float, device: str = "cpu") -> float:
        """The mean of one number over the processes (each process's loss, or the scale it measured)."""
        if not self.parallel:
            return value
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def check_in_sync(self, module, device: str = "cpu") -> None:
        """Raise if the processes' weights differ: averaged gradients and the same optimizer keep them equal, so a
        difference means a process trained apart (e.g. a parameter the optimizer of one process does not hold)."""
        if not self.parallel:
            return
        import torch
        import torch.distributed as dist

        sums = torch.stack([p.detach().double().sum() for p in module.parameters()]).to(device)
        gathered = [torch.empty_like(sums) for _ in range(self.world_size)]
        dist.all_gather(gathered, sums)
        for rank, other in enumerate(gathered):
            if not torch.allclose(other, gathered[0], rtol=1e-6, atol=1e-6):
                worst = int((other - gathered[0]).abs().argmax())
                name = [n for n, _ in module.named_parameters()][worst]
                raise RuntimeError(f"data-parallel training diverged: process {rank}'s weights differ from "
                                   f"process 0's (first at parameter {name!r})")


def join_workers(cuda: bool) -> Workers:
    """The launcher's process group, started on first use (NCCL for GPUs, Gloo for CPUs); a single process when no
    launcher set WORLD_SIZE above 1."""
    world_size = int(os.environ.get("WORLD_SIZE") or 1)
    if world_size < 2:
        if int(os.environ.get("OMPI_COMM_WORLD_SIZE") or 1) > 1:  # mpirun (SMDDP) without torchrun's variables
            raise RuntimeError("batch_kl trains data-parallel under torchrun (RANK, WORLD_SIZE), not mpirun: on "
                               "SageMaker set the distribution to torch_distributed")
        return Workers()
    import torch
    import torch.distributed as dist

    workers = Workers(rank=int(os.environ["RANK"]), world_size=world_size,
                      local_rank=int(os.environ.get("LOCAL_RANK") or 0))
    if cuda:
        if workers.local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {workers.local_rank} but this machine has {torch.cuda.device_count()} "
                               "GPU(s): start at most one process per GPU (torchrun --nproc_per_node)")
        torch.cuda.set_device(workers.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return workers


def leave_workers() -> None:
    """End the process group, if this process started one."""
    import sys

    if "torch.distributed" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
