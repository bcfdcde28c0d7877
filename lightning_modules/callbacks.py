"""Callbacks shared by every training job: stop at the first non-finite step.

`FiniteGuard` stops a run on the first non-finite training loss, and (by default) on the
first update that leaves a parameter or the optimizer's state non-finite, which a finite
loss does not rule out (one exploding gradient is enough). Lightning runs the checkpoint
callbacks after all others in a hook, so the guard raises before a checkpoint of the
poisoned weights can be written; `SafeCheckpoint` (`lightning_modules.checkpointing`) checks
again before every save, whatever triggered it. The error names the step, the cause and the
last good checkpoint; the run task prints it in one line, stores it in the MLflow run's
`failure` tag and marks the run FAILED. (The training modules also check their loss before
backward; this is the backstop for any module.)

`FiniteLossGuard` is the former name (loss only unless `check_weights` is set), kept for
configs and MLflow runs that name it.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch

from lightning_modules.guards import NonFiniteError, check_finite_state, last_good_checkpoint


class NonFiniteLossError(NonFiniteError):
    """The training loss became NaN or infinite."""


class FiniteGuard(pl.Callback):
    """Raise `NonFiniteError` on a non-finite training loss or, after an update, on
    non-finite parameters / optimizer state.

    Args:
        check_weights: also check parameters and optimizer state after every optimizer step
            (one fused device sync per step).
    """

    def __init__(self, check_weights: bool = True) -> None:
        self.check_weights = bool(check_weights)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            value = loss.detach().float().item() if isinstance(loss, torch.Tensor) else float(loss)
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"non-finite training loss ({value}) at global step {trainer.global_step}: "
                    f"stopping; the last good checkpoint is {last_good_checkpoint(trainer)}"
                )
        if self.check_weights:
            check_finite_state(trainer, pl_module, "after the update")


class FiniteLossGuard(FiniteGuard):
    """`FiniteGuard` under its former name (loss only unless `check_weights=True`)."""

    def __init__(self, check_weights: bool = False) -> None:
        super().__init__(check_weights)
