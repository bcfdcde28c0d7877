"""Hard negative audio for the MuLan-style scorer (`datamodules.swap_negatives`'s
`near_misses`, `suite.models.scorer.info_nce(near_misses=...)`): the pieces that lack exactly
one attribute value a caption names weigh more in that caption's text-to-audio softmax."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datamodules.audio import AudioDataModule
from datamodules.trunk_features import TrunkFeatureDataModule
from lightning_modules.scorer import ScorerJob
from suite.models.scorer import info_nce
from suite.music.corpus import generate
from tests.test_attribute_positives import audio_datamodule, fit_batch, read, trunk_datamodule
from tests.test_swap_negatives import unit


@pytest.fixture(scope="module")
def corpus():
    return generate(seed=3, n=120, progress=False)


def lacking(corpus, index, captions) -> torch.Tensor:
    """[B, B]: how many values caption j names (as the oracle's parser reads it) piece i lacks."""
    return torch.tensor([[sum(corpus.attrs[i].get(k) != v for k, v in read(text).items())
                          for text in captions] for i in index])  # fmt: skip


def test_audio_batches_mark_the_pieces_that_miss_one_named_value(corpus):
    raw, batch = fit_batch(audio_datamodule(corpus, swap_draws=2, attribute_positives=True, near_misses=True))
    missed = lacking(corpus, raw["index"].tolist(), batch["caption"])
    assert torch.equal(batch["near_misses"], missed == 1)
    assert torch.equal(batch["positives"], missed == 0)
    assert batch["near_misses"].sum() > 0 and not batch["near_misses"].diagonal().any()
    alone = audio_datamodule(corpus, swap_draws=2, near_misses=True)
    assert "positives" not in fit_batch(alone)[1] and "near_misses" in fit_batch(alone)[1]


def test_the_frozen_trunk_batches_carry_them_too(corpus, tmp_path):
    raw, batch = fit_batch(trunk_datamodule(corpus, tmp_path, near_misses=True))
    assert torch.equal(batch["near_misses"], lacking(corpus, raw["index"].tolist(), batch["caption"]) == 1)
    assert "positives" not in batch


def reference(a, t, pos, hard, w, scale):
    """Loops: the audio-to-text half plain, the text-to-audio half with each hard negative
    clip i of caption j counted w times in caption j's denominator."""
    b = len(a)
    logits = np.array([[scale * a[i] @ t[j] for j in range(b)] for i in range(b)])
    a2t = t2a = 0.0
    for i in range(b):
        row = logits[i] - np.log(np.exp(logits[i]).sum())
        a2t += -np.mean([row[j] for j in range(b) if pos[i, j]])
    for j in range(b):
        weights = np.where(hard[:, j] & ~pos[:, j], w, 1.0)
        norm = np.log((weights * np.exp(logits[:, j])).sum())
        t2a += -np.mean([logits[i, j] - norm for i in range(b) if pos[i, j]])
    return 0.5 * (a2t + t2a) / b


def test_info_nce_with_near_misses_matches_a_numpy_reference():
    rng = np.random.default_rng(2)
    a, t = unit(rng.normal(size=(7, 4))), unit(rng.normal(size=(7, 4)))
    pos = rng.random((7, 7)) < 0.25
    np.fill_diagonal(pos, True)
    hard = rng.random((7, 7)) < 0.4  # overlaps some positives: those stay positives
    scale = torch.tensor(math.log(6.0), dtype=torch.float64)
    A, T, P, H = torch.tensor(a), torch.tensor(t), torch.tensor(pos), torch.tensor(hard)
    got = info_nce(A, T, scale, positives=P, near_misses=H, near_miss_weight=3.0)
    assert got.item() == pytest.approx(reference(a, t, pos, hard, 3.0, 6.0), rel=1e-9)
    assert got.item() != pytest.approx(info_nce(A, T, scale, positives=P).item(), rel=1e-3)
    same = info_nce(A, T, scale, positives=P, near_misses=H, near_miss_weight=1.0)
    assert same.item() == pytest.approx(info_nce(A, T, scale, positives=P).item(), rel=1e-12)
    with pytest.raises(ValueError, match="near_misses"):
        info_nce(A, T, scale, near_misses=torch.ones(6, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="near_miss_weight"):
        info_nce(A, T, scale, near_misses=H, near_miss_weight=0.0)


def test_bad_near_miss_options_are_refused(tmp_path):
    with pytest.raises(ValueError, match="near_misses"):
        AudioDataModule("scorer", near_misses=True)
    path = tmp_path / "t.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="near_misses"):
        TrunkFeatureDataModule(str(path), swap_draws=1, near_misses=1)
    with pytest.raises(ValueError, match="near_miss_weight"):
        ScorerJob(near_miss_weight=-1)
    job = ScorerJob(near_miss_weight=4)
    with pytest.raises(ValueError, match="near_misses: true"):
        job.training_step({"cond": torch.zeros(2, 384), "audio": torch.zeros(2, 100)}, 0)
