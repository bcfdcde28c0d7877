"""Scorer batches with attribute-swapped hard-negative captions (NegCLIP-style).

`suite.music.swaps` writes, for each piece, `draws` captions from its attributes and each
caption's swapped twins (one named attribute changed). They are embedded once by the frozen
text tower into a table of distinct captions; a training batch draws one of its piece's
captions and carries the twins' embeddings for `suite.models.scorer.info_nce`'s
`negatives` (paper section 3.1's MuLan score, trained to read every named attribute).
"""

from __future__ import annotations

import torch

from suite.music.swaps import SWAPPABLE, swap_table


class SwapNegatives:
    """Caption draws and their swapped twins for N pieces, embedded once."""

    def __init__(self, attrs: list[dict[str, str]], draws: int, tower, seed: int = 0):
        captions, negatives = swap_table(attrs, draws, seed)
        flat = sorted(set(captions) | {t for row in negatives for t in row if t is not None})
        where = {t: i for i, t in enumerate(flat)}
        self.table = tower.encode(flat).cpu()  # [U, 384]: every distinct caption once
        self.captions = flat
        self.pos = torch.tensor([where[t] for t in captions]).view(len(attrs), draws)  # [N, D]
        self.neg = torch.tensor(  # [N, D, S]; -1: the caption does not name that attribute
            [[where[t] if t is not None else -1 for t in row] for row in negatives]
        ).view(len(attrs), draws, len(SWAPPABLE))

    def batch(self, index: torch.Tensor, generator: torch.Generator) -> dict:
        """One caption draw per piece of `index [B]`: `cond [B, 384]`, `caption`,
        `negative_cond [B, S, 384]`, `negative_mask [B, S]`."""
        index = index.cpu()
        d = torch.randint(0, self.pos.shape[1], (len(index),), generator=generator)
        pos, neg = self.pos[index, d], self.neg[index, d]  # [B], [B, S]
        return {
            "cond": self.table[pos],
            "caption": [self.captions[i] for i in pos.tolist()],
            "negative_cond": self.table[neg.clamp(min=0)],
            "negative_mask": neg >= 0,
        }
