"""`SafeCheckpoint`: Lightning's ModelCheckpoint, made to never lose or fake a checkpoint.

What it adds to `lightning.pytorch.callbacks.ModelCheckpoint` (the suite's
`conf/callbacks/default.yaml`):

- **Nothing poisoned is saved.** Parameters and optimizer state are checked finite before
  every save (`lightning_modules.guards`); otherwise the run stops FAILED naming the step,
  the tensors and the last good checkpoint.
- **Every save is verified.** Lightning 2.6 swallows a PermissionError while writing a
  checkpoint, so a read-only folder used to end in exit 0 with no checkpoint at all. After
  each save the file must exist, be non-empty and load with `torch.load(weights_only=True)`;
  if not, `CheckpointWriteError` stops the run.
- **A checkpoint follows its step's evaluation.** When an evaluation is due right after a
  save step, the save waits for its end (Lightning then resumes "on last": it neither
  repeats nor skips that evaluation), so a run killed during an evaluation redoes it.
- **Exact resume.** Each checkpoint carries, under `suite_resume`, the global RNG states
  (torch, numpy, random), the MLflow run id, the last evaluated step and the wall time of
  the save; `on_load_checkpoint` restores the RNG states. The prompt order is restored by
  the DataModule (`datamodules.prompts`), the student's sampling streams are seeded by the
  global step.
- **Run id beside the folder only after a verified save**: `<dirpath>.mlflow_run_id` is
  written when this run has a checkpoint there, so a refused or failed start never
  repoints another run's resume.
- **SIGINT / SIGTERM** (`lightning_modules.interrupts`): a checkpoint at the next point
  where Lightning resumes exactly, then `RunInterrupted` (exit 130 / 143, MLflow KILLED).
"""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_modules import interrupts
from lightning_modules.guards import check_finite_state
from suite.preflight import remember_run_id, run_id_path  # noqa: F401 (re-exported)

log = logging.getLogger("suite")

RESUME_KEY = "suite_resume"


class CheckpointWriteError(OSError):
    """A checkpoint save left no loadable file (read-only folder, full disk, ...)."""


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Raise `CheckpointWriteError` unless `path` is a non-empty checkpoint that loads."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointWriteError(f"checkpoint {path} was not written (is {path.parent} writable?)")
    if path.stat().st_size == 0:
        raise CheckpointWriteError(f"checkpoint {path} is empty (disk full?)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
        text = str(err).strip()
        found = re.search(r"GLOBAL\W+([\w.]+)", text)
        if "Weights only load failed" in text:
            first = f"it holds an object weights-only loading refuses ({found.group(1) if found else '?'})"
        else:
            first = text.splitlines()[0] if text else type(err).__name__
        raise CheckpointWriteError(f"checkpoint {path} does not load back: {first}") from err
    if not isinstance(loaded, dict) or "state_dict" not in loaded:
        raise CheckpointWriteError(f"checkpoint {path} does not load back as a checkpoint")


def rng_states() -> dict[str, Any]:
    """The global random streams (every one a run may draw from between two checkpoints)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    # Plain types and tensors only: checkpoints are read back with weights_only=True.
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [str(kind), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in states:
        kind, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def mlflow_run_id(trainer: pl.Trainer) -> str | None:
    from lightning.pytorch.loggers import MLFlowLogger

    for logger in trainer.loggers:
        if isinstance(logger, MLFlowLogger) and logger._initialized:
            return logger.run_id
    return None


class SafeCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that verifies, never saves non-finite weights, saves after its step's
    evaluation, carries what an exact resume needs and stops cleanly on SIGINT / SIGTERM
    (see the module docstring). Arguments are ModelCheckpoint's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_good: str | None = None
        self.last_good_step: int = -1
        self.evaluated_step: int = -1  # global step of the last finished in-fit evaluation
        self.restored: dict[str, Any] | None = None  # `suite_resume` of the checkpoint resumed
        self._interrupt_saved: str | None = None

    # ------------------------------------------------------------------ saving
    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        check_finite_state(trainer, trainer.lightning_module, "before a checkpoint save")
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            verify_checkpoint(filepath)
            run_id = mlflow_run_id(trainer)
            if run_id and self.dirpath:
                remember_run_id(self.dirpath, run_id)
        if self.last_good_step != trainer.global_step or self.last_good is None:
            self.last_good = filepath  # the step file, saved before its last.ckpt copy
        self.last_good_step = int(trainer.global_step)

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if trainer.is_global_zero and self.last_model_path and self.save_last == "link":
            verify_checkpoint(self.last_model_path)

    def _save_now(self, trainer: pl.Trainer) -> None:
        if self._should_skip_saving_checkpoint(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:  # fmt: skip
        checkpoint[RESUME_KEY] = {
            "rng": rng_states(),
            "mlflow_run_id": mlflow_run_id(trainer),
            "evaluated_step": int(self.evaluated_step),
            "saved_at_ms": int(time.time() * 1000),
        }

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:  # fmt: skip
        self.restored = checkpoint.get(RESUME_KEY)
        if self.restored:
            self.evaluated_step = int(self.restored.get("evaluated_step", -1))
            if self.restored.get("rng"):
                set_rng_states(self.restored["rng"])

    # ------------------------------------------------------------------ when to save
    @staticmethod
    def evaluation_follows(trainer: pl.Trainer) -> bool:
        """Whether Lightning runs an evaluation right after the current training batch."""
        loop = trainer.fit_loop.epoch_loop
        try:
            return bool(loop._should_check_val_fx(trainer.fit_loop._data_fetcher))
        except Exception:  # noqa: BLE001 - a Lightning internal changed: save at batch end
            return False

    def _step_save_due(self, trainer: pl.Trainer) -> bool:
        n = self._every_n_train_steps
        return n >= 1 and trainer.global_step % n == 0 and not self._should_skip_saving_checkpoint(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        interrupts.reclaim()
        interrupts.PENDING.training = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._stop_if_interrupted(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        interrupted = interrupts.PENDING.signum is not None
        if (self._step_save_due(trainer) or interrupted) and self.evaluation_follows(trainer):
            self._defer_save_until_validation = True  # saved by on_validation_end
            return
        if interrupted:
            self._save_now(trainer)
            self._interrupt_saved = self.last_good or ""
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.evaluated_step = int(trainer.global_step)
        if self._defer_save_until_validation or interrupts.PENDING.signum is not None:
            self._defer_save_until_validation = False
            self._save_now(trainer)
            if interrupts.PENDING.signum is not None:
                self._interrupt_saved = self.last_good or ""
            return
        super().on_validation_end(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if interrupts.PENDING.signum is not None:
            if self._interrupt_saved is None:
                self._save_now(trainer)
                self._interrupt_saved = self.last_good or ""
            self._stop_if_interrupted(trainer)
        super().on_train_end(trainer, pl_module)

    def _stop_if_interrupted(self, trainer: pl.Trainer) -> None:
        signum = interrupts.PENDING.signum
        if signum is None or self._interrupt_saved is None:
            return
        interrupts.PENDING.training = False
        log.warning("%s: checkpoint %s at global step %d; stopping", signal.Signals(signum).name,
                    self._interrupt_saved or "(none: no step finished)", trainer.global_step)  # fmt: skip
        raise interrupts.RunInterrupted(signum, self._interrupt_saved or None)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        interrupts.PENDING.training = False
        super().teardown(trainer, pl_module, stage)
