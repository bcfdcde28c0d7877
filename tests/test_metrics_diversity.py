"""PairwiseDiversity and VendiScore metrics: per-prompt means, streaming, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from suite.metrics import PairwiseDiversity, VendiScore


def _np_prompt_diversity(e: np.ndarray) -> float:
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    n = len(e)
    return float(np.mean([1 - u[i] @ u[j] for i in range(n) for j in range(n) if i != j]))


def _np_prompt_vendi(e: np.ndarray, q: float) -> float:
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    lam = np.clip(np.linalg.eigvalsh(u @ u.T / len(e)), 0, None)
    lam = lam[lam > 1e-12] / lam[lam > 1e-12].sum()
    if q == 1:
        return float(np.exp(-np.sum(lam * np.log(lam))))
    if np.isinf(q):
        return float(1 / lam.max())
    return float(np.exp(np.log(np.sum(lam**q)) / (1 - q)))


@pytest.fixture
def embeddings() -> torch.Tensor:
    return torch.randn(6, 4, 5) + 0.4  # [B, N, D]


def test_pairwise_diversity_is_mean_over_prompts(embeddings):
    metric = PairwiseDiversity()
    metric.update(embeddings)
    expected = np.mean([_np_prompt_diversity(e) for e in embeddings.double().numpy()])
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)
    assert metric.higher_is_better is True
    assert metric.full_state_update is False
    assert metric.is_differentiable is False
    assert (metric.plot_lower_bound, metric.plot_upper_bound) == (0.0, 2.0)


@pytest.mark.parametrize("q", [1.0, 0.5, 2.0, math.inf])
def test_vendi_metric_is_mean_over_prompts(embeddings, q):
    metric = VendiScore(q=q)
    metric.update(embeddings)
    expected = np.mean([_np_prompt_vendi(e, q) for e in embeddings.double().numpy()])
    assert metric.compute().item() == pytest.approx(expected, rel=1e-6)
    assert metric.higher_is_better is True
    assert metric.plot_lower_bound == 1.0


@pytest.mark.parametrize("cls", [PairwiseDiversity, VendiScore])
def test_streaming_in_chunks_equals_one_update(cls, embeddings):
    whole = cls()
    whole.update(embeddings)
    chunked = cls()
    for chunk in torch.split(embeddings, [1, 3, 2]):
        chunked.update(chunk)
    assert chunked.compute().item() == pytest.approx(whole.compute().item(), abs=1e-12)


@pytest.mark.parametrize("cls", [PairwiseDiversity, VendiScore])
def test_reset_forgets(cls, embeddings):
    metric = cls()
    metric.update(embeddings)
    first = metric.compute().item()
    metric.reset()
    metric.update(embeddings[:2])
    metric.update(embeddings[2:])
    assert metric.compute().item() == pytest.approx(first, abs=1e-12)


@pytest.mark.parametrize("cls", [PairwiseDiversity, VendiScore])
@pytest.mark.parametrize(
    ("bad", "exc", "match"),
    [
        (torch.randn(4, 5), ValueError, r"\[B, N, D\]"),
        (torch.randn(3, 1, 5), ValueError, "N >= 2"),
        (torch.full((2, 3, 4), float("nan")), ValueError, "non-finite"),
        (torch.zeros(2, 3, 4), ValueError, "zero norm"),
        ([[1.0, 2.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_names_the_metric(cls, bad, exc, match):
    metric = cls()
    with pytest.raises(exc, match=match) as info:
        metric.update(bad)
    assert cls.__name__ in str(info.value)


@pytest.mark.parametrize("cls", [PairwiseDiversity, VendiScore])
def test_compute_before_update_errors(cls):
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=f"{cls.__name__}.*before"):
        cls().compute()


def test_vendi_rejects_bad_q():
    with pytest.raises(ValueError, match="VendiScore: q"):
        VendiScore(q=-0.5)


def test_forward_returns_batch_value_and_accumulates(embeddings):
    metric = PairwiseDiversity()
    first = metric(embeddings[:2])
    metric(embeddings[2:])
    single = PairwiseDiversity()
    single.update(embeddings[:2])
    assert first.item() == pytest.approx(single.compute().item(), abs=1e-12)
    whole = PairwiseDiversity()
    whole.update(embeddings)
    assert metric.compute().item() == pytest.approx(whole.compute().item(), abs=1e-12)


def test_plot_uses_bounds(embeddings):
    import matplotlib

    matplotlib.use("Agg")
    metric = VendiScore()
    metric.update(embeddings)
    fig, ax = metric.plot()
    assert ax.get_ylim()[0] <= 1.0
    fig.clf()
