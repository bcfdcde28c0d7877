"""Frechet Audio Distance metric (paper appendix G; DESIGN.md section 4).

FAD fits a Gaussian to the embeddings of reference ("real") audio and one to the embeddings
of generated ("fake") audio and reports their Frechet distance
`|mu_r - mu_g|^2 + tr(S_r) + tr(S_g) - 2 tr((S_r^1/2 S_g S_r^1/2)^1/2)`
(`suite.metrics.functional.frechet_distance`), with unbiased covariances (divisor n - 1).

States follow torchmetrics' FID layout: per side a float64 sum `[D]`, sum of outer
products `[D, D]` and count, all reduced with "sum", so memory is O(D^2) whatever the
number of samples, and the distributed value equals the single-process one. FAD is biased
by the sample count (Gui et al., 2024), so `compute()` records the counts it used
(`n_real`, `n_fake`) and `fad_inf()` extrapolates to infinitely many generated samples as
fadtk does; that needs the generated features themselves, kept only with
`keep_features=True` (O(n D) memory).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from suite.metrics._checks import check_finite, check_rank, check_tensor
from suite.metrics.functional import frechet_distance, gaussian_from_sums

_NAME = "FrechetAudioDistance"


class FadInf(NamedTuple):
    """Result of `FrechetAudioDistance.fad_inf`: the fit `FAD(n) = value + slope / n`."""

    value: float  # the intercept: FAD extrapolated to n -> infinity
    slope: float
    r_squared: float  # of the linear fit in 1 / n; near 1 when the 1 / n model holds
    sizes: list[int]  # the generated-subset sizes n used
    scores: list[float]  # FAD of each subset against the full reference statistics


class FrechetAudioDistance(Metric):
    """Streaming FAD between reference and generated embeddings `[n, D]`.

    Args:
        num_features: D, the embedding width every update must have.
        reset_real_features: if False, `reset()` keeps the reference statistics so that one
            reference set can be reused across evaluations (only the generated side resets).
        keep_features: also keep every generated feature row (a "cat" state, O(n D)
            memory) so that `fad_inf()` can subsample them. Off by default.

    `compute()` returns a 0-dim float64 tensor and sets `n_real` / `n_fake` to the sample
    counts it used (summed over processes); both are None before the first compute.
    Fewer than 2 samples on a side (no unbiased covariance) is a ValueError.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False
    plot_lower_bound = 0.0

    real_sum: torch.Tensor
    real_outer: torch.Tensor
    real_count: torch.Tensor
    fake_sum: torch.Tensor
    fake_outer: torch.Tensor
    fake_count: torch.Tensor

    def __init__(
        self,
        num_features: int,
        reset_real_features: bool = True,
        keep_features: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"{_NAME}: num_features must be an int >= 1, got {num_features!r}")
        for flag_name, flag in (
            ("reset_real_features", reset_real_features),
            ("keep_features", keep_features),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{_NAME}: {flag_name} must be a bool, got {flag!r}")
        self.num_features = num_features
        self.reset_real_features = reset_real_features
        self.keep_features = keep_features
        d = num_features
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros(d, dtype=torch.float64), "sum")
            self.add_state(f"{side}_outer", torch.zeros(d, d, dtype=torch.float64), "sum")
            self.add_state(f"{side}_count", torch.zeros((), dtype=torch.long), "sum")
        if keep_features:
            self.add_state("fake_features", [], dist_reduce_fx="cat")
        self.n_real: int | None = None
        self.n_fake: int | None = None

    # ------------------------------------------------------------------ update / compute

    def update(self, features: torch.Tensor, real: bool) -> None:
        """Add `features [n, D]` to the reference side (`real=True`) or the generated side."""
        if not isinstance(real, bool):
            raise TypeError(
                f"{_NAME}.update: `real` must be a bool (True for reference audio), got "
                f"{type(real).__name__}"
            )
        x = check_tensor(f"{_NAME}.update", "features", features)
        check_rank(f"{_NAME}.update", "features", x, 2, "[n, D]")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{_NAME}.update: features have D = {x.shape[1]}, expected num_features = "
                f"{self.num_features} (shape {tuple(x.shape)})"
            )
        check_finite(f"{_NAME}.update", "features", x)
        x = x.detach().to(device=self.real_sum.device, dtype=torch.float64)  # [n, D]
        side = "real" if real else "fake"
        getattr(self, f"{side}_sum").add_(x.sum(dim=0))
        getattr(self, f"{side}_outer").add_(x.T @ x)
        getattr(self, f"{side}_count").add_(x.shape[0])
        if self.keep_features and not real:
            self.fake_features.append(x)

    def forward(self, features: torch.Tensor, real: bool) -> None:
        """Same as `update`: FAD of one batch means nothing, so no batch value is returned.

        (torchmetrics' default forward resets, updates and re-adds the states; with
        `reset_real_features=False` that would count the kept reference side twice.)
        """
        self.update(features, real=real)

    def _check_counts(self) -> tuple[int, int]:
        n_real, n_fake = int(self.real_count), int(self.fake_count)
        if n_real < 2 or n_fake < 2:
            raise ValueError(
                f"{_NAME}: needs at least 2 reference and 2 generated samples (unbiased "
                f"covariances), got n_real = {n_real}, n_fake = {n_fake}; call update() with "
                f"real=True and real=False first"
            )
        return n_real, n_fake

    def compute(self) -> torch.Tensor:
        """FAD between the two Gaussians, a 0-dim float64 tensor; sets `n_real`, `n_fake`."""
        n_real, n_fake = self._check_counts()
        mu_r, sigma_r = gaussian_from_sums(self.real_sum, self.real_outer, n_real)
        mu_g, sigma_g = gaussian_from_sums(self.fake_sum, self.fake_outer, n_fake)
        self.n_real, self.n_fake = n_real, n_fake
        return frechet_distance(mu_r, sigma_r, mu_g, sigma_g)

    def reset(self) -> None:
        """Reset the states; the reference side survives if `reset_real_features=False`."""
        kept = {}
        if not self.reset_real_features:
            kept = {k: getattr(self, k).clone() for k in ("real_sum", "real_outer", "real_count")}
        super().reset()
        for key, value in kept.items():
            setattr(self, key, value)
        self.n_real = self.n_fake = None

    def plot(self, val: Any = None, ax: Any = None) -> Any:
        """Plot one or several computed values (torchmetrics' standard plot)."""
        return self._plot(val, ax)

    # ------------------------------------------------------------------ FAD-infinity

    def fad_inf(self, num_steps: int = 25, min_n: int | None = None, seed: int = 0) -> FadInf:
        """FAD extrapolated to infinitely many generated samples (as in fadtk).

        For `num_steps` subset sizes n evenly spaced from `min_n` (default
        `min(500, n_fake // 2)`, at least 2) to all n_fake generated samples, FAD of a
        random size-n subset (without replacement) against the full reference statistics;
        then a least-squares line FAD(n) = value + slope / n, whose intercept is FAD-inf.
        The subsets are drawn by `numpy.random.default_rng(seed)` from the generated rows
        in a canonical (lexicographic) order, so the result depends on the seed and the
        data, not on the batch order or the split across processes.
        Requires `keep_features=True`; synchronises states across processes like compute().
        """
        if not self.keep_features:
            raise ValueError(
                f"{_NAME}.fad_inf: the generated features were not kept; construct the "
                f"metric with keep_features=True to use fad_inf"
            )
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
            raise ValueError(f"{_NAME}.fad_inf: num_steps must be an int >= 2, got {num_steps!r}")
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            should_sync=self._to_sync,
            should_unsync=self._should_unsync,
        ):
            n_real, n_fake = self._check_counts()
            mu_r, sigma_r = gaussian_from_sums(self.real_sum, self.real_outer, n_real)
            feats = dim_zero_cat(self.fake_features).double().cpu().numpy()  # [n_fake, D]
        lo = max(2, min(500, n_fake // 2)) if min_n is None else min_n
        if isinstance(lo, bool) or not isinstance(lo, int) or not 2 <= lo < n_fake:
            raise ValueError(
                f"{_NAME}.fad_inf: min_n must be an int in [2, n_fake) = [2, {n_fake}), got {lo!r}"
            )
        sizes = sorted({int(round(n)) for n in np.linspace(lo, n_fake, num_steps)})
        # Lexicographic row order (last key of lexsort is primary, hence the reversal).
        feats = feats[np.lexsort(feats.T[::-1])]
        rng = np.random.default_rng(seed)
        scores = []
        for n in sizes:
            sub = torch.from_numpy(feats[rng.choice(n_fake, size=n, replace=False)])  # [n, D]
            mu_g = sub.mean(dim=0)
            sigma_g = torch.cov(sub.T)  # [D, D], divisor n - 1
            scores.append(float(frechet_distance(mu_r.cpu(), sigma_r.cpu(), mu_g, sigma_g)))
        inv_n = 1.0 / np.asarray(sizes, dtype=np.float64)
        design = np.stack([np.ones_like(inv_n), inv_n], axis=1)  # [steps, 2]
        y = np.asarray(scores)
        (intercept, slope), *_ = np.linalg.lstsq(design, y, rcond=None)
        resid = y - design @ np.array([intercept, slope])
        spread = float(((y - y.mean()) ** 2).sum())
        r_squared = 1.0 - float((resid**2).sum()) / spread if spread > 0 else 1.0
        return FadInf(float(intercept), float(slope), r_squared, sizes, scores)
