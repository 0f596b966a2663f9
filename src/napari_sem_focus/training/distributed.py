"""Training on several GPUs (or CPU processes) with PyTorch's own engine: DistributedDataParallel under torchrun.

``sem-focus train`` runs unchanged under ``torchrun --nproc_per_node=N``: torchrun sets ``RANK``, ``LOCAL_RANK``
and ``WORLD_SIZE`` in each process, :func:`setup` joins the process group (NCCL between CUDA GPUs, gloo on
CPUs), and :func:`napari_sem_focus.training.train.iter_train` then

- wraps the model in :class:`torch.nn.parallel.DistributedDataParallel` (gradients averaged across processes);
- splits each global batch of ``batch_size`` frames between the processes (``batch_size / N`` each), every process
  drawing its share of one permutation (:class:`torch.utils.data.DistributedSampler`), so N processes see the same
  frames per step as one process would;
- takes the clock of process 0 for the time budget and the learning-rate schedule (all processes stop at the same
  step);
- validates, logs and writes checkpoints and weights on process 0 only (atomically); every process resumes from
  the same checkpoint.

Without ``WORLD_SIZE`` (a plain run) nothing here does anything. Multi-node launch: docs/training.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Group:
    """Where this process stands in a distributed run (a plain run: rank 0 of 1)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process logs, validates and writes files (rank 0)."""
        return self.rank == 0


def current() -> Group:
    """This process's place, from the variables torchrun sets (a plain run when they are absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    return Group(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world)


def setup(device: torch.device) -> tuple[Group, torch.device]:
    """Join the process group if torchrun started this process; return the group and this process's device
    (``cuda:LOCAL_RANK`` when training on CUDA)."""
    group = current()
    if not group.active:
        return group, device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", group.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return group, device


def from_main(value: float, group: Group, device: torch.device) -> float:
    """Process 0's ``value`` in every process (a plain run: the value itself)."""
    if not group.active:
        return value
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def any_process(flag: bool, group: Group, device: torch.device) -> bool:
    """True in every process when ``flag`` is true in any (a plain run: the flag itself)."""
    if not group.active:
        return flag
    import torch.distributed as dist

    tensor = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def barrier(group: Group) -> None:
    """Wait until every process gets here (a plain run: return at once)."""
    if group.active:
        import torch.distributed as dist

        dist.barrier()


def teardown(group: Group) -> None:
    """Leave the process group (after the last collective operation)."""
    if group.active:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
