"""Bootstrap intervals over prompts (suite.metrics.intervals) and their use by EvalMetrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from suite.metrics.eval_set import INTERVALS, EvalMetrics, _prompt_means
from suite.metrics.intervals import PromptIntervals


def test_interval_is_scipys_bca_bootstrap_of_the_mean_over_prompts():
    values = np.random.default_rng(0).normal(0.5, 0.2, 40)
    m = PromptIntervals(["x"], num_resamples=999, seed=3)
    m.update("x", torch.tensor(values[:25]))
    m.update("x", torch.tensor(values[25:]))  # arrival order and batching do not matter
    low, high = m.compute()["x"]
    ref = stats.bootstrap((np.sort(values),), np.mean, n_resamples=999, method="BCa",
                          rng=np.random.default_rng(3)).confidence_interval  # fmt: skip
    assert (low, high) == pytest.approx((ref.low, ref.high))
    assert low < values.mean() < high
    # an independent reference: for 40 normal values the bootstrap interval of the mean is
    # close to the classical t-interval (same centre, width within 15 %)
    t_low, t_high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert (low + high) / 2 == pytest.approx((t_low + t_high) / 2, abs=0.02)
    assert (high - low) == pytest.approx(t_high - t_low, rel=0.15)


def test_interval_leaves_out_nan_prompts_and_needs_two():
    m = PromptIntervals(["x", "y"], num_resamples=99)
    m.update("x", torch.tensor([0.1, float("nan"), 0.3, 0.2]))
    m.update("y", torch.tensor([1.0]))
    out = m.compute()
    assert set(out) == {"x"}
    assert m.values("x").tolist() == pytest.approx([0.1, 0.3, 0.2])
    with pytest.raises(KeyError, match="unknown quantity 'z'"):
        m.update("z", torch.zeros(2))
    with pytest.raises(ValueError, match="confidence"):
        PromptIntervals(["x"], confidence=1.5)


def test_prompt_means_average_each_prompts_finite_generations():
    got = _prompt_means(torch.tensor([[1.0, 3.0], [float("nan"), 4.0], [float("nan")] * 2]))
    assert got[:2].tolist() == [2.0, 4.0] and torch.isnan(got[2])


class _Scorer:
    def score(self, audio, prompts):
        return audio[:, 0].float()


class _Pref:
    def score(self, audio):
        return audio[:, 1].float()


def test_eval_metrics_log_an_interval_around_each_mean():
    g = torch.Generator().manual_seed(0)
    metrics = EvalMetrics(_Scorer(), _Pref(), omega=5.0)
    P, N = 16, 3
    prompts = [f"p{i}" for i in range(P)]
    audio = torch.rand(P, N, 8, generator=g)
    emb = torch.randn(P, N, 4, generator=g)
    oracle = {"quality": torch.rand(P, N, generator=g).double(),
              "adherence": torch.rand(P, N, generator=g).double(),
              "pair_distance": torch.rand(P, generator=g).double()}  # fmt: skip
    kl = torch.rand(P, N, generator=g)
    metrics.update(prompts[:10], audio[:10], emb[:10], kl=kl[:10],
                   oracle={k: v[:10] for k, v in oracle.items()})  # fmt: skip
    metrics.update(prompts[10:], audio[10:], emb[10:], kl=kl[10:],
                   oracle={k: v[10:] for k, v in oracle.items()})  # fmt: skip
    out = metrics.compute()
    for name in INTERVALS:
        low, mean, high = (out[f"eval/{name}{s}"] for s in ("_ci_low", "", "_ci_high"))
        assert low < mean < high, name
    quality = 5 * audio[..., 0].double() + audio[..., 1].double()  # per clip
    ref = PromptIntervals(["q"])
    ref.update("q", quality.mean(1))
    assert (out["eval/quality_ci_low"], out["eval/quality_ci_high"]) == pytest.approx(ref.compute()["q"])
    assert out["eval/quality"] == pytest.approx(float(quality.mean()))
    metrics.reset()
    assert metrics.intervals.values("quality").numel() == 0
