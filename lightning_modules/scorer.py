"""Training job of the MuLan-style scorer (paper section 3.1, text adherence).

Symmetric InfoNCE with a learned temperature on (caption, audio) pairs from
`datamodules.audio.AudioDataModule(task="scorer")` (batches carry the frozen MiniLM caption
embeddings as `cond`). Validation: text-to-audio retrieval on held-out pairs, `val/recall@1`
and `val/recall@5`: each caption ranks every held-out clip by the score; a hit when a clip
whose caption is the same string ranks in the top k (chance = k / n for distinct captions).
Batches of adherence pairs of generations (`datamodules.adherence_pairs`: `win`, `lose`
and their prompts' `win_cond`, `lose_cond`) train with a Bradley-Terry loss on the cosines
(`MuLanScorer.pair_loss`) instead, and validate with `val/pairwise_acc` and Spearman against
the oracle's adherence (`evaluate_pairs`). Batches with `negative_cond` (the DataModule's
`swap_draws`) add each clip's attribute-swapped captions to its audio-to-text softmax with
weight `negative_weight` (`suite.models.scorer.info_nce`); batches with `near_misses` (pieces that miss one value a
caption names) weigh those pieces `near_miss_weight` in its text-to-audio softmax.
With `attribute_weight` > 0 and batches with `labels` (the DataModule's
`attribute_labels`), linear heads on the audio trunk's features also predict each piece's
attribute values (cross-entropy, averaged over attributes, weight `attribute_weight`): an
auxiliary target that makes the trunk hear what adherence is judged on. The heads are
training-only and not part of the exported scorer.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lightning_modules.audio_common import AudioJob
from suite.models.retrieval import pairwise_accuracy, recall_at_k
from suite.models.scorer import SCORER_PRESETS, MuLanScorer, ScorerConfig


class ScorerJob(AudioJob):
    """Args: `preset` ("tiny") or an explicit `model_config` dict; AdamW `lr`,
    `weight_decay`; `warmup_steps`, `max_steps`; `negative_weight` (> 0) of the hard-negative
    captions when batches carry them; `near_miss_weight` (> 0) of the hard negative audio
    when batches carry `near_misses`; `init_weights`: a scorer checkpoint to start from;
    `train_trunk` False trains only the two heads and the temperature (the frozen-trunk
    stage; batches may then carry the trunk's cached `features` instead of audio);
    `train_text` False keeps the text head as loaded (a stage on few prompts cannot then learn
    a per-prompt offset);
    `attribute_weight` (>= 0) of the auxiliary attribute targets (module docstring)."""

    def __init__(
        self,
        preset: str = "tiny",
        model_config: dict | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 50,
        max_steps: int = 2000,
        negative_weight: float = 1.0,
        near_miss_weight: float = 1.0,
        init_weights: str | None = None,
        train_trunk: bool = True,
        train_text: bool = True,
        attribute_weight: float = 0.0,
    ):
        super().__init__()
        self._check_optim(lr, weight_decay, warmup_steps, max_steps)
        self.save_hyperparameters(ignore=["model_config"], logger=False)
        self.model = self._model_from(
            MuLanScorer, ScorerConfig, SCORER_PRESETS, preset, model_config
        )
        if init_weights is not None:
            self._init_from(init_weights)
        if not (isinstance(negative_weight, (int, float)) and negative_weight > 0):
            raise ValueError(f"ScorerJob: negative_weight must be > 0, got {negative_weight!r}")
        self.negative_weight = float(negative_weight)
        if not (isinstance(near_miss_weight, (int, float)) and near_miss_weight > 0):
            raise ValueError(f"ScorerJob: near_miss_weight must be > 0, got {near_miss_weight!r}")
        self.near_miss_weight = float(near_miss_weight)
        if not isinstance(train_trunk, bool):
            raise ValueError(f"ScorerJob: train_trunk must be true or false, got {train_trunk!r}")
        if not isinstance(train_text, bool):
            raise ValueError(f"ScorerJob: train_text must be true or false, got {train_text!r}")
        if not train_text:  # the joint space's text side stays as loaded (and so do captions' places)
            self.model.text_proj.requires_grad_(False)
        if not train_trunk:  # LiT-style stage: the audio trunk stays as loaded
            self.model.audio_encoder.requires_grad_(False)
        ok = isinstance(attribute_weight, (int, float)) and not isinstance(attribute_weight, bool)
        if not (ok and attribute_weight >= 0) or (attribute_weight and not train_trunk):
            raise ValueError(
                f"ScorerJob: attribute_weight must be a number >= 0 and needs train_trunk, got "
                f"{attribute_weight!r} with train_trunk {train_trunk!r}"
            )
        self.attribute_weight = float(attribute_weight)
        self.attribute_heads: nn.ModuleList | None = None  # built in setup from the DataModule
        self._val: list[tuple[torch.Tensor, torch.Tensor, list[str]]] = []
        self._pairs: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def setup(self, stage: str | None = None) -> None:
        if self.attribute_weight and self.attribute_heads is None:
            sizes = list(getattr(getattr(self.trainer, "datamodule", None), "label_sizes", []) or [])
            if not sizes:
                raise ValueError(
                    "ScorerJob: attribute_weight needs a DataModule with attribute labels "
                    "(AudioDataModule(task='scorer', attribute_labels=true))"
                )
            self.attribute_heads = self.make_attribute_heads(sizes)

    def make_attribute_heads(self, sizes: list[int]) -> nn.ModuleList:
        width = self.model.audio_encoder.width
        return nn.ModuleList(nn.Linear(width, n) for n in sizes)

    def trained_parameters(self) -> list[nn.Parameter]:
        heads = [] if self.attribute_heads is None else list(self.attribute_heads.parameters())
        return list(self.model.parameters()) + heads

    def attribute_loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean over attributes of the heads' cross-entropy: features `[B, W]`, labels `[B, A]`."""
        if self.attribute_heads is None or labels.shape[1] != len(self.attribute_heads):
            raise ValueError(
                f"ScorerJob: labels of {labels.shape[1]} attributes for "
                f"{0 if self.attribute_heads is None else len(self.attribute_heads)} heads"
            )
        losses = [F.cross_entropy(head(features), labels[:, k]) for k, head in enumerate(self.attribute_heads)]
        return torch.stack(losses).mean()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if "win" in batch:  # adherence pairs of generations (datamodules.adherence_pairs)
            loss = self._finite(
                self.model.pair_loss(batch["win"], batch["win_cond"], batch["lose"], batch["lose_cond"]),
                batch_idx,
            )
            self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["win"]))
            self.log("train/temperature", self.model.temperature, batch_size=len(batch["win"]))
            return loss
        if self.near_miss_weight != 1 and "near_misses" not in batch:
            raise ValueError(
                "ScorerJob: near_miss_weight is set but the batches carry no near_misses "
                "(set the DataModule's near_misses: true, with swap_draws >= 1)"
            )
        features = batch.get("features")
        if self.attribute_weight and features is None:  # the trunk once, for both losses
            features = self.model.audio_encoder(batch["audio"])  # [B, W]
        loss = self.model.loss(
            batch.get("audio") if features is None else None,
            batch["cond"],
            batch.get("negative_cond"),
            batch.get("negative_mask"),
            self.negative_weight,
            features=features,
            positives=batch.get("positives"),
            near_misses=batch.get("near_misses"),
            near_miss_weight=self.near_miss_weight,
        )
        bs = len(batch["cond"])
        if self.attribute_weight:
            if "labels" not in batch:
                raise ValueError(
                    "ScorerJob: attribute_weight is set but the batches carry no labels "
                    "(set the DataModule's attribute_labels: true)"
                )
            aux = self.attribute_loss(features, batch["labels"])
            self.log("train/attribute_loss", aux, batch_size=bs)
            loss = loss + self.attribute_weight * aux
        loss = self._finite(loss, batch_idx)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/temperature", self.model.temperature, batch_size=bs)
        return loss

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        if not self.hparams.train_trunk:  # frozen means frozen: no dropout in the trunk
            self.model.audio_encoder.eval()

    def on_validation_epoch_start(self) -> None:
        self._val, self._pairs = [], []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if "win" in batch:  # adherence pairs: each side's score against its own prompt
            for side in ("win", "lose"):
                s = self.model.score_embeddings(batch[side], batch[f"{side}_cond"]).float().cpu()
                self._pairs.append((side, s, batch[f"{side}_adherence"].float().cpu(), batch[f"{side}_prompt"].cpu()))
            return
        if "features" in batch:  # a frozen trunk's cached output (TrunkFeatureDataModule)
            a = self.model.embed_features(batch["features"]).float().cpu()
        else:
            a = self.model.embed_audio(batch["audio"]).float().cpu()
        t = self.model.embed_text(batch["cond"]).float().cpu()
        self._val.append((a, t, list(batch["caption"])))

    def on_validation_epoch_end(self) -> None:
        if self._pairs:
            for key, value in evaluate_pairs(self._pairs).items():
                self.log(f"val/{key}", value, prog_bar=key == "pairwise_acc")
        if not self._val:
            return
        audio = torch.cat([a for a, _, _ in self._val])
        text = torch.cat([t for _, t, _ in self._val])
        captions = [c for _, _, cs in self._val for c in cs]
        for key, value in evaluate_retrieval(text, audio, captions).items():
            self.log(f"val/{key}", value, prog_bar=key.startswith("recall"))


def evaluate_retrieval(text: torch.Tensor, audio: torch.Tensor, captions: list[str]) -> dict:
    """Text-to-audio recall@1/5 (module docstring) and chance levels."""
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    key = torch.tensor([ids[c] for c in captions])
    correct = key[:, None] == key[None, :]  # [N, N]: clip j matches caption i
    n = len(captions)
    out = {"n_pairs": float(n)}
    for k in (1, 5):
        if k <= n:
            out[f"recall@{k}"] = recall_at_k(text, audio, correct, k)
            out[f"chance@{k}"] = correct.float().sum(1).mul(k).div(n).clamp(max=1).mean().item()
    return out


def evaluate_pairs(sides: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict:
    """Held-out adherence pairs, from (side, score, oracle adherence, prompt id) batches:
    `pairwise_acc` (ties count one half), and Spearman between score and adherence over
    the pairs' generations: `spearman_oracle_adherence` pooled (what the diagnostics report)
    and `spearman_within_prompt` (both centred on their prompt's mean)."""
    from scipy.stats import spearmanr

    win = torch.cat([s for side, s, _, _ in sides if side == "win"])
    lose = torch.cat([s for side, s, _, _ in sides if side == "lose"])
    score, adherence, prompt = (torch.cat([x[k] for x in sides]).double() for k in (1, 2, 3))
    _, group = prompt.unique(return_inverse=True)
    count = torch.bincount(group).double()

    def centred(x: torch.Tensor) -> torch.Tensor:
        return x - (torch.bincount(group, x) / count)[group]

    return {
        "pairwise_acc": pairwise_accuracy(win, lose),
        "n_pairs": float(len(win)),
        "spearman_oracle_adherence": float(spearmanr(score.numpy(), adherence.numpy()).statistic),
        "spearman_within_prompt": float(spearmanr(centred(score).numpy(), centred(adherence).numpy()).statistic),
    }
