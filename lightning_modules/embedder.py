"""Training job of the diversity embedder E (paper section 2.2, appendix D.1).

Semi-hard triplet loss (Schroff et al. 2015) over batches of two chunks per piece
(`datamodules.audio.AudioDataModule(task="embedder")`): chunks of the same piece are
positives, chunks of other pieces negatives. Validation on held-out pieces (up to 500):

- `val/recall@1`: each piece's first chunk retrieves, by cosine, among the second chunks of
  all held-out pieces; a hit when its own piece's chunk ranks first;
- `val/auc`: ROC AUC of cosine(first chunk, second chunk) for same piece versus different
  pieces (every off-diagonal pair).
"""

from __future__ import annotations

import torch

from lightning_modules.audio_common import AudioJob
from suite.models.retrieval import recall_at_k, roc_auc
from suite.models.triplet import SemiHardTripletLoss
from suite.models.vit import EMBEDDER_PRESETS, AudioEmbedder, EmbedderConfig


class EmbedderJob(AudioJob):
    """Args: `preset` ("tiny" / "paper") or an explicit `model_config` dict (wins if given);
    `margin` of the triplet loss; AdamW `lr`, `weight_decay`; `warmup_steps`, `max_steps`;
    `init_weights`: an AudioEmbedder file (e.g. a built artifact's model.pt) of the same
    architecture to start from instead of a random initialisation (a second schedule on
    top of a finished build)."""

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
    ):
        super().__init__()
        self._check_optim(lr, weight_decay, warmup_steps, max_steps)
        self.save_hyperparameters(ignore=["model_config"], logger=False)
        self.model = self._model_from(
            AudioEmbedder, EmbedderConfig, EMBEDDER_PRESETS, preset, model_config
        )
        if init_weights is not None:
            self._init_from(init_weights)
        self.loss_fn = SemiHardTripletLoss(margin=margin)
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.model(audio)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        emb = self.model(batch["audio"])  # [2P, E]
        loss = self._finite(self.loss_fn(emb, batch["label"]), batch_idx)
        bs = len(emb)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/semi_hard_frac", self.loss_fn.last["semi_hard_frac"], batch_size=bs)
        self.log("train/mined_frac", self.loss_fn.last["mined_frac"], batch_size=bs)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        a, b = self.model(batch["audio_a"]), self.model(batch["audio_b"])  # [P, E] each
        self._val.append((a.float().cpu(), b.float().cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        metrics = evaluate_embeddings(
            torch.cat([a for a, _ in self._val]), torch.cat([b for _, b in self._val])
        )
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
