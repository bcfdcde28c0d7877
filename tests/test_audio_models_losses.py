"""Tests for the triplet miner/loss, the MuLan-style scorer and the preference model."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from suite.models.mel import MelConfig
from suite.models.preference import PreferenceConfig, PreferenceModel, bradley_terry_loss
from suite.models.scorer import MuLanScorer, ScorerConfig, info_nce
from suite.models.triplet import SemiHardTripletLoss, mine_semi_hard, pairwise_distances
from suite.models.vit import AudioEmbedder, EmbedderConfig, EncoderConfig, ViTConfig

SR = 16000
ENC = EncoderConfig(
    mel=MelConfig(n_mels=32),
    vit=ViTConfig(patch_freq=8, patch_time=8, width=32, depth=1, heads=2, head_dim=16, ff_dim=64),
    clip_seconds=0.5,
)


def tone(freqs, noise=0.0, n=8000, seed=0):
    """Sum-of-sines clips [len(freqs), n] with optional white noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / SR
    phase = torch.rand(len(freqs), 1, generator=g) * 6.28
    x = 0.4 * torch.sin(2 * math.pi * torch.tensor(freqs)[:, None] * t + phase)
    return (x + noise * torch.randn(x.shape, generator=g)).clamp(-1, 1)


# ------------------------------------------------------------------ triplet mining


def brute_force_mining(d, labels, margin):
    out = []
    for a in range(len(labels)):
        for p in range(len(labels)):
            if a == p or labels[a] != labels[p]:
                continue
            negs = [n for n in range(len(labels)) if labels[n] != labels[a]]
            semi = [n for n in negs if d[a, p] < d[a, n] < d[a, p] + margin]
            hard = [n for n in negs if d[a, n] <= d[a, p]]
            if semi:
                out.append((a, p, min(semi, key=lambda n: d[a, n]), True))
            elif hard:
                out.append((a, p, max(hard, key=lambda n: d[a, n]), False))
    return sorted(out)


@pytest.mark.parametrize("seed", range(4))
def test_mining_matches_brute_force_rule(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=14)
    emb = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(14, 3))), dim=-1)
    d = pairwise_distances(emb)
    t = mine_semi_hard(d, torch.tensor(labels), margin=0.5)
    got = sorted(
        zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist(), t.semi_hard.tolist())
    )
    assert got == brute_force_mining(d.numpy(), labels, 0.5)
    a, p, n, semi = t.anchor, t.positive, t.negative, t.semi_hard
    dap, dan = d[a, p], d[a, n]
    assert ((dap < dan) & (dan < dap + 0.5))[semi].all()  # semi-hard triplets obey the rule
    assert (dan <= dap)[~semi].all()  # the fallback only uses hard negatives
    assert (labels[a.numpy()] == labels[p.numpy()]).all()
    assert (labels[a.numpy()] != labels[n.numpy()]).all()


def test_distances_match_scipy():
    x = torch.randn(7, 5, dtype=torch.float64)
    np.testing.assert_allclose(
        pairwise_distances(x).numpy(), cdist(x, x, "sqeuclidean"), atol=1e-10
    )
    np.testing.assert_allclose(pairwise_distances(x, squared=False).numpy(), cdist(x, x), atol=1e-6)


def test_triplet_loss_value_and_easy_batch():
    # Hand-made 1-D layout: a=0, p=0.1 (label 0), n=0.25 and 3.0 (label 1); squared distances.
    emb = torch.tensor([[0.0], [0.1], [0.25], [3.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    loss_fn = SemiHardTripletLoss(margin=0.2)
    loss = loss_fn(emb, labels)
    # (0,1): d_ap=.01; negatives d=.0625 (semi-hard), 9 -> n=2: .01-.0625+.2 = .1475
    # (1,0): d_ap=.01; negatives .0225 (semi), 8.41 -> .01-.0225+.2 = .1875
    # (2,3): d_ap=7.5625; negatives .0625, .0225 are hard -> least hard .0625: 7.7
    # (3,2): d_ap=7.5625; negatives 9, 8.41: 9 > 7.7625 easy, 8.41 > 7.7625 easy -> none
    expected = (0.1475 + 0.1875 + (7.5625 - 0.0625 + 0.2)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert loss_fn.last["triplets"] == 3 and loss_fn.last["mined_frac"] == 0.75
    loss.backward()
    assert emb.grad.abs().sum() > 0
    far = torch.tensor([[0.0], [0.01], [5.0], [5.01]], requires_grad=True)
    zero = loss_fn(far, labels)
    assert zero.item() == 0.0 and zero.requires_grad
    with pytest.raises(ValueError, match="margin"):
        SemiHardTripletLoss(margin=0.0)
    with pytest.raises(ValueError, match="no two items"):
        loss_fn(torch.randn(3, 2), torch.tensor([0, 1, 2]))


def test_embedder_training_reduces_triplet_loss():
    torch.manual_seed(0)
    model = AudioEmbedder(EmbedderConfig(ENC, out_dim=16))
    loss_fn = SemiHardTripletLoss(margin=0.2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    freqs = [220.0, 330.0, 495.0, 660.0, 880.0, 1320.0]
    labels = torch.arange(6).repeat(2)

    def batch(seed):
        return tone(freqs * 2, noise=0.05, seed=seed)

    with torch.no_grad():
        before = np.mean([loss_fn(model(batch(100 + s)), labels).item() for s in range(3)])
    for step in range(25):
        opt.zero_grad()
        loss_fn(model(batch(step)), labels).backward()
        opt.step()
    with torch.no_grad():
        after = np.mean([loss_fn(model(batch(100 + s)), labels).item() for s in range(3)])
    assert after < 0.6 * before


# ------------------------------------------------------------------ scorer


def info_nce_reference(a, t, scale, groups):
    """Symmetric InfoNCE with multi-positive targets written with numpy loops."""
    s = scale * a @ t.T
    b = len(a)
    total = 0.0
    for i in range(b):
        pos = [j for j in range(b) if groups[j] == groups[i]]
        row = s[i] - np.log(np.exp(s[i]).sum())
        col = s[:, i] - np.log(np.exp(s[:, i]).sum())
        total += -np.mean([row[j] for j in pos]) - np.mean([col[j] for j in pos])
    return total / (2 * b)


def test_info_nce_matches_numpy_reference():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 4))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    keys = rng.normal(size=(4, 3))
    groups = [0, 1, 2, 1, 3, 0]  # captions 0 and 1 appear twice
    key = torch.tensor(keys[groups])
    t = rng.normal(size=(6, 4))
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    got = info_nce(torch.tensor(a), torch.tensor(t), torch.tensor(math.log(5.0)), text_key=key)
    assert got.item() == pytest.approx(info_nce_reference(a, t, 5.0, groups), rel=1e-9)
    distinct = info_nce(torch.tensor(a), torch.tensor(t), torch.tensor(0.0))
    assert distinct.item() == pytest.approx(info_nce_reference(a, t, 1.0, list(range(6))), rel=1e-9)


class FakeTower:
    """Deterministic stand-in for the MiniLM tower: one fixed unit vector per prompt."""

    def __init__(self):
        self.calls = 0

    def encode(self, prompts):
        self.calls += 1
        rows = [
            torch.randn(384, generator=torch.Generator().manual_seed(sum(map(ord, p))))
            for p in prompts
        ]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def test_scorer_shapes_errors_and_training():
    torch.manual_seed(0)
    tower = FakeTower()
    model = MuLanScorer(ScorerConfig(encoder=ENC, text_hidden=32, joint_dim=16), text_tower=tower)
    freqs = [220.0, 440.0, 880.0, 1760.0]
    prompts = ["low", "mid", "high", "very high"]
    text = tower.encode(prompts)
    score = model.score(tone(freqs), prompts)
    assert score.shape == (4,) and (score.abs() <= 1 + 1e-6).all()
    torch.testing.assert_close(score, model.score_embeddings(tone(freqs), text))
    with pytest.raises(ValueError, match="null"):
        model.score(tone(freqs[:1]), [""])
    with pytest.raises(ValueError, match=r"\[B, 384\]"):
        model.embed_text(torch.randn(2, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = model.loss(tone(freqs, 0.05, seed=99), text).item()
    for step in range(25):
        opt.zero_grad()
        loss = model.loss(tone(freqs, 0.05, seed=step), text)
        loss.backward()
        assert model.logit_scale.grad is not None  # the temperature is learned
        opt.step()
    with torch.no_grad():
        after = model.loss(tone(freqs, 0.05, seed=99), text).item()
    assert after < 0.5 * before
    s = model.score_embeddings(tone(freqs, 0.05, seed=98), text)
    cross = model.embed_audio(tone(freqs, 0.05, seed=98)) @ model.embed_text(text).T
    assert torch.equal(cross.argmax(1), torch.arange(4))  # retrieval works after training
    torch.testing.assert_close(s, cross.diagonal())


def test_scorer_checkpoint_round_trip(tmp_path):
    cfg = ScorerConfig(encoder=ENC, text_hidden=32, joint_dim=16)
    model = MuLanScorer(cfg).eval()
    model.save(tmp_path / "s.pt")
    again = MuLanScorer.from_checkpoint(tmp_path / "s.pt", config=cfg)
    x, t = tone([300.0, 500.0]), torch.nn.functional.normalize(torch.randn(2, 384), dim=-1)
    torch.testing.assert_close(again.score_embeddings(x, t), model.score_embeddings(x, t))
    with pytest.raises(ValueError, match="MuLanScorer, not a PreferenceModel"):
        PreferenceModel.from_checkpoint(tmp_path / "s.pt")


# ------------------------------------------------------------------ preference model


def test_bradley_terry_matches_closed_form():
    w = torch.tensor([2.0, -1.0, 0.5, 80.0, -80.0], dtype=torch.float64)
    l_ = torch.tensor([1.0, 1.0, 0.5, 0.0, 0.0], dtype=torch.float64)
    ref = np.mean([np.logaddexp(0.0, -(a - b)) for a, b in zip(w.numpy(), l_.numpy())])
    assert bradley_terry_loss(w, l_).item() == pytest.approx(ref, rel=1e-12)
    assert math.isfinite(bradley_terry_loss(w * 100, l_).item())
    with pytest.raises(ValueError, match="shapes"):
        bradley_terry_loss(w, l_[:2])


def test_preference_training_and_lightning_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = PreferenceModel(PreferenceConfig(encoder=ENC, hidden=16))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    freqs = [220.0, 300.0, 440.0, 600.0, 880.0, 1200.0]

    def pair(seed):
        return tone(freqs, 0.0, seed=seed), tone(freqs, 0.3, seed=seed)  # clean beats noisy

    with torch.no_grad():
        before = model.loss(*pair(99)).item()
    for step in range(20):
        opt.zero_grad()
        model.loss(*pair(step)).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = model.loss(*pair(99)).item()
        clean, noisy = pair(98)
        assert (model.score(clean) > model.score(noisy)).all()
    assert after < 0.5 * before
    # A Lightning-layout checkpoint (model.-prefixed weights, config in hyper_parameters).
    ckpt = {
        "pytorch-lightning_version": "2.6.0",
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {
            "model_config": model.config.to_dict(),
            "model_class": "PreferenceModel",
        },
    }
    torch.save(ckpt, tmp_path / "p.ckpt")
    again = PreferenceModel.from_checkpoint(tmp_path / "p.ckpt")
    torch.testing.assert_close(again.score(clean), model.score(clean))
    with pytest.raises(ValueError, match="hidden"):
        PreferenceModel.from_checkpoint(
            tmp_path / "p.ckpt", config=PreferenceConfig(encoder=ENC, hidden=8)
        )
