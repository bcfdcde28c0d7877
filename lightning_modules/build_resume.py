"""Resumable artifact builds: a killed `python -m suite prepare` picks up where it stopped.

`suite.artifacts.ensure` builds each artifact in a temporary folder that is renamed into
place only at the end, so an interrupted build leaves nothing a later job could trust, and
used to leave nothing at all: an E build is ~1.5 h on two cores. Now the training state
(weights, optimiser, schedule, loop counters) is also written every `checkpoint_every`
steps of the spec's `train` (default: `val_every`, else 250) to

    artifacts/.<kind>-<hash>.partial/last.ckpt

written beside and renamed, so a kill mid-write keeps the previous one. The folder carries
the artifact's own hash, so only a build of the very same spec (and kind version) resumes
from it. A resumed build continues the same MLflow run (its points at steps >= the resumed
step dropped first, as the run task does) and records each resume in `resumed.json` of the
artifact. The loaders restart their epoch on resume, so a resumed artifact has seen another
data order than one built in one go: equivalent, not bit-identical. The partial folder is
deleted once the artifact is built.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import lightning.pytorch as pl
import torch

log = logging.getLogger("suite.artifacts")

LAST = "last.ckpt"
RUN_ID = "mlflow_run_id"
RESUMED = "resumed.json"


def partial_dir(folder: Path) -> Path:
    """`.<kind>-<hash>.partial` beside the artifact, for its build folder or its final one."""
    name = folder.name.split(".tmp-")[0].lstrip(".")
    return folder.parent / f".{name}.partial"


def checkpoint_every(train: dict) -> int:
    """Steps between partial checkpoints: `checkpoint_every`, else `val_every`, else 250."""
    every = train.get("checkpoint_every", train.get("val_every") or 250)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"artifact spec: train.checkpoint_every must be an integer >= 1, got {every!r}")
    return every


def resume_point(partial: Path) -> tuple[str | None, int]:
    """(checkpoint path, its global step) of an interrupted build, or (None, 0)."""
    last = partial / LAST
    if not last.is_file():
        return None, 0
    try:
        step = int(torch.load(last, map_location="cpu", weights_only=False)["global_step"])
    except Exception as err:  # a foreign or damaged file: say which, change nothing
        raise RuntimeError(
            f"cannot resume the artifact build from {last} ({type(err).__name__}: {err}); "
            f"delete {partial} to build it from the start"
        ) from err
    return str(last), step


def run_id(partial: Path) -> str | None:
    """The MLflow run the interrupted build logged to, if any."""
    file = partial / RUN_ID
    return (file.read_text().strip() or None) if file.is_file() else None


class PartialCheckpoint(pl.Callback):
    """Writes the whole training state to `<partial>/last.ckpt` every `every` steps (and
    the MLflow run id once), each time beside and then renamed into place."""

    def __init__(self, partial: Path, every: int, mlflow_run_id: str | None = None):
        self.partial, self.every, self.mlflow_run_id = Path(partial), int(every), mlflow_run_id

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.partial.mkdir(parents=True, exist_ok=True)
        if self.mlflow_run_id:
            (self.partial / RUN_ID).write_text(self.mlflow_run_id)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every or step >= trainer.max_steps:  # the end writes the artifact itself
            return
        tmp = self.partial / f"{LAST}.tmp"
        trainer.save_checkpoint(tmp)
        os.replace(tmp, self.partial / LAST)


def note_resume(partial: Path, step: int) -> None:
    """Add the step a build resumes from to the partial folder's list of resumes."""
    file = partial / RESUMED
    steps = json.loads(file.read_text()) if file.is_file() else []
    partial.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps([*steps, step]))


def finish(partial: Path, folder: Path) -> None:
    """The build is written: hand its list of resumes (if any) to the artifact's folder and
    delete the partial state."""
    if (partial / RESUMED).is_file():
        shutil.copyfile(partial / RESUMED, folder / RESUMED)
    shutil.rmtree(partial, ignore_errors=True)
