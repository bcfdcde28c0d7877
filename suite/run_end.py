"""How a job ends: its MLflow status, its exit status and its one line.

- a user mistake (`ValueError`, `FileNotFoundError`, `KeyError`, a `suite.preflight.Refused`
  raised before anything started, possibly wrapped by `hydra.utils.instantiate`): one
  line, exit 2;
- a failure the suite detects (non-finite loss, update or sampling; a checkpoint that did
  not reach the disk): one line naming the step, the cause and the last good checkpoint,
  stored in the MLflow run's `failure` tag, status FAILED, exit 1;
- SIGINT / SIGTERM (`lightning_modules.interrupts`): status KILLED, exit 130 / 143;
- anything else: status FAILED with the error's first line as `failure`, and the traceback.

`finish_restored_fit` completes a run restored at or past `trainer.max_steps`: Lightning
then skips the whole training loop, `on_train_end` included, so the run would end FINISHED
without its final evaluation or its export. It runs the evaluation if the checkpoint was
written before it (older checkpoints) and the module's `on_train_end` (the student's export).
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.model_helpers import is_overridden

from lightning_modules import interrupts
from lightning_modules.checkpointing import CheckpointWriteError, SafeCheckpoint
from lightning_modules.guards import last_good_checkpoint
from suite.preflight import Refused

log = logging.getLogger("suite")

USER_ERRORS = (ValueError, FileNotFoundError, KeyError)
FAILURES = (FloatingPointError, CheckpointWriteError)


def unwrap(error: BaseException) -> BaseException:
    """The error inside hydra.utils.instantiate's InstantiationException wrappers."""
    from hydra.errors import InstantiationException

    seen = error
    while isinstance(seen, InstantiationException) and seen.__cause__ is not None:
        seen = seen.__cause__
    return seen


def user_error_message(error: BaseException) -> str | None:
    """One line for a user mistake (possibly wrapped by hydra.utils.instantiate), else None."""
    seen = unwrap(error)
    if isinstance(seen, Refused):
        return str(seen)
    if isinstance(seen, USER_ERRORS) and not isinstance(seen, FAILURES):
        text = seen.args[0] if isinstance(seen, KeyError) and seen.args else str(seen)
        return f"{type(seen).__name__}: {text}"
    return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def failure_reason(error: BaseException, trainer: Any = None) -> str:
    """The one line a failed or stopped run is remembered by (MLflow tag `failure`)."""
    signum = interrupts.signal_of(error)
    if signum is not None:
        import signal

        checkpoint = getattr(error, "checkpoint", None) or last_good_checkpoint(trainer)
        return f"stopped by {signal.Signals(signum).name}; the last checkpoint is {checkpoint}"
    seen = unwrap(error)
    text = _first_line(seen)
    if isinstance(seen, FloatingPointError) and "last good checkpoint" not in text and trainer:
        text += f"; the last good checkpoint is {last_good_checkpoint(trainer)}"
    return f"{type(seen).__name__}: {text}" if text else type(seen).__name__


def end_runs(loggers: list[Any], error: BaseException, trainer: Any = None) -> str:
    """Mark every started MLflow run KILLED (a signal) or FAILED, with its reason."""
    from lightning_modules.tracking import end_run

    reason = failure_reason(error, trainer)
    status = "KILLED" if interrupts.signal_of(error) is not None else "FAILED"
    for logger in started_mlflow(loggers):
        try:
            end_run(logger.experiment, logger.run_id, status, reason)
        except Exception as err:  # noqa: BLE001 - never hide the original failure
            log.warning("could not mark MLflow run %s %s: %s", logger.run_id, status, err)
    return reason


def started_mlflow(loggers: list[Any]) -> list[Any]:
    """The MLflow loggers whose run exists (a logger creates its run on first use)."""
    from lightning.pytorch.loggers import MLFlowLogger

    return [lg for lg in loggers if isinstance(lg, MLFlowLogger) and lg._initialized]


def exit_status(error: BaseException) -> tuple[int, str] | None:
    """(exit status, one line) for the errors reported without a traceback, else None."""
    signum = interrupts.signal_of(error)
    if signum is not None:
        return 128 + signum, getattr(error, "suite_reason", None) or failure_reason(error)
    message = user_error_message(error)
    if message is not None:
        return 2, message
    if isinstance(unwrap(error), FAILURES):
        return 1, getattr(error, "suite_reason", None) or failure_reason(error)
    return None


class FitWatcher(pl.Callback):
    """Records whether the training loop ran (Lightning skips it when restored at the end)."""

    def __init__(self) -> None:
        self.trained = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.trained = True


def _evaluation_due(trainer: pl.Trainer, step: int) -> bool:
    """Whether Lightning evaluates after the batch that ends at global step `step`."""
    module = trainer.lightning_module
    if not is_overridden("validation_step", module) or trainer.limit_val_batches == 0:
        return False
    if trainer.check_val_every_n_epoch is None and isinstance(trainer.val_check_batch, int):
        return step % trainer.val_check_batch == 0
    batches = trainer.num_training_batches
    return isinstance(batches, int) and batches > 0 and step % batches == 0


def finish_restored_fit(trainer: pl.Trainer, model: pl.LightningModule, datamodule: Any,
                        watcher: FitWatcher, restored_step: int | None) -> None:  # fmt: skip
    """The end of a run restored at or past max_steps (see the module docstring)."""
    if watcher.trained or restored_step is None or trainer.state.status != "finished":
        return
    step = int(trainer.global_step)
    safe = next((c for c in trainer.checkpoint_callbacks if isinstance(c, SafeCheckpoint)), None)
    evaluated = safe is not None and safe.restored is not None and safe.evaluated_step == step
    evaluate = not evaluated and _evaluation_due(trainer, step)
    log.info("restored at global step %d, at or past trainer.max_steps=%s: nothing left to train; "
             "finishing the run (%sexport)", step, trainer.max_steps,
             "final evaluation, " if evaluate else "")  # fmt: skip
    if evaluate:
        trainer.validate(model, datamodule=datamodule)
    hook = getattr(model, "on_train_end", None)
    if callable(hook):
        hook()
