"""Hard-negative batches for E (`datamodules.batching`): a share of each batch from one
genre-tempo cell, the rest uniform; reproducible; refused where it does not apply."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.audio import AudioDataModule
from datamodules.batching import CellBatchSampler, genre_tempo_cells
from suite.music import attributes as A
from suite.music.corpus import generate


@pytest.fixture(scope="module")
def corpus():
    return generate(seed=3, n=400, progress=False)


def test_cells_are_the_header_genre_and_tempo(corpus):
    cells = genre_tempo_cells(torch.as_tensor(corpus.tokens))
    genres = [A.ATTRIBUTES["genre"].index(a["genre"]) for a in corpus.attrs]
    tempos = [[t[0] for t in A.TEMPOS].index(a["tempo"]) for a in corpus.attrs]
    np.testing.assert_array_equal(cells, np.array(genres) * len(A.TEMPOS) + np.array(tempos))


def test_each_batch_has_its_share_from_one_cell(corpus):
    cells = genre_tempo_cells(torch.as_tensor(corpus.tokens))
    sampler = CellBatchSampler(cells, batch_size=16, share=0.5, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 400 // 16
    for b in batches:
        assert len(b) == len(set(b)) == 16  # no piece twice in a batch
        cell = np.bincount(cells[b]).argmax()  # the batch's cell: all its pieces or 8
        assert (cells[b] == cell).sum() >= min(8, (cells == cell).sum())
    # uniform batches of 16 from ~40 cells rarely hold 8 of one
    assert np.mean([np.bincount(cells[b]).max() >= 8 for b in batches]) > 0.8
    assert batches == list(CellBatchSampler(cells, 16, 0.5, seed=1))  # seeded
    assert batches != list(CellBatchSampler(cells, 16, 0.5, seed=2))


def test_bad_values_are_refused(corpus):
    cells = genre_tempo_cells(torch.as_tensor(corpus.tokens))
    with pytest.raises(ValueError, match="share"):
        CellBatchSampler(cells, 16, 0.0)
    with pytest.raises(ValueError, match="batch_size"):
        CellBatchSampler(cells[:8], 16, 0.5)
    with pytest.raises(ValueError, match="hard_share"):
        AudioDataModule(task="scorer", hard_share=0.5)
    with pytest.raises(ValueError, match="hard_share"):
        AudioDataModule(task="embedder", hard_share=1.5)


def test_the_embedder_loader_uses_the_cells(corpus):
    dm = AudioDataModule(task="embedder", tokens=torch.as_tensor(corpus.tokens), batch_size=16,
                         val_pieces=50, hard_share=0.5)  # fmt: skip
    dm.setup("fit")
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    cells = genre_tempo_cells(batch["tokens"])
    assert np.bincount(cells).max() >= 8
    assert set(batch["index"].tolist()) <= set(dm.train_idx.tolist())
