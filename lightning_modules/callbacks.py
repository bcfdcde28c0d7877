"""Callbacks shared by every training job.

`FiniteLossGuard` stops a run on the first non-finite training loss. Lightning runs the
checkpoint callbacks after all others in a hook, so the guard raises before a checkpoint
of the poisoned weights can be written: the last checkpoint on disk stays the last good
one, and the task wrapper marks the MLflow run FAILED. (The training modules also check
their loss before backward; this is the backstop for any module.)
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class FiniteLossGuard(pl.Callback):
    """Raise `NonFiniteLossError` as soon as a training step returns a non-finite loss."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        value = loss.detach().float().item() if isinstance(loss, torch.Tensor) else float(loss)
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"non-finite training loss ({value}) at global step {trainer.global_step}: "
                f"stopping; the last good checkpoint is kept"
            )
