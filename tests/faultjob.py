"""A small job for the fault suite (`tests/test_faults_*.py`): fast, and random like the student.

It trains on the suite's real `PromptDataModule` (prompt order, exact-resume state) with a
hashing text tower instead of MiniLM, and draws from every random stream a real job may
use: a generator seeded by the global step (as the student samples), the global torch RNG
(noise, dropout), numpy and python's `random`. So a resumed run ends with the uninterrupted
run's weights only if the prompt order and every stream are restored.

Knobs (`model.*`) inject the faults of issue 21: `poison_at_step` (a NaN gradient: finite
loss, NaN weights after the update), `nan_loss_at_step`, `blowup_at_step` (finite but huge
weights whose "sampling" probabilities overflow), `sleep_s` (slow steps, to kill a run
mid-way), and `export_path` (written in `on_train_end` with the step, like the student).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from lightning_modules import tracking
from lightning_modules.guards import guarded_sampling


class HashTower:
    """Deterministic 384-d prompt vectors from a hash (no model to load)."""

    def encode(self, prompts: list[str]) -> torch.Tensor:
        rows = []
        for text in prompts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            rows.append(torch.randn(384, generator=torch.Generator().manual_seed(seed)))
        return torch.stack(rows)  # [n, 384]


class FaultModule(pl.LightningModule):
    def __init__(
        self,
        lr: float = 0.05,
        poison_at_step: int | None = None,
        nan_loss_at_step: int | None = None,
        blowup_at_step: int | None = None,
        sleep_s: float = 0.0,
        export_path: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(384, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 4))

    def _sample(self, cond: torch.Tensor, seed: int) -> torch.Tensor:
        logits = self.net(cond)  # [B, 4]
        gen = torch.Generator().manual_seed(seed)
        probs = torch.softmax(logits.detach(), dim=-1)
        return guarded_sampling("FaultModule", self, "sampling",
                                lambda: torch.multinomial(probs, 1, generator=gen))  # fmt: skip

    def training_step(self, batch, batch_idx):
        hp, step = self.hparams, int(self.global_step)
        if hp.sleep_s:
            time.sleep(hp.sleep_s)
        if hp.blowup_at_step is not None and step == hp.blowup_at_step:
            with torch.no_grad():
                for p in self.net.parameters():
                    p.mul_(1e30)  # finite, but the logits overflow to inf
        cond = batch["cond"]  # [B, 384]
        choice = self._sample(cond, 1000 + step)  # [B, 1], the student's per-step stream
        noise = torch.randn(cond.shape[0], 4) * 0.01 + float(np.random.rand()) * 0.01 + random.random() * 0.01
        logits = self.net(cond) + noise
        loss = torch.nn.functional.cross_entropy(logits, choice[:, 0]) + 0.1 * logits.pow(2).mean()
        if hp.nan_loss_at_step is not None and step == hp.nan_loss_at_step:
            loss = loss * float("nan")
        self.log("train/loss", loss)
        return loss

    def on_after_backward(self) -> None:
        if self.hparams.poison_at_step is not None and self.global_step == self.hparams.poison_at_step:
            self.net[0].weight.grad[0, 0] = float("nan")  # the loss stays finite

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.net(batch["cond"]).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def on_train_end(self) -> None:
        path = self.hparams.export_path
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            torch.save(self.net.state_dict(), path)
            record = {"kind": "student", "step": int(self.global_step), "mlflow_run_id": tracking.run_id(self),
                      "mlflow_experiment": tracking.experiment_name(self)}  # fmt: skip
            Path(path).with_suffix(".json").write_text(json.dumps(record))
