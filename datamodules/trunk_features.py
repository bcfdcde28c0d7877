"""Cached audio-trunk features for the scorer's frozen-trunk stage (paper section 3.1).

LiT (Zhai et al. 2022) locks one tower and trains the other side of a contrastive model with
large batches. Here the locked part is a built scorer's audio trunk (its ViT encoder): each
corpus piece is rendered once, clean, and passed through the trunk; training batches of
~1,000 pieces then cost two small heads, not a render and a ViT each. With the
attribute-swapped negative captions (`datamodules.swap_negatives`) this stage re-aligned the
committed scorer's joint space from Spearman 0.37 to 0.44 with the oracle's adherence
(docs/music_world.md, session 15); `ScorerJob(train_trunk=False)` trains on these batches.

Batches: train `{"features": [B, W], "cond": [B, 384], "caption", "negative_cond":
[B, S, 384], "negative_mask": [B, S], "index": [B]}` (without `swap_draws`, the corpus
captions and no negatives); validation `{"features", "cond", "caption", "index"}` on the
corpus captions of the held-out pieces (the same split as `AudioDataModule`'s).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from datamodules.pieces import _Indexed, _load_default_corpus, held_out_count, held_out_split
from datamodules.swap_negatives import SwapNegatives, check_swap_options

Renderer = Callable[[torch.Tensor], torch.Tensor]
_CHUNK = 64  # pieces rendered and encoded at a time


class TrunkFeatureDataModule(L.LightningDataModule):
    """Args: `trunk`, a scorer model file (e.g. a built artifact's model.pt) whose audio
    encoder is run once per piece; corpus (`n_pieces`, `corpus_seed`, `root`) or explicit
    `tokens` / `captions` / `attrs`; `val_pieces`, `batch_size`, `swap_draws`,
    `attribute_positives` (batches say which captions describe which pieces),
    `near_misses` (which pieces miss one value a caption names; both
    `datamodules.swap_negatives`), `seed`."""

    def __init__(
        self,
        trunk: str,
        tokens: torch.Tensor | None = None,
        captions: Sequence[str] | None = None,
        attrs: Sequence[dict] | None = None,
        n_pieces: int = 4000,
        corpus_seed: int = 0,
        root: str | None = None,
        val_pieces: int = 500,
        batch_size: int = 1024,
        swap_draws: int = 0,
        attribute_positives: bool = False,
        near_misses: bool = False,
        seed: int = 0,
        render: Renderer | None = None,
        text_tower=None,
    ):
        super().__init__()
        if not Path(trunk).is_file():
            raise FileNotFoundError(f"TrunkFeatureDataModule: trunk file not found: {trunk}")
        if batch_size < 2:
            raise ValueError(f"TrunkFeatureDataModule: batch_size must be >= 2, got {batch_size}")
        check_swap_options("TrunkFeatureDataModule", swap_draws, attribute_positives, near_misses)
        self.trunk, self.batch_size, self.swap_draws, self.seed = trunk, batch_size, swap_draws, seed
        self.attribute_positives, self.near_misses = attribute_positives, near_misses
        self.n_pieces, self.corpus_seed, self.root, self.val_pieces = (
            n_pieces, corpus_seed, root, val_pieces
        )
        self._tokens = None if tokens is None else torch.as_tensor(tokens).long()
        self._captions = None if captions is None else list(captions)
        self._attrs = None if attrs is None else list(attrs)
        self._render, self._tower = render, text_tower
        self._gen = torch.Generator().manual_seed(seed)
        self.features: torch.Tensor | None = None
        self.swaps: SwapNegatives | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.features is not None:
            return
        if self._tokens is None:
            self._tokens, self._captions, self._attrs = _load_default_corpus(
                self.n_pieces, self.corpus_seed, self.root, with_attrs=True
            )
        n = len(self._tokens)
        if self._captions is None or len(self._captions) != n:
            raise ValueError("TrunkFeatureDataModule: needs one caption per piece")
        if self.swap_draws and (self._attrs is None or len(self._attrs) != n):
            raise ValueError("TrunkFeatureDataModule: swap_draws needs one attribute dict per piece")
        n_val = held_out_count(n, self.val_pieces)
        if n - n_val < self.batch_size or n_val < 2:
            raise ValueError(
                f"TrunkFeatureDataModule: {n} pieces leave too few for batches of "
                f"{self.batch_size} after {n_val} held out"
            )
        if self._tower is None:
            from suite.models.text_tower import default_tower

            self._tower = default_tower()
        if self._render is None:
            from suite.music.render import render

            self._render = render
        from suite.models.scorer import MuLanScorer

        encoder = MuLanScorer.from_checkpoint(self.trunk).audio_encoder.eval()
        feats = []
        with torch.no_grad():
            for i in tqdm(range(0, n, _CHUNK), desc="trunk features", unit="chunk"):
                feats.append(encoder(self._render(self._tokens[i : i + _CHUNK])))
        self.features = torch.cat(feats)  # [N, W]
        self.cond = self._tower.encode(self._captions).cpu()  # [N, 384]
        if self.swap_draws:
            self.swaps = SwapNegatives(
                self._attrs, self.swap_draws, self._tower, self.seed,
                self.attribute_positives, self.near_misses,
            )
        self.train_idx, self.val_idx = held_out_split(np.arange(n), self.val_pieces, self.seed)

    def _loader(self, idx: np.ndarray, shuffle: bool) -> DataLoader:
        return DataLoader(
            _Indexed(self._tokens, idx), batch_size=self.batch_size, shuffle=shuffle,
            drop_last=shuffle, generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_idx, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_idx, shuffle=False)

    @torch.no_grad()
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        index = batch["index"]  # [B]
        device = batch["tokens"].device
        out = {"features": self.features[index.cpu()].to(device), "index": index}
        training = self.trainer is not None and self.trainer.training
        if training and self.swaps is not None:
            drawn = self.swaps.batch(index, self._gen)
            out.update({k: v.to(device) if torch.is_tensor(v) else v for k, v in drawn.items()})
        else:
            out["cond"] = self.cond[index.cpu()].to(device)
            out["caption"] = [self._captions[i] for i in index.tolist()]
        return out
