"""Side-by-side win rate with significance tests (paper section 3.1, appendix E, tables 2-3).

Each judgement pairs model A's and model B's score for the same prompt (a rater's scores,
or the oracle judge's). A wins where `a - b > tie_margin`, loses where `b - a > tie_margin`,
else it is a tie; the win rate of A is `(W + T / 2) / (W + L + T)` (paper table 2: 59 wins,
168 losses, 76 draws give 0.320). As in appendix E the p-values come from a paired t-test
and a Wilcoxon signed-rank test on the paired scores, plus an exact sign test of W among
the W + L decided pairs; the 95 % confidence interval is a bootstrap over pairs.

The paired scores are kept as "cat" states (the tests need every pair), so the distributed
value equals the single-process one.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import numpy as np
import torch
from scipy import stats
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from suite.metrics._checks import check_finite, check_not_empty, check_rank, check_tensor

_NAME = "WinRate"
# scipy >= 1.15 names the generator `rng`; older releases (pyproject allows >= 1.10) only
# know `random_state`, which newer ones are phasing out.
_RNG_KWARG = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


def _bootstrap_ci(
    outcomes: np.ndarray, confidence: float, num_resamples: int, seed: int
) -> tuple[float, float]:
    """Bootstrap CI of the mean of per-pair outcomes (1 win, 0.5 tie, 0 loss).

    BCa first (scipy.stats.bootstrap); it is undefined when every resample gives the same
    value (all pairs alike), and then the percentile interval is used. Fewer than 2 pairs:
    (nan, nan). The outcomes are sorted first so that the interval does not depend on the
    order in which pairs arrived (or on how they were split across processes).
    """
    if outcomes.size < 2:
        return math.nan, math.nan
    data = (np.sort(outcomes),)
    interval = None
    with warnings.catch_warnings():
        # The degenerate-data warning is exactly the case the percentile fallback handles.
        warnings.simplefilter("ignore")
        for method in ("BCa", "percentile"):
            res = stats.bootstrap(
                data,
                np.mean,
                n_resamples=num_resamples,
                confidence_level=confidence,
                method=method,
                **{_RNG_KWARG: np.random.default_rng(seed)},
                batch=max(1, min(num_resamples, 2**24 // outcomes.size)),  # bound memory
            )
            interval = res.confidence_interval
            if np.isfinite(interval.low) and np.isfinite(interval.high):
                break
    return float(interval.low), float(interval.high)


class WinRate(Metric):
    """Win rate of model A over model B from paired scores, with p-values and a CI.

    Args:
        tie_margin: pairs whose score difference is within +-tie_margin are ties (>= 0).
        confidence: level of the bootstrap confidence interval (default 0.95).
        num_resamples: bootstrap resamples (default 9999).
        seed: seed of the bootstrap's generator (default 0): the CI is deterministic.

    `update(scores_a [n], scores_b [n])`: the two models' scores on the same n prompts.
    `compute()` returns a dict of 0-dim float64 tensors:
    `win_rate`, `wins`, `losses`, `ties`, `n`, `p_ttest` (scipy `ttest_rel(a, b)`),
    `p_wilcoxon` (scipy `wilcoxon(a, b, zero_method="wilcox")`), `p_sign` (exact
    two-sided `binomtest(W, W + L, 0.5)`), `ci_low`, `ci_high`.

    Degenerate cases never raise: when every difference a - b is exactly 0 there is no
    evidence of any difference and all three p-values are 1.0 (scipy's t-test would say
    nan); when W + L = 0 (all ties by the margin) `p_sign` is 1.0; any other p-value scipy
    leaves undefined (fewer than 2 pairs for the t-test, constant nonzero differences) is
    reported as scipy gives it (nan or 0); the CI is (nan, nan) with fewer than 2 pairs.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(
        self,
        tie_margin: float = 0.0,
        confidence: float = 0.95,
        num_resamples: int = 9999,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (
            not isinstance(tie_margin, int | float)
            or not math.isfinite(tie_margin)
            or tie_margin < 0
        ):
            raise ValueError(
                f"{_NAME}: tie_margin must be a finite number >= 0, got {tie_margin!r}"
            )
        if not isinstance(confidence, float) or not 0.0 < confidence < 1.0:
            raise ValueError(f"{_NAME}: confidence must be a float in (0, 1), got {confidence!r}")
        if (
            isinstance(num_resamples, bool)
            or not isinstance(num_resamples, int)
            or num_resamples < 1
        ):
            raise ValueError(f"{_NAME}: num_resamples must be an int >= 1, got {num_resamples!r}")
        self.tie_margin = float(tie_margin)
        self.confidence = confidence
        self.num_resamples = num_resamples
        self.seed = seed
        self.add_state("scores_a", [], dist_reduce_fx="cat")
        self.add_state("scores_b", [], dist_reduce_fx="cat")

    def update(self, scores_a: torch.Tensor, scores_b: torch.Tensor) -> None:
        """Add n paired judgements: `scores_a [n]` and `scores_b [n]` on the same prompts."""
        where = f"{_NAME}.update"
        a = check_tensor(where, "scores_a", scores_a)
        b = check_tensor(where, "scores_b", scores_b)
        check_rank(where, "scores_a", a, 1, "[n]")
        check_rank(where, "scores_b", b, 1, "[n]")
        if a.shape != b.shape:
            raise ValueError(
                f"{where}: scores_a and scores_b must pair up, got lengths {a.shape[0]} and "
                f"{b.shape[0]}"
            )
        check_finite(where, "scores_a", a)
        check_finite(where, "scores_b", b)
        self.scores_a.append(a.detach().to(self.device, torch.float64))
        self.scores_b.append(b.detach().to(self.device, torch.float64))

    def compute(self) -> dict[str, torch.Tensor]:
        """Counts, win rate, p-values and CI over every pair seen (see the class doc)."""
        # After a distributed sync the "cat" states are tensors; before, lists of tensors.
        empty = isinstance(self.scores_a, list) and len(self.scores_a) == 0
        a_t = torch.zeros(0) if empty else dim_zero_cat(self.scores_a)
        check_not_empty(_NAME, a_t.numel())
        a = a_t.double().cpu().numpy()  # [n]
        b = dim_zero_cat(self.scores_b).double().cpu().numpy()  # [n]
        diff = a - b
        wins = int((diff > self.tie_margin).sum())
        losses = int((-diff > self.tie_margin).sum())
        n = diff.size
        ties = n - wins - losses
        outcomes = np.where(
            diff > self.tie_margin, 1.0, np.where(-diff > self.tie_margin, 0.0, 0.5)
        )
        win_rate = float(outcomes.mean())  # = (W + T / 2) / (W + L + T)

        with warnings.catch_warnings():
            # Degenerate inputs (documented above) make scipy warn; they are handled here.
            warnings.simplefilter("ignore")
            if not np.any(diff != 0):
                p_ttest = p_wilcoxon = 1.0
            else:
                p_ttest = float(stats.ttest_rel(a, b).pvalue)
                p_wilcoxon = float(stats.wilcoxon(a, b, zero_method="wilcox").pvalue)
            p_sign = (
                1.0 if wins + losses == 0 else float(stats.binomtest(wins, wins + losses).pvalue)
            )
        ci_low, ci_high = _bootstrap_ci(outcomes, self.confidence, self.num_resamples, self.seed)

        values = {
            "win_rate": win_rate,
            "wins": wins,
            "losses": losses,
            "ties": ties,
            "n": n,
            "p_ttest": p_ttest,
            "p_wilcoxon": p_wilcoxon,
            "p_sign": p_sign,
            "ci_low": ci_low,
            "ci_high": ci_high,
        }
        return {k: torch.tensor(float(v), dtype=torch.float64) for k, v in values.items()}

    def plot(self, val: Any = None, ax: Any = None) -> Any:
        """Plot the win rate of one or several computed results."""
        val = val if val is not None else self.compute()
        if isinstance(val, dict):
            val = val["win_rate"]
        elif isinstance(val, list | tuple):
            val = [v["win_rate"] if isinstance(v, dict) else v for v in val]
        return self._plot(val, ax)
