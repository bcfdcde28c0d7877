"""Scorer batches with attribute-swapped hard-negative captions (NegCLIP-style).

`suite.music.swaps` writes, for each piece, `draws` captions from its attributes and each
caption's swapped twins (one named attribute changed). They are embedded once by the frozen
text tower into a table of distinct captions; a training batch draws one of its piece's
captions and carries the twins' embeddings for `suite.models.scorer.info_nce`'s
`negatives` (paper section 3.1's MuLan score, trained to read every named attribute).

With `positives`, a batch also says which of its captions DESCRIBE which of its pieces: a
caption describes a piece when the piece has every attribute value the caption names. Most
captions name two or three attributes, so in a batch of 1,024 a caption describes dozens of
pieces besides its own; plain InfoNCE pushes them all away (false negatives), teaching the
scorer to tell apart pieces the caption does not, where the adherence it stands for asks
only whether the named attributes hold (docs/music_world.md, session 16).

With `near_misses`, a batch also says which of its pieces MISS exactly one attribute value
a caption names (they have all the others): the caption's hard negative audio, the mirror of
the swapped captions. Within one prompt, generations differ in which named attributes they
realise, and ranking them is the text-to-audio direction (`suite.models.scorer.info_nce`'s
`near_misses`), which swapped captions (audio-to-text) do not train.
"""

from __future__ import annotations

import torch

from suite.music.swaps import SWAPPABLE, swap_table


def check_swap_options(owner: str, swap_draws, attribute_positives, near_misses=False) -> None:
    """Refuse bad `swap_draws` / `attribute_positives` / `near_misses` values, naming
    `owner` (the DataModule that takes them)."""
    if isinstance(swap_draws, bool) or not isinstance(swap_draws, int) or swap_draws < 0:
        raise ValueError(f"{owner}: swap_draws must be an integer >= 0, got {swap_draws!r}")
    for key, value in (("attribute_positives", attribute_positives), ("near_misses", near_misses)):
        if not isinstance(value, bool) or (value and not swap_draws):
            raise ValueError(
                f"{owner}: {key} must be true or false and needs swap_draws >= 1 "
                f"(its captions know what they name), got {value!r} with swap_draws {swap_draws!r}"
            )


def attribute_codes(attrs: list[dict[str, str]], keys: list[str]) -> tuple[torch.Tensor, list[dict[str, int]]]:
    """Each piece's values of `keys` as integers `[N, A]` (a missing value, "", is a value of
    its own), and per key the map value -> code (values sorted)."""
    values = [{v: i for i, v in enumerate(sorted({a.get(k, "") for a in attrs}))} for k in keys]
    codes = torch.tensor([[values[j][a.get(k, "")] for j, k in enumerate(keys)] for a in attrs])
    return codes, values


class SwapNegatives:
    """Caption draws and their swapped twins for N pieces, embedded once."""

    def __init__(
        self,
        attrs: list[dict[str, str]],
        draws: int,
        tower,
        seed: int = 0,
        positives: bool = False,
        near_misses: bool = False,
    ):
        named: list[dict[str, str]] = []
        captions, negatives = swap_table(attrs, draws, seed, named)
        flat = sorted(set(captions) | {t for row in negatives for t in row if t is not None})
        where = {t: i for i, t in enumerate(flat)}
        self.table = tower.encode(flat).cpu()  # [U, 384]: every distinct caption once
        self.captions = flat
        self.pos = torch.tensor([where[t] for t in captions]).view(len(attrs), draws)  # [N, D]
        self.neg = torch.tensor(  # [N, D, S]; -1: the caption does not name that attribute
            [[where[t] if t is not None else -1 for t in row] for row in negatives]
        ).view(len(attrs), draws, len(SWAPPABLE))
        self.codes = self.named = None
        self.positives, self.near_misses = positives, near_misses
        if positives or near_misses:  # attribute values as integers: pieces [N, A], captions [N, D, A] (-1: unnamed)
            keys = sorted({k for said in named for k in said})
            self.codes, values = attribute_codes(attrs, keys)
            self.named = torch.tensor(
                [[values[j][said[k]] if k in said else -1 for j, k in enumerate(keys)] for said in named]
            ).view(len(attrs), draws, len(keys))

    def batch(self, index: torch.Tensor, generator: torch.Generator) -> dict:
        """One caption draw per piece of `index [B]`: `cond [B, 384]`, `caption`,
        `negative_cond [B, S, 384]`, `negative_mask [B, S]`; with positives also
        `positives [B, B]`, True where caption j describes piece i; with near misses
        `near_misses [B, B]`, True where piece i lacks exactly one value caption j names."""
        index = index.cpu()
        d = torch.randint(0, self.pos.shape[1], (len(index),), generator=generator)
        pos, neg = self.pos[index, d], self.neg[index, d]  # [B], [B, S]
        out = {
            "cond": self.table[pos],
            "caption": [self.captions[i] for i in pos.tolist()],
            "negative_cond": self.table[neg.clamp(min=0)],
            "negative_mask": neg >= 0,
        }
        if self.codes is not None:
            said = self.named[index, d][None]  # [1, B, A]: caption j's named values
            has = self.codes[index][:, None]  # [B, 1, A]: piece i's values
            missed = ((said >= 0) & (said != has)).sum(-1)  # [B, B]: named values piece i lacks
            if self.positives:
                out["positives"] = missed == 0
            if self.near_misses:
                out["near_misses"] = missed == 1
        return out
