"""Attribute-swapped hard negatives for the MuLan-style scorer: the captions (checked by the
oracle's own prompt parser), the loss (against a numpy reference), the DataModule's batches
and the job; refusals of bad values."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch

from datamodules.audio import AudioDataModule
from lightning_modules.scorer import ScorerJob
from suite.models.scorer import MuLanScorer, ScorerConfig, info_nce
from suite.music.corpus import generate
from suite.music.oracle_prompt import parse_prompt
from suite.music.swaps import SWAPPABLE, swap_table

TINY_ENC = {
    "mel": {"n_mels": 32},
    "vit": {"patch_freq": 8, "patch_time": 16, "width": 32, "depth": 1, "heads": 2,
            "head_dim": 16, "ff_dim": 64},
    "clip_seconds": 1.0,
}  # fmt: skip
MODEL = {"encoder": TINY_ENC, "text_hidden": 16, "joint_dim": 8}


@pytest.fixture(scope="module")
def corpus():
    return generate(seed=3, n=120, progress=False)


class HashTower:
    """A stand-in for MiniLM: one fixed unit vector per distinct string."""

    def encode(self, prompts):
        rows = [
            torch.randn(384, generator=torch.Generator().manual_seed(sum(map(ord, p)) * len(p)))
            for p in prompts
        ]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def short_render(tokens):
    t = torch.arange(20000) / 16000
    f = 100.0 + 10.0 * (tokens[:, 20:].float().mean(1, keepdim=True) % 50)
    return 0.5 * torch.sin(2 * torch.pi * f * t)


# ------------------------------------------------------------------ captions


def test_each_negative_names_another_value_of_exactly_its_attribute(corpus):
    captions, negatives = swap_table(corpus.attrs, draws=2, seed=0)
    attrs = [a for a in corpus.attrs for _ in range(2)]
    counts = dict.fromkeys(SWAPPABLE, 0)
    for a, text, row in zip(attrs, captions, negatives):
        seen = parse_prompt(text)
        for name in ("genre", "mood", "lead", "drums"):
            assert seen.get(name, a[name]) == a[name], (name, text)  # the positive is true
        for name, neg in zip(SWAPPABLE, row):
            if neg is None:
                continue
            counts[name] += 1
            other = parse_prompt(neg)
            changed = {k for k in set(seen) | set(other) if seen.get(k) != other.get(k)}
            assert changed == {name}, (text, neg)
    # every attribute gets swapped somewhere; genre almost always (it is always named)
    assert min(counts.values()) > 0 and counts["genre"] >= 0.9 * len(captions)
    assert swap_table(corpus.attrs[:5], 2, seed=0) == swap_table(corpus.attrs[:5], 2, seed=0)
    assert swap_table(corpus.attrs[:5], 2, seed=0) != swap_table(corpus.attrs[:5], 2, seed=1)


# ------------------------------------------------------------------ loss


def reference(a, t, n, mask, scale, weight):
    """InfoNCE with per-row hard negatives, written with loops (distinct captions)."""
    b = len(a)
    total = 0.0
    for i in range(b):
        row = [scale * a[i] @ t[j] for j in range(b)]
        row += [scale * a[i] @ n[i, k] + math.log(weight) for k in range(n.shape[1]) if mask[i, k]]
        total += -(row[i] - np.log(np.exp(row).sum()))
        col = np.array([scale * a[j] @ t[i] for j in range(b)])
        total += -(col[i] - np.log(np.exp(col).sum()))
    return total / (2 * b)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_info_nce_with_negatives_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    a, t, n = unit(rng.normal(size=(5, 4))), unit(rng.normal(size=(5, 4))), unit(rng.normal(size=(5, 3, 4)))
    mask = rng.random((5, 3)) < 0.6
    mask[0] = False  # a clip without negatives
    got = info_nce(torch.tensor(a), torch.tensor(t), torch.tensor(math.log(7.0), dtype=torch.float64),
                   negatives=torch.tensor(n), negative_mask=torch.tensor(mask), negative_weight=2.5)  # fmt: skip
    assert got.item() == pytest.approx(reference(a, t, n, mask, 7.0, 2.5), rel=1e-9)
    # no negative present: the plain InfoNCE
    none = info_nce(torch.tensor(a), torch.tensor(t), torch.tensor(0.0), negatives=torch.tensor(n),
                    negative_mask=torch.zeros(5, 3, dtype=torch.bool))  # fmt: skip
    plain = info_nce(torch.tensor(a), torch.tensor(t), torch.tensor(0.0))
    assert none.item() == pytest.approx(plain.item(), rel=1e-12)
    with pytest.raises(ValueError, match="negative_mask"):
        info_nce(torch.tensor(a), torch.tensor(t), torch.tensor(0.0), negatives=torch.tensor(n))
    with pytest.raises(ValueError, match="negative_weight"):
        info_nce(torch.tensor(a), torch.tensor(t), torch.tensor(0.0), negatives=torch.tensor(n),
                 negative_mask=torch.tensor(mask), negative_weight=0.0)  # fmt: skip


def test_the_scorer_loss_embeds_its_negatives_with_the_text_head():
    torch.manual_seed(0)
    model = MuLanScorer(ScorerConfig.from_dict(MODEL))
    audio, cond = torch.randn(4, 16000) * 0.1, torch.randn(4, 384)
    neg, mask = torch.randn(4, 2, 384), torch.tensor([[True, False]] * 4)
    got = model.loss(audio, cond, neg, mask, 3.0)
    a, t = model.embed_audio(audio), model.embed_text(cond)
    n = model.embed_text(neg.flatten(0, 1)).view(4, 2, -1)
    want = info_nce(a, t, model.clamped_logit_scale(), text_key=cond, negatives=n,
                    negative_mask=mask, negative_weight=3.0)  # fmt: skip
    torch.testing.assert_close(got, want)
    assert got > model.loss(audio, cond)  # an extra competitor can only raise the loss


# ------------------------------------------------------------------ data and job


def test_scorer_batches_carry_each_clips_swapped_captions(corpus):
    tower = HashTower()
    dm = AudioDataModule("scorer", tokens=torch.as_tensor(corpus.tokens), captions=corpus.captions,
                         attrs=corpus.attrs, batch_size=8, val_pieces=20, render=short_render,
                         text_tower=tower, swap_draws=2)  # fmt: skip
    dm.setup("fit")
    trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False)
    dm.trainer = trainer
    trainer.training = True
    raw = next(iter(dm.train_dataloader()))
    batch = dm.on_after_batch_transfer(raw, 0)
    b, s = len(raw["index"]), len(SWAPPABLE)
    assert batch["negative_cond"].shape == (b, s, 384) and batch["negative_mask"].shape == (b, s)
    captions, negatives = swap_table(corpus.attrs, 2, seed=0)
    for row, (i, text) in enumerate(zip(raw["index"].tolist(), batch["caption"])):
        assert text in captions[2 * i : 2 * i + 2]  # one of the piece's own draws
        neg = negatives[captions.index(text, 2 * i)]
        assert batch["negative_mask"][row].tolist() == [t is not None for t in neg]
        torch.testing.assert_close(batch["cond"][row], tower.encode([text])[0])
        for k, t in enumerate(neg):
            if t is not None:
                torch.testing.assert_close(batch["negative_cond"][row, k], tower.encode([t])[0])
    trainer.training = False  # validation keeps the corpus captions, no negatives
    val = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert "negative_cond" not in val
    assert val["caption"] == [corpus.captions[i] for i in val["index"].tolist()]


def test_the_job_fits_with_negatives_and_starts_from_a_file(corpus, tmp_path):
    dm = AudioDataModule("scorer", tokens=torch.as_tensor(corpus.tokens), captions=corpus.captions,
                         attrs=corpus.attrs, batch_size=8, val_pieces=20, render=short_render,
                         text_tower=HashTower(), swap_draws=1)  # fmt: skip
    torch.manual_seed(0)
    first = ScorerJob(model_config=MODEL, max_steps=2, negative_weight=2.0)
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=1, val_check_interval=2, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(first, dm)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    path = tmp_path / "scorer.pt"
    first.model.save(path)
    torch.manual_seed(1)
    second = ScorerJob(model_config=MODEL, init_weights=str(path))
    for p, q in zip(first.model.parameters(), second.model.parameters()):
        torch.testing.assert_close(p, q)
    other = dict(MODEL, joint_dim=4)
    with pytest.raises(ValueError, match="another architecture"):
        ScorerJob(model_config=other, init_weights=str(path))
    with pytest.raises(FileNotFoundError, match="init_weights"):
        ScorerJob(model_config=MODEL, init_weights=str(tmp_path / "none.pt"))


def test_bad_values_are_refused(corpus):
    with pytest.raises(ValueError, match="swap_draws"):
        AudioDataModule("embedder", swap_draws=2)
    with pytest.raises(ValueError, match="swap_draws"):
        AudioDataModule("scorer", swap_draws=-1)
    with pytest.raises(ValueError, match="negative_weight"):
        ScorerJob(model_config=MODEL, negative_weight=0.0)
    dm = AudioDataModule("scorer", tokens=torch.as_tensor(corpus.tokens), captions=corpus.captions,
                         text_tower=HashTower(), swap_draws=1)  # fmt: skip
    with pytest.raises(ValueError, match="attribute dict"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="draws"):
        swap_table(corpus.attrs, draws=0)
