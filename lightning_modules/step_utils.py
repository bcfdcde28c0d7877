"""Small helpers of a distributed training step: DDP reductions, finiteness, phase timers.

The student's REINFORCE baseline (paper eq. 4) comes from OTHER prompts, gathered across
DDP ranks; a non-finite value on one rank must stop every rank together (one that raised
alone would leave the others waiting in the next all-reduce until the process-group
timeout); and each phase of a step is timed for `time/*` metrics and the benchmarks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def _dist_all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Elementwise SUM over DDP ranks (the hook `reinforce_loss` calls once per step)."""
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


def world_reduce() -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The all-reduce hook under DDP with more than one rank, else None."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return _dist_all_reduce_sum
    return None


def all_ranks_finite(*tensors: torch.Tensor) -> bool:
    """True when every tensor is finite on every DDP rank (a collective under DDP)."""
    ok = all(bool(torch.isfinite(t).all()) for t in tensors)
    flag = torch.tensor([1.0 if ok else 0.0], device=tensors[0].device)
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() == 1.0)


class PhaseTimer:
    """Wall-clock seconds per phase; synchronises CUDA so GPU work is charged to its phase."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Phase:
            def __enter__(self):
                if timer.cuda:
                    torch.cuda.synchronize()
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                if timer.cuda:
                    torch.cuda.synchronize()
                timer.seconds[name] = (
                    timer.seconds.get(name, 0.0) + time.perf_counter() - self.start
                )
                return False

        return _Phase()
