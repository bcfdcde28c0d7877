"""A word-hashing tokenizer for the random tiny configs of real models' tests.

A real checkpoint (MusicGen's T5, CLAP's RoBERTa) ships its own tokenizer files; a tiny
random config built offline has none. `HashTokenizer` maps each lower-cased word to a
fixed id by hashing, so prompts still condition the model deterministically. Never used
with real weights.
"""

from __future__ import annotations

import hashlib

import torch


class HashTokenizer:
    """prompts -> (ids `[B, T]`, mask `[B, T]`): [bos] + word ids in [first, vocab) + [eos]."""

    def __init__(self, vocab: int, *, first: int, eos: int, pad: int, bos: int | None = None,
                 max_length: int = 64):  # fmt: skip
        self.vocab, self.first, self.eos, self.pad, self.bos = vocab, first, eos, pad, bos
        self.max_length = max_length

    def _ids(self, prompt: str, max_length: int) -> list[int]:
        words = [self.first + int(hashlib.sha1(w.lower().encode()).hexdigest(), 16) % (self.vocab - self.first)
                 for w in prompt.split()]  # fmt: skip
        head = [] if self.bos is None else [self.bos]
        return (head + words)[: max_length - 1] + [self.eos]

    def __call__(self, prompts: list[str], max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self._ids(p, max_length or self.max_length) for p in prompts]
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), self.pad, dtype=torch.long)
        mask = torch.zeros(len(rows), T, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
        return ids, mask
