"""Shared optimisation plumbing of the three audio training jobs (embedder, scorer, preference).

Each job wraps a plain `nn.Module` from `suite.models` as `self.model` and saves its config
dict as the hyper-parameter `model_config` (with `model_class`), so the plain module's
`from_checkpoint` rebuilds it from the Lightning `.ckpt` without Lightning. AdamW with
linear warmup and cosine decay (as in `lightning_modules.pretrain`).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from lightning_modules.pretrain import cosine_with_warmup


class AudioJob(L.LightningModule):
    """Base class: checks optimiser arguments, builds AdamW + schedule, exports weights."""

    model: torch.nn.Module

    def _check_optim(self, lr: float, weight_decay: float, warmup_steps: int, max_steps: int):
        name = type(self).__name__
        if not lr > 0:
            raise ValueError(f"{name}: lr must be > 0, got {lr!r}")
        if not weight_decay >= 0:
            raise ValueError(f"{name}: weight_decay must be >= 0, got {weight_decay!r}")
        if warmup_steps < 0 or max_steps < 1:
            raise ValueError(
                f"{name}: need warmup_steps >= 0 and max_steps >= 1, got {warmup_steps}, {max_steps}"
            )

    def _model_from(self, model_cls, config_cls, presets: dict, preset: str, model_config):
        """The plain model from a named preset or an explicit config dict (which wins); records
        its config as the hyper-parameter `model_config` so `from_checkpoint` can rebuild it.
        Call after `save_hyperparameters(ignore=["model_config"], logger=False)`."""
        if model_config is None and preset not in presets:
            raise ValueError(
                f"{type(self).__name__}: unknown preset {preset!r}; known: {sorted(presets)}"
            )
        config = config_cls.from_dict(model_config) if model_config is not None else presets[preset]
        self.hparams["model_config"] = config.to_dict()
        self.hparams["model_class"] = model_cls.__name__
        return model_cls(config)

    def _init_from(self, path: str) -> None:
        """Start from the weights in `path` (a model file of the same class, e.g. a built
        artifact's model.pt); refuse another architecture, naming both."""
        name = type(self).__name__
        if not Path(path).is_file():
            raise FileNotFoundError(f"{name}: init_weights file not found: {path}")
        source = type(self.model).from_checkpoint(path)
        if source.config != self.model.config:
            raise ValueError(
                f"{name}: init_weights {path} holds another architecture "
                f"({source.config.to_dict()}) than this job's ({self.model.config.to_dict()})"
            )
        self.model.load_state_dict(source.state_dict())

    def _finite(self, loss: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{type(self).__name__}: non-finite training loss ({loss.item()}) at global step "
                f"{self.global_step}, batch {batch_idx}"
            )
        return loss

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        """What the optimiser updates: the model's parameters (a job may add training-only
        modules that are not exported)."""
        return list(self.model.parameters())

    def configure_optimizers(self):
        hp = self.hparams
        params = self.trained_parameters()
        decay = [p for p in params if p.requires_grad and p.ndim >= 2]
        other = [p for p in params if p.requires_grad and p.ndim < 2]
        opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": hp.weight_decay},
                {"params": other, "weight_decay": 0.0},
            ],
            lr=hp.lr,
        )
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: cosine_with_warmup(s, hp.warmup_steps, hp.max_steps, 0.05)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def export(self, path) -> None:
        """Write the plain model (suite format, loadable with `<Model>.from_checkpoint`)."""
        self.model.save(path)
