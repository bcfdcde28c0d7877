"""Corpus pieces for the audio DataModules: the held-out split every audio job shares, an
indexed dataset of token rows, the cached music-world corpus, and white noise at a given SNR
(the noise augmentation of paper appendix D.1).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


def add_noise(
    audio: torch.Tensor, snr_db: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """White noise at `[B]` signal-to-noise ratios (dB), clipped back into [-1, 1]."""
    power = audio.pow(2).mean(dim=1, keepdim=True).clamp_min(1e-8)  # [B, 1]
    scale = (power / 10 ** (snr_db.to(audio.device)[:, None] / 10)).sqrt()
    noise = torch.randn(audio.shape, generator=generator).to(audio.device)
    return (audio + scale * noise).clamp(-1.0, 1.0)


def held_out_count(n: int, val_pieces: int) -> int:
    """Pieces held out of `n`: at most `val_pieces`, 500 (as in the issue) and a fifth."""
    return min(val_pieces, 500, n // 5)


def held_out_split(pool: np.ndarray, val_pieces: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices of `pool`: the last `held_out_count` of a seeded permutation,
    each sorted; every DataModule on the corpus holds out the same pieces."""
    perm = np.random.default_rng(seed).permutation(pool)
    n_val = held_out_count(len(pool), val_pieces)
    return np.sort(perm[:-n_val]), np.sort(perm[-n_val:])


class _Indexed(Dataset):
    """Yields `{"tokens": [L], "index": int}` for a subset of the corpus."""

    def __init__(self, tokens: torch.Tensor, indices: np.ndarray):
        self.tokens, self.indices = tokens, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        j = int(self.indices[i])
        return {"tokens": self.tokens[j], "index": j}


def _load_default_corpus(n_pieces: int, seed: int, root: str | None, with_attrs: bool = False):
    """Tokens `[N, L]` and captions (and attribute dicts) of the cached music-world corpus."""
    from suite.music.corpus import build_corpus

    corpus = build_corpus(seed=seed, n=n_pieces, root=root)
    tokens = torch.as_tensor(np.asarray(corpus.tokens, dtype=np.int64))
    if with_attrs:
        return tokens, list(corpus.captions), list(corpus.attrs)
    return tokens, list(corpus.captions)
