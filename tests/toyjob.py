"""A deliberately small Lightning job used to test the CLI, Hydra and MLflow plumbing.

It is a real (if tiny) regression problem: y = 3x - 1 with noise, a linear model, SGD.
`fail_at_step` makes the job raise mid-training, to test FAILED runs.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class ToyData(pl.LightningDataModule):
    def __init__(self, n: int = 64, batch_size: int = 16, seed: int = 0) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"ToyData: n must be >= 1, got {n}")
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 1, generator=g)
        y = 3 * x - 1 + 0.01 * torch.randn(n, 1, generator=g)
        self.dataset = TensorDataset(x, y)
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.dataset, batch_size=self.batch_size)

    test_dataloader = val_dataloader


class ToyModule(pl.LightningModule):
    def __init__(
        self, lr: float = 0.1, fail_at_step: int | None = None, report_run_status: bool = False
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(1, 1)

    def on_train_start(self) -> None:
        # For the CLI tests: is the MLflow run RUNNING when training starts?
        if not self.hparams.report_run_status:
            return
        from lightning.pytorch.loggers import MLFlowLogger

        for logger in self.loggers:
            if isinstance(logger, MLFlowLogger):
                status = logger.experiment.get_run(logger.run_id).info.status
                logger.log_metrics({"toy/running_at_train_start": float(status == "RUNNING")}, 0)

    def _loss(self, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def training_step(self, batch, batch_idx):
        if self.hparams.fail_at_step is not None and self.global_step >= self.hparams.fail_at_step:
            raise RuntimeError(f"toy job failing on purpose at step {self.global_step}")
        loss = self._loss(batch)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test/loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
