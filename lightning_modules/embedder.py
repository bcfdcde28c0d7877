"""Training job of the diversity embedder E (paper section 2.2, appendix D.1).

Semi-hard triplet loss (Schroff et al. 2015) over batches of two chunks per piece
(`datamodules.audio.AudioDataModule(task="embedder")`): chunks of the same piece are
positives, chunks of other pieces negatives. Validation on held-out pieces (up to 500):

- `val/recall@1`: each piece's first chunk retrieves, by cosine, among the second chunks of
  all held-out pieces; a hit when its own piece's chunk ranks first;
- `val/auc`: ROC AUC of cosine(first chunk, second chunk) for same piece versus different
  pieces (every off-diagonal pair).

With `key_weight` > 0 a linear head on the unit embedding also predicts each chunk's tonic
(12 classes) and mode (4) from the batch's `key` / `mode` codes
(`datamodules.pitch_negatives`): loss = triplet + key_weight * (CE_key + CE_mode) / 2. The
head is training-only (not exported): it only pushes the key into E's geometry, which the
triplet loss alone leaves out (docs/music_world.md). `val/key_acc` and `val/mode_acc` are
the head's accuracies on the held-out first chunks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.audio_common import AudioJob
from suite.models.retrieval import recall_at_k, roc_auc
from suite.models.triplet import SemiHardTripletLoss
from suite.models.vit import EMBEDDER_PRESETS, AudioEmbedder, EmbedderConfig
from suite.music import attributes as A


class EmbedderJob(AudioJob):
    """Args: `preset` ("tiny" / "paper") or an explicit `model_config` dict (wins if given);
    `margin` of the triplet loss; AdamW `lr`, `weight_decay`; `warmup_steps`, `max_steps`;
    `init_weights`: an AudioEmbedder file (e.g. a built artifact's model.pt) of the same
    architecture to start from instead of a random initialisation (a second schedule on
    top of a finished build); `key_weight` (>= 0) of the auxiliary key/mode head (module
    docstring)."""

    def __init__(
        self,
        preset: str = "tiny",
        model_config: dict | None = None,
        margin: float = 0.2,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 50,
        max_steps: int = 2000,
        init_weights: str | None = None,
        key_weight: float = 0.0,
    ):
        super().__init__()
        self._check_optim(lr, weight_decay, warmup_steps, max_steps)
        ok = isinstance(key_weight, (int, float)) and not isinstance(key_weight, bool)
        if not (ok and key_weight >= 0):
            raise ValueError(f"EmbedderJob: key_weight must be a number >= 0, got {key_weight!r}")
        self.save_hyperparameters(ignore=["model_config"], logger=False)
        self.model = self._model_from(
            AudioEmbedder, EmbedderConfig, EMBEDDER_PRESETS, preset, model_config
        )
        if init_weights is not None:
            self._init_from(init_weights)
        self.loss_fn = SemiHardTripletLoss(margin=margin)
        self.key_weight = float(key_weight)
        n_out = len(A.KEYS) + len(A.MODES)
        self.key_head = nn.Linear(self.model.config.out_dim, n_out) if key_weight else None
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._val_key: list[tuple[torch.Tensor, torch.Tensor]] = []

    def trained_parameters(self) -> list[nn.Parameter]:
        head = [] if self.key_head is None else list(self.key_head.parameters())
        return list(self.model.parameters()) + head

    def key_logits(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's (tonic `[B, 12]`, mode `[B, 4]`) logits for unit embeddings `[B, E]`."""
        logits = self.key_head(emb)  # [B, 16]
        return logits[:, : len(A.KEYS)], logits[:, len(A.KEYS) :]

    def key_loss(
        self, emb: torch.Tensor, key: torch.Tensor, mode: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean of the tonic and mode cross-entropies, tonic accuracy) for `[B, E]`."""
        k_logits, m_logits = self.key_logits(emb)
        aux = (F.cross_entropy(k_logits, key) + F.cross_entropy(m_logits, mode)) / 2
        return aux, (k_logits.argmax(-1) == key).float().mean()

    def _key_batch(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "key" not in batch or "mode" not in batch:
            raise ValueError(
                "EmbedderJob: key_weight is set but the batches carry no key/mode codes "
                "(the music-world AudioDataModule(task='embedder') gives them; audio folders "
                "have no key labels)"
            )
        return batch["key"], batch["mode"]

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.model(audio)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        emb = self.model(batch["audio"])  # [2P, E]
        loss = self.loss_fn(emb, batch["label"])
        bs = len(emb)
        if self.key_head is not None:
            key, mode = self._key_batch(batch)
            aux, key_acc = self.key_loss(emb, key, mode)
            loss = loss + self.key_weight * aux
            self.log("train/key_ce", aux, batch_size=bs)
            self.log("train/key_acc", key_acc, batch_size=bs)
        loss = self._finite(loss, batch_idx)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/semi_hard_frac", self.loss_fn.last["semi_hard_frac"], batch_size=bs)
        self.log("train/mined_frac", self.loss_fn.last["mined_frac"], batch_size=bs)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val, self._val_key = [], []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        a, b = self.model(batch["audio_a"]), self.model(batch["audio_b"])  # [P, E] each
        self._val.append((a.float().cpu(), b.float().cpu()))
        if self.key_head is not None:
            key, mode = self._key_batch(batch)
            k_logits, m_logits = self.key_logits(a)
            self._val_key.append(
                (k_logits.argmax(-1).cpu() == key.cpu(), m_logits.argmax(-1).cpu() == mode.cpu())
            )

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        metrics = evaluate_embeddings(
            torch.cat([a for a, _ in self._val]), torch.cat([b for _, b in self._val])
        )
        if self._val_key:
            metrics["key_acc"] = torch.cat([k for k, _ in self._val_key]).float().mean().item()
            metrics["mode_acc"] = torch.cat([m for _, m in self._val_key]).float().mean().item()
        for key, value in metrics.items():
            self.log(f"val/{key}", value, prog_bar=key != "n_pieces")


def evaluate_embeddings(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Same-piece retrieval and AUC from unit embeddings of two chunks per piece `[P, E]`."""
    n = len(a)
    same = torch.eye(n, dtype=torch.bool)
    sim = a @ b.T  # [P, P]
    return {
        "recall@1": recall_at_k(a, b, same, 1),
        "auc": roc_auc(sim[same], sim[~same]),
        "n_pieces": float(n),
    }
