"""Corpus DataModule: music-world token sequences with caption embeddings.

Pretraining data for the token LM that stands in for MusicLM (paper section 3.1): each
example is a piece's tokens `[L]` and its caption's text-tower embedding `[384]` (the
condition x of paper eq. 1). The corpus comes from `suite.music.corpus.build_corpus`
(deterministic for a seed, cached under `artifacts/`), or from any corpus directory (for
example one built from the user's MIDI files with `python -m suite.music.corpus --midi-dir`).

Caption embeddings are computed ONCE per corpus and text-tower fingerprint and cached next
to the corpus (`cond-<fingerprint>.npy`, atomic write), so later runs load a 30 MB array
instead of running MiniLM over 20k captions. Empty captions are the null condition (zero
rows).

Condition dropout (CFG training needs an unconditional model, paper eq. 1): it belongs to
the model, which may zero rows of `cond` itself; for convenience the DataModule can also do
it with `cond_dropout` > 0 (training batches only, seeded, default 0 = off). A zero row is
the null condition everywhere in the suite.

Batches: {"tokens": LongTensor [B, L], "cond": FloatTensor [B, 384], "flawed": BoolTensor
[B] (the composer's ground truth, for diagnostics), "index": LongTensor [B]}.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from suite.music import corpus as music_corpus


class _TensorDictDataset(Dataset):
    def __init__(
        self, tokens: torch.Tensor, cond: torch.Tensor, flawed: torch.Tensor, index: torch.Tensor
    ):
        self.tokens, self.cond, self.flawed, self.index = tokens, cond, flawed, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "tokens": self.tokens[i],
            "cond": self.cond[i],
            "flawed": self.flawed[i],
            "index": self.index[i],
        }


class _DropoutCollate:
    """Stack examples; zero each `cond` row with probability p (seeded generator)."""

    def __init__(self, p: float, seed: int):
        self.p = p
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        if self.p > 0:
            keep = torch.rand(len(items), generator=self.generator) >= self.p  # [B]
            batch["cond"] = batch["cond"] * keep[:, None].to(batch["cond"].dtype)
        return batch


def caption_embeddings(corpus: music_corpus.Corpus, tower, progress: bool = True) -> np.ndarray:
    """float32 [n, 384] caption embeddings, cached in the corpus directory per tower."""
    fingerprint = getattr(tower, "fingerprint", None)
    path = None
    if corpus.path is not None and fingerprint is not None:
        path = Path(corpus.path) / f"cond-{fingerprint}.npy"
        if path.is_file():
            cond = np.load(path, allow_pickle=False)
            if cond.shape == (len(corpus), 384):
                return cond
    unique = list(dict.fromkeys(corpus.captions))
    table = tower.encode(unique).cpu().numpy().astype(np.float32)  # [U, 384]
    row = {c: i for i, c in enumerate(unique)}
    cond = table[[row[c] for c in corpus.captions]]
    if path is not None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npy", dir=path.parent)
        os.close(fd)
        try:
            np.save(tmp, cond, allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return cond


class MusicCorpusDataModule(L.LightningDataModule):
    """Tokens + caption embeddings of the embedded music corpus.

    Args:
        seed: corpus seed (same seed, same corpus) and split / dropout seed.
        n_pieces: corpus size.
        val_fraction: share of pieces held out for validation (a seeded random split).
        batch_size, num_workers: DataLoader settings.
        cond_dropout: probability of zeroing a training example's condition (0 = leave
            condition dropout to the model).
        root: project root for `artifacts/` (default: the directory with pyproject.toml).
        corpus_dir: use this prebuilt corpus directory instead of composing one.
        text_cache_dir: TextTower disk cache directory (default under artifacts/).
        tower: an object with `encode(list[str]) -> [B, 384]` (default: the shared
            `suite.models.text_tower.default_tower`).
        progress: show progress bars while building.
        eval_prompts: a prompt set name or file; when given, validation also yields prompt
            batches (a second loader) for generation-based evaluation.
        eval_batch_size: prompts per batch of that loader.
    """

    def __init__(
        self,
        seed: int = 0,
        n_pieces: int = 20000,
        val_fraction: float = 0.05,
        batch_size: int = 64,
        num_workers: int = 0,
        cond_dropout: float = 0.0,
        root: str | None = None,
        corpus_dir: str | None = None,
        text_cache_dir: str | None = None,
        tower=None,
        progress: bool = True,
        eval_prompts: str | None = None,
        eval_batch_size: int = 32,
    ):
        super().__init__()
        if not 0.0 <= cond_dropout < 1.0:
            raise ValueError(
                f"MusicCorpusDataModule: cond_dropout must be in [0, 1), got {cond_dropout}"
            )
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(
                f"MusicCorpusDataModule: val_fraction must be in (0, 1), got {val_fraction}"
            )
        if batch_size < 1:
            raise ValueError(f"MusicCorpusDataModule: batch_size must be >= 1, got {batch_size}")
        self.seed, self.n_pieces, self.val_fraction = seed, n_pieces, val_fraction
        self.batch_size, self.num_workers, self.cond_dropout = batch_size, num_workers, cond_dropout
        self.root, self.corpus_dir, self.text_cache_dir = root, corpus_dir, text_cache_dir
        self.progress = progress
        self._tower = tower
        self.corpus: music_corpus.Corpus | None = None
        self.train_set = self.val_set = None
        # Held-out prompts as a second validation loader, for generation-based evals
        # (the oracle judge on the base model's samples); None: corpus CE only.
        self.prompts = None
        if eval_prompts is not None:
            from datamodules.prompts import PromptDataModule

            self.prompts = PromptDataModule(
                eval_prompts=eval_prompts, batch_size=eval_batch_size, root=root,
                text_cache_dir=text_cache_dir, tower=tower,
            )  # fmt: skip

    @property
    def tower(self):
        if self._tower is None:
            from suite.models.text_tower import default_tower

            self._tower = default_tower(self.text_cache_dir)
        return self._tower

    def _load_corpus(self) -> music_corpus.Corpus:
        if self.corpus_dir is not None:
            return music_corpus.load(self.corpus_dir)
        return music_corpus.build_corpus(
            self.seed, self.n_pieces, root=self.root, progress=self.progress
        )

    def prepare_data(self) -> None:
        # builds and caches the corpus and its caption embeddings (one process only)
        caption_embeddings(self._load_corpus(), self.tower, self.progress)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.corpus = self._load_corpus()
        cond = torch.from_numpy(caption_embeddings(self.corpus, self.tower, self.progress))
        tokens = torch.from_numpy(self.corpus.tokens.astype(np.int64))  # [n, L]
        flawed = torch.from_numpy(self.corpus.flawed)
        n = len(self.corpus)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        n_val = max(1, int(round(n * self.val_fraction)))
        if n_val >= n:
            raise ValueError(
                f"MusicCorpusDataModule: {n} pieces are too few for a validation "
                f"split of {self.val_fraction}"
            )
        for name, idx in (("val_set", perm[:n_val]), ("train_set", perm[n_val:])):
            idx = idx.sort().values
            setattr(self, name, _TensorDictDataset(tokens[idx], cond[idx], flawed[idx], idx))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            num_workers=self.num_workers,
            drop_last=True,
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=_DropoutCollate(self.cond_dropout, self.seed + 1),
        )

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        corpus_val = DataLoader(
            self.val_set,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=_DropoutCollate(0.0, 0),
        )
        if self.prompts is None:
            return corpus_val
        self.prompts.setup("validate")
        return [corpus_val, self.prompts.val_dataloader()]
