"""WinRate: paper table 2 counts, scipy p-values, tie margin, CI, degenerate cases, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from suite.metrics import WinRate


def _judgements(
    wins: int, losses: int, ties: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paired scores with exactly these outcomes for A, in shuffled order, like a rater's."""
    a = np.concatenate([np.ones(wins), np.zeros(losses), np.full(ties, 0.5)])
    b = np.concatenate([np.zeros(wins), np.ones(losses), np.full(ties, 0.5)])
    perm = np.random.default_rng(seed).permutation(a.size)
    return torch.from_numpy(a[perm]), torch.from_numpy(b[perm])


def _value(out: dict, key: str) -> float:
    return out[key].item()


@pytest.mark.parametrize(
    ("w", "lose", "t", "expected"),
    [(59, 168, 76, 0.320), (82, 130, 91, 0.421), (107, 104, 92, 0.505), (133, 78, 92, 0.591)],
)
def test_paper_table2_win_rates(w, lose, t, expected):
    a, b = _judgements(w, lose, t)
    metric = WinRate(num_resamples=999)
    metric.update(a, b)
    out = metric.compute()
    assert round(_value(out, "win_rate"), 3) == pytest.approx(expected, abs=1e-12)
    assert (_value(out, "wins"), _value(out, "losses"), _value(out, "ties")) == (w, lose, t)
    assert _value(out, "n") == w + lose + t
    an, bn = a.numpy(), b.numpy()
    assert _value(out, "p_ttest") == pytest.approx(stats.ttest_rel(an, bn).pvalue, rel=1e-10)
    assert _value(out, "p_wilcoxon") == pytest.approx(
        stats.wilcoxon(an, bn, zero_method="wilcox").pvalue, rel=1e-10
    )
    assert _value(out, "p_sign") == pytest.approx(
        stats.binomtest(w, w + lose, 0.5).pvalue, rel=1e-10
    )


def test_continuous_scores_with_tie_margin():
    rng = np.random.default_rng(1)
    a = rng.normal(size=200) + 0.2
    b = a + rng.normal(size=200) * 0.5 - 0.15
    margin = 0.1
    metric = WinRate(tie_margin=margin, num_resamples=999)
    metric.update(torch.from_numpy(a), torch.from_numpy(b))
    out = metric.compute()
    w = int(np.sum(a - b > margin))
    l_ = int(np.sum(b - a > margin))
    t = 200 - w - l_
    assert t > 0  # the margin made some ties
    assert _value(out, "win_rate") == pytest.approx((w + t / 2) / 200, abs=1e-12)
    assert (_value(out, "wins"), _value(out, "losses"), _value(out, "ties")) == (w, l_, t)
    # the t-test and Wilcoxon use the raw paired scores, not the margin-quantised outcomes
    assert _value(out, "p_ttest") == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-10)
    assert _value(out, "p_wilcoxon") == pytest.approx(
        stats.wilcoxon(a, b, zero_method="wilcox").pvalue, rel=1e-10
    )
    assert _value(out, "p_sign") == pytest.approx(stats.binomtest(w, w + l_).pvalue, rel=1e-10)


def test_confidence_interval_is_sane_and_seeded():
    a, b = _judgements(59, 168, 76)
    m1, m2, m3 = WinRate(seed=0), WinRate(seed=0), WinRate(seed=1)
    for m in (m1, m2, m3):
        m.update(a, b)
    o1, o2, o3 = m1.compute(), m2.compute(), m3.compute()
    wr, lo, hi = _value(o1, "win_rate"), _value(o1, "ci_low"), _value(o1, "ci_high")
    assert lo < wr < hi
    # independent check: the normal-approximation 95 % interval of a mean of outcomes
    outcomes = np.concatenate([np.ones(59), np.zeros(168), np.full(76, 0.5)])
    half = 1.96 * outcomes.std(ddof=1) / math.sqrt(outcomes.size)
    assert hi - lo == pytest.approx(2 * half, rel=0.15)
    assert (_value(o2, "ci_low"), _value(o2, "ci_high")) == (lo, hi)  # same seed, same CI
    assert (_value(o3, "ci_low"), _value(o3, "ci_high")) != (lo, hi)


def test_ci_does_not_depend_on_pair_order():
    a, b = _judgements(30, 50, 20, seed=0)
    perm = torch.randperm(a.numel())
    m1, m2 = WinRate(num_resamples=999), WinRate(num_resamples=999)
    m1.update(a, b)
    m2.update(a[perm], b[perm])
    o1, o2 = m1.compute(), m2.compute()
    for key in ("ci_low", "ci_high", "p_ttest", "p_wilcoxon", "win_rate"):
        assert _value(o1, key) == pytest.approx(_value(o2, key), rel=1e-12)


def test_all_ties_is_degenerate_but_defined():
    scores = torch.linspace(0, 1, 12)
    metric = WinRate(num_resamples=999)
    metric.update(scores, scores.clone())
    out = metric.compute()
    assert _value(out, "win_rate") == 0.5
    assert (_value(out, "p_ttest"), _value(out, "p_wilcoxon"), _value(out, "p_sign")) == (
        1.0,
        1.0,
        1.0,
    )
    assert (_value(out, "ci_low"), _value(out, "ci_high")) == (0.5, 0.5)  # percentile fallback


def test_single_pair_gives_nan_where_undefined():
    metric = WinRate(num_resamples=99)
    metric.update(torch.tensor([1.0]), torch.tensor([0.0]))
    out = metric.compute()
    assert _value(out, "win_rate") == 1.0
    assert math.isnan(_value(out, "p_ttest"))
    assert math.isnan(_value(out, "ci_low")) and math.isnan(_value(out, "ci_high"))
    assert _value(out, "p_sign") == pytest.approx(stats.binomtest(1, 1).pvalue)


def test_streaming_equals_one_update():
    a, b = _judgements(40, 25, 15, seed=2)
    whole, chunked = WinRate(num_resamples=999), WinRate(num_resamples=999)
    whole.update(a, b)
    for ca, cb in zip(torch.split(a, 11), torch.split(b, 11)):
        chunked.update(ca, cb)
    ow, oc = whole.compute(), chunked.compute()
    for key in ow:
        assert _value(oc, key) == pytest.approx(_value(ow, key), rel=1e-12), key


@pytest.mark.parametrize(
    ("a", "b", "exc", "match"),
    [
        (torch.zeros(3), torch.zeros(4), ValueError, "lengths 3 and 4"),
        (torch.zeros(3, 1), torch.zeros(3, 1), ValueError, r"\[n\]"),
        (torch.tensor([0.0, float("nan")]), torch.zeros(2), ValueError, "non-finite"),
        ([0.0, 1.0], torch.zeros(2), TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_names_the_metric(a, b, exc, match):
    with pytest.raises(exc, match=match) as info:
        WinRate().update(a, b)
    assert "WinRate" in str(info.value)


def test_compute_before_update_errors():
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="WinRate.*before"):
        WinRate().compute()


def test_constructor_checks():
    with pytest.raises(ValueError, match="WinRate: tie_margin"):
        WinRate(tie_margin=-1.0)
    with pytest.raises(ValueError, match="WinRate: confidence"):
        WinRate(confidence=1.5)
    assert WinRate.higher_is_better is True and WinRate.full_state_update is False
