"""Training job of the user-preference-style quality model (paper section 3.1).

Bradley-Terry loss on preference pairs: pairs of the base model's generations judged by
the oracle (`datamodules.generations`, the tiny default: the paper's model learned from
raters' judgments of generations), or (clean, flawed) renditions of the same corpus piece
(`datamodules.audio.AudioDataModule(task="preference")`). Validation: `val/pairwise_acc`, the
share of held-out pairs where the preferred side scores higher (ties count one half).
With pairs of generations (whose batches carry each side's oracle quality) it also logs
`val/spearman_oracle_quality`: Spearman between the score and the oracle's quality over
the held-out pairs' generations.
"""

from __future__ import annotations

import torch

from lightning_modules.audio_common import AudioJob
from suite.models.preference import PREFERENCE_PRESETS, PreferenceConfig, PreferenceModel
from suite.models.retrieval import pairwise_accuracy


class PreferenceJob(AudioJob):
    """Args: `preset` ("tiny") or an explicit `model_config` dict; AdamW `lr`,
    `weight_decay`; `warmup_steps`, `max_steps`."""

    def __init__(
        self,
        preset: str = "tiny",
        model_config: dict | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 50,
        max_steps: int = 2000,
    ):
        super().__init__()
        self._check_optim(lr, weight_decay, warmup_steps, max_steps)
        self.save_hyperparameters(ignore=["model_config"], logger=False)
        self.model = self._model_from(
            PreferenceModel, PreferenceConfig, PREFERENCE_PRESETS, preset, model_config
        )
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._val_quality: list[torch.Tensor] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._finite(self.model.loss(batch["win"], batch["lose"]), batch_idx)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["win"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val, self._val_quality = [], []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._val.append((self.model(batch["win"]).cpu(), self.model(batch["lose"]).cpu()))
        if "win_quality" in batch:
            self._val_quality.append(torch.cat([batch["win_quality"], batch["lose_quality"]]).cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        win = torch.cat([w for w, _ in self._val])
        lose = torch.cat([l_ for _, l_ in self._val])
        self.log("val/pairwise_acc", pairwise_accuracy(win, lose), prog_bar=True)
        self.log("val/n_pairs", float(len(win)))
        if self._val_quality:
            from scipy.stats import spearmanr

            scores = torch.cat([torch.cat([w, l_]) for w, l_ in self._val])  # batch by batch, as quality
            rho = spearmanr(scores.numpy(), torch.cat(self._val_quality).numpy()).statistic
            self.log("val/spearman_oracle_quality", float(rho))
