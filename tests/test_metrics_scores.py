"""MuLanScore, QualityScore (toy nn.Module scorers, numpy reference) and TokenEntropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from suite.metrics import MuLanScore, QualityScore, TokenEntropy

PROMPTS = ["calm piano", "fast techno", "sad strings", "happy ukulele"]
SAMPLES = 32


class ToyMuLan(nn.Module):
    """A real (tiny) two-tower scorer: linear audio tower, fixed text embedding table."""

    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        self.audio = nn.Linear(SAMPLES, dim)
        self.text = nn.Embedding(len(PROMPTS), dim)
        self.dropout = nn.Dropout(0.5)  # only harmless if the metric scores in eval mode
        self.calls: list[tuple[bool, bool]] = []  # (grad enabled, training) per call

    def score(self, audio: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        self.calls.append((torch.is_grad_enabled(), self.training))
        idx = torch.tensor([PROMPTS.index(p) for p in prompts], device=audio.device)
        a = self.dropout(self.audio(audio))  # [B, E]
        return nn.functional.cosine_similarity(a, self.text(idx), dim=-1)  # [B]


class ToyPreference(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(SAMPLES, 1)

    def score(self, audio: torch.Tensor) -> torch.Tensor:
        return self.head(audio).squeeze(-1)  # [B]


def _np_mulan(model: ToyMuLan, audio: np.ndarray, prompts: list[str]) -> np.ndarray:
    w = model.audio.weight.detach().double().numpy()
    b = model.audio.bias.detach().double().numpy()
    table = model.text.weight.detach().double().numpy()
    a = audio @ w.T + b
    t = table[[PROMPTS.index(p) for p in prompts]]
    return np.sum(a * t, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(t, axis=1))


def _np_pref(model: ToyPreference, audio: np.ndarray) -> np.ndarray:
    w = model.head.weight.detach().double().numpy()[0]
    return audio @ w + float(model.head.bias.detach())


@pytest.fixture
def batch() -> tuple[torch.Tensor, list[str]]:
    audio = torch.rand(10, SAMPLES) * 2 - 1  # [B, S]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(10)]
    return audio, prompts


def test_mulan_score_matches_numpy_and_runs_frozen(batch):
    audio, prompts = batch
    model = ToyMuLan().train()
    metric = MuLanScore(model)
    metric.update(audio[:4], prompts[:4])
    metric.update(audio[4:], prompts[4:])
    expected = _np_mulan(model, audio.double().numpy(), prompts).mean()
    assert metric.compute().item() == pytest.approx(expected, abs=1e-5)
    assert model.calls == [(False, False), (False, False)]  # no grad, eval mode
    assert model.training  # the caller's mode is restored
    # the frozen judge is not part of the metric's parameters or state
    assert list(metric.parameters()) == []
    assert not any("audio" in k or "text" in k for k in metric.state_dict())
    assert metric.higher_is_better is True
    assert (metric.plot_lower_bound, metric.plot_upper_bound) == (-1.0, 1.0)


def test_quality_score_is_omega_mulan_plus_preference(batch):
    audio, prompts = batch
    mulan, pref = ToyMuLan(), ToyPreference()
    metric = QualityScore(mulan, pref, omega=5.0)
    for sl in (slice(0, 3), slice(3, 10)):
        metric.update(audio[sl], prompts[sl])
    a = audio.double().numpy()
    per_clip = 5.0 * _np_mulan(mulan, a, prompts) + _np_pref(pref, a)
    assert metric.compute().item() == pytest.approx(per_clip.mean(), abs=1e-5)
    parts = metric.compute_components()
    assert parts["mulan"].item() == pytest.approx(_np_mulan(mulan, a, prompts).mean(), abs=1e-5)
    assert parts["preference"].item() == pytest.approx(_np_pref(pref, a).mean(), abs=1e-5)
    assert parts["quality"].item() == pytest.approx(per_clip.mean(), abs=1e-5)
    other = QualityScore(mulan, pref, omega=0.0)
    other.update(audio, prompts)
    assert other.compute().item() == pytest.approx(_np_pref(pref, a).mean(), abs=1e-5)


def test_plain_object_scorer_is_accepted(batch):
    audio, prompts = batch

    class Fixed:
        def score(self, audio, prompts):
            return audio.mean(dim=1)

    metric = MuLanScore(Fixed())
    metric.update(audio, prompts)
    assert metric.compute().item() == pytest.approx(audio.double().mean().item(), abs=1e-6)


@pytest.mark.parametrize(
    ("audio", "prompts", "exc", "match"),
    [
        (torch.rand(3, SAMPLES), PROMPTS[:2], ValueError, "2 prompts for 3 audio clips"),
        (torch.rand(3, 1, SAMPLES), PROMPTS[:3], ValueError, r"\[B, S\]"),
        (torch.full((2, SAMPLES), float("nan")), PROMPTS[:2], ValueError, "non-finite"),
        (torch.rand(2, SAMPLES), "calm piano", TypeError, "list of str"),
    ],
)
def test_score_bad_input_names_the_metric(audio, prompts, exc, match):
    for metric, name in (
        (MuLanScore(ToyMuLan()), "MuLanScore"),
        (QualityScore(ToyMuLan(), ToyPreference()), "QualityScore"),
    ):
        with pytest.raises(exc, match=match) as info:
            metric.update(audio, prompts)
        assert name in str(info.value)


def test_scorer_contract_is_checked(batch):
    audio, prompts = batch
    with pytest.raises(TypeError, match="MuLanScore: `scorer` must have a callable `score`"):
        MuLanScore(nn.Linear(2, 2))

    class WrongShape:
        def score(self, audio, prompts):
            return audio[:, :2]

    with pytest.raises(ValueError, match=r"MuLanScore.*shape \[10\]"):
        MuLanScore(WrongShape()).update(audio, prompts)


@pytest.mark.parametrize("cls", [MuLanScore, QualityScore])
def test_scores_compute_before_update_errors(cls):
    metric = (
        MuLanScore(ToyMuLan()) if cls is MuLanScore else QualityScore(ToyMuLan(), ToyPreference())
    )
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=f"{cls.__name__}.*before"):
        metric.compute()


# ----------------------------------------------------------------------------- token entropy


def test_token_entropy_matches_scipy_with_mask():
    logits = torch.randn(3, 5, 7) * 2
    mask = torch.rand(3, 5) > 0.4
    mask[0, 0] = True
    metric = TokenEntropy()
    metric.update(logits, mask)
    probs = torch.softmax(logits.double(), -1).numpy()
    per_pos = stats.entropy(probs, axis=-1)  # nats
    assert metric.compute().item() == pytest.approx(per_pos[mask.numpy()].mean(), rel=1e-10)
    assert metric.higher_is_better is True and metric.plot_lower_bound == 0.0


def test_token_entropy_closed_forms_and_masked_logits():
    uniform = torch.zeros(1, 2, 8)
    metric = TokenEntropy()
    metric.update(uniform)
    assert metric.compute().item() == pytest.approx(math.log(8), rel=1e-12)
    # grammar-masked entries (finite -1e9 or -inf) carry probability 0 and add nothing
    masked = torch.zeros(1, 2, 8)
    masked[..., 4:] = -1e9
    masked[0, 1, 4:] = -float("inf")
    m2 = TokenEntropy()
    m2.update(masked)
    assert m2.compute().item() == pytest.approx(math.log(4), rel=1e-12)
    one_hot = torch.full((2, 3, 5), -1e9)
    one_hot[..., 2] = 0.0
    m3 = TokenEntropy()
    m3.update(one_hot)
    assert m3.compute().item() == pytest.approx(0.0, abs=1e-12)


def test_token_entropy_streaming_equals_one_update():
    logits, mask = torch.randn(6, 4, 5), torch.rand(6, 4) > 0.3
    whole, chunked = TokenEntropy(), TokenEntropy()
    whole.update(logits, mask)
    for lg, mk in zip(torch.split(logits, 2), torch.split(mask, 2)):
        chunked.update(lg, mk)
    assert chunked.compute().item() == pytest.approx(whole.compute().item(), rel=1e-12)


@pytest.mark.parametrize(
    ("logits", "mask", "exc", "match"),
    [
        (torch.randn(3, 5), None, ValueError, r"\[B, L, V\]"),
        (torch.full((1, 2, 3), float("nan")), None, ValueError, "NaN"),
        (torch.full((1, 2, 3), -float("inf")), None, ValueError, "every logit at -inf"),
        (torch.randn(1, 2, 3), torch.ones(1, 3, dtype=torch.bool), ValueError, "mask shape"),
        (torch.randn(1, 2, 3), torch.ones(1, 2), TypeError, "bool tensor"),
    ],
)
def test_token_entropy_bad_input(logits, mask, exc, match):
    with pytest.raises(exc, match=match) as info:
        TokenEntropy().update(logits, mask)
    assert "TokenEntropy" in str(info.value)


def test_token_entropy_all_masked_then_compute_errors():
    metric = TokenEntropy()
    metric.update(torch.randn(1, 2, 3), torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="TokenEntropy.*before"):
        metric.compute()
