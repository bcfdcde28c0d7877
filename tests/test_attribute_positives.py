"""Attribute-aware positives for the MuLan-style scorer (`datamodules.swap_negatives`,
`suite.models.scorer.info_nce(positives=...)`): a caption describes every piece that has
the attribute values it names, and InfoNCE counts those pairs as positives."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch

from datamodules.audio import AudioDataModule
from datamodules.trunk_features import TrunkFeatureDataModule
from suite.models.scorer import info_nce
from suite.music.captions import describe
from suite.music.corpus import generate
from suite.music.oracle_prompt import parse_prompt
from suite.music.swaps import swap_table
from tests.test_swap_negatives import HashTower, short_render, unit


@pytest.fixture(scope="module")
def corpus():
    return generate(seed=3, n=120, progress=False)


def read(text: str) -> dict[str, str]:
    """What the oracle's own prompt parser reads in a caption (its attributes only)."""
    return {k: v for k, v in parse_prompt(text).items() if k != "quality"}


def test_named_attributes_are_what_the_oracle_reads(corpus):
    named: list[dict] = []
    captions, negatives = swap_table(corpus.attrs, 2, seed=0, named=named)
    assert (captions, negatives) == swap_table(corpus.attrs, 2, seed=0)  # the same draws
    assert [read(t) for t in captions] == named
    assert {k for said in named for k in said} >= {"genre", "mood", "tempo", "lead"}
    for i, attrs in enumerate(corpus.attrs[:40]):  # the corpus captions' describe too
        said: dict[str, str] = {}
        text = describe(np.random.default_rng(i), attrs, None, quality=False, named=said)
        assert text == describe(np.random.default_rng(i), attrs, None, quality=False)
        assert read(text) == said and all(attrs[k] == v for k, v in said.items())


def audio_datamodule(corpus, **kw) -> AudioDataModule:
    """A scorer AudioDataModule on `corpus` (short renders, hash tower); `kw` its options."""
    kw = {"batch_size": 48, "val_pieces": 20, **kw}
    return AudioDataModule("scorer", tokens=torch.as_tensor(corpus.tokens), captions=corpus.captions,
                           attrs=corpus.attrs, render=short_render, text_tower=HashTower(), **kw)  # fmt: skip


def trunk_datamodule(corpus, tmp_path, **kw) -> TrunkFeatureDataModule:
    """A TrunkFeatureDataModule on `corpus` over a fresh tiny scorer's trunk; `kw` its options."""
    from suite.models.scorer import MuLanScorer, ScorerConfig
    from tests.test_swap_negatives import MODEL

    path = tmp_path / "trunk.pt"
    MuLanScorer(ScorerConfig.from_dict(MODEL)).save(path)
    return TrunkFeatureDataModule(str(path), tokens=corpus.tokens, captions=corpus.captions,
                                  attrs=corpus.attrs, val_pieces=20, batch_size=32, swap_draws=1,
                                  render=short_render, text_tower=HashTower(), **kw)  # fmt: skip


def fit_batch(dm):
    dm.setup("fit")
    trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False)
    dm.trainer = trainer
    trainer.training = True
    raw = next(iter(dm.train_dataloader()))
    return raw, dm.on_after_batch_transfer(raw, 0)


def test_batches_say_which_captions_describe_which_pieces(corpus):
    dm = audio_datamodule(corpus, swap_draws=2, attribute_positives=True)
    raw, batch = fit_batch(dm)
    index = raw["index"].tolist()
    want = torch.tensor([[all(corpus.attrs[i].get(k) == v for k, v in read(text).items())
                          for text in batch["caption"]] for i in index])  # fmt: skip
    assert torch.equal(batch["positives"], want)
    assert batch["positives"].diagonal().all() and batch["positives"].sum() > len(index)
    plain = audio_datamodule(corpus, swap_draws=2)
    assert "positives" not in fit_batch(plain)[1]


def test_the_frozen_trunk_batches_carry_them_too(corpus, tmp_path):
    raw, batch = fit_batch(trunk_datamodule(corpus, tmp_path, attribute_positives=True))
    want = torch.tensor([[all(corpus.attrs[i].get(k) == v for k, v in read(text).items())
                          for text in batch["caption"]] for i in raw["index"].tolist()])  # fmt: skip
    assert torch.equal(batch["positives"], want)


def reference(a, t, pos, scale):
    """Multi-positive symmetric InfoNCE with loops: each side's target spread evenly over
    its positives (pos[i, j]: caption j describes clip i)."""
    b = len(a)
    logits = np.array([[scale * a[i] @ t[j] for j in range(b)] for i in range(b)])
    a2t = t2a = 0.0
    for i in range(b):
        row = logits[i] - np.log(np.exp(logits[i]).sum())
        a2t += -np.mean([row[j] for j in range(b) if pos[i, j]])
        col = logits[:, i] - np.log(np.exp(logits[:, i]).sum())
        t2a += -np.mean([col[j] for j in range(b) if pos[j, i]])
    return 0.5 * (a2t + t2a) / b


def test_info_nce_with_positives_matches_a_numpy_reference():
    rng = np.random.default_rng(1)
    a, t = unit(rng.normal(size=(6, 4))), unit(rng.normal(size=(6, 4)))
    pos = rng.random((6, 6)) < 0.3
    np.fill_diagonal(pos, True)
    scale = torch.tensor(math.log(5.0), dtype=torch.float64)
    got = info_nce(torch.tensor(a), torch.tensor(t), scale, positives=torch.tensor(pos))
    assert got.item() == pytest.approx(reference(a, t, pos, 5.0), rel=1e-9)
    eye = torch.eye(6, dtype=torch.bool)  # only the own caption: plain InfoNCE
    plain = info_nce(torch.tensor(a), torch.tensor(t), scale)
    assert info_nce(torch.tensor(a), torch.tensor(t), scale, positives=eye).item() == pytest.approx(plain.item())
    with pytest.raises(ValueError, match="diagonal"):
        info_nce(torch.tensor(a), torch.tensor(t), scale, positives=torch.zeros(6, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="positives"):
        info_nce(torch.tensor(a), torch.tensor(t), scale, positives=torch.ones(5, 5, dtype=torch.bool))


def test_positives_need_swap_draws(tmp_path):
    with pytest.raises(ValueError, match="attribute_positives"):
        AudioDataModule("scorer", attribute_positives=True)
    with pytest.raises(ValueError, match="attribute_positives"):
        AudioDataModule("scorer", swap_draws=1, attribute_positives="yes")
    path = tmp_path / "t.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="attribute_positives"):
        TrunkFeatureDataModule(str(path), attribute_positives=True)
