"""FrechetAudioDistance: numpy/scipy reference, streaming, counts, reset, fad_inf, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from suite.metrics import FrechetAudioDistance


def _np_fad(real: np.ndarray, fake: np.ndarray) -> float:
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real.T), np.cov(fake.T)  # unbiased, n - 1
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    real = torch.randn(60, 5) @ torch.randn(5, 5) * 0.5 + 1.0  # [n, D], correlated
    fake = torch.randn(45, 5) * torch.tensor([1.0, 2.0, 0.5, 1.0, 1.5]) + 0.3
    return real, fake


def test_fad_matches_scipy_reference(data):
    real, fake = data
    metric = FrechetAudioDistance(5)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    value = metric.compute()
    assert value.dtype == torch.float64 and value.dim() == 0
    assert value.item() == pytest.approx(
        _np_fad(real.double().numpy(), fake.double().numpy()), rel=1e-8
    )
    assert (metric.n_real, metric.n_fake) == (60, 45)
    assert metric.higher_is_better is False and metric.plot_lower_bound == 0.0
    assert metric.full_state_update is False and metric.is_differentiable is False


def test_fad_identical_sets_is_zero(data):
    real, _ = data
    metric = FrechetAudioDistance(5)
    metric.update(real, real=True)
    metric.update(real.clone(), real=False)
    assert metric.compute().item() == pytest.approx(0.0, abs=1e-9)


def test_fad_streaming_equals_one_update(data):
    real, fake = data
    whole = FrechetAudioDistance(5)
    whole.update(real, real=True)
    whole.update(fake, real=False)
    chunked = FrechetAudioDistance(5)
    for r, f in zip(torch.split(real, 17), torch.split(fake, 13)):  # interleaved, uneven
        chunked.update(f, real=False)
        chunked.update(r, real=True)
    for r in torch.split(real, 17)[len(torch.split(fake, 13)) :]:
        chunked.update(r, real=True)
    assert chunked.compute().item() == pytest.approx(whole.compute().item(), rel=1e-10)
    assert (chunked.n_real, chunked.n_fake) == (60, 45)


def test_fad_reset_real_features(data):
    real, fake = data
    keep = FrechetAudioDistance(5, reset_real_features=False)
    keep.update(real, real=True)
    keep.update(fake, real=False)
    first = keep.compute().item()
    keep.reset()
    assert keep.n_real is None and keep.n_fake is None
    keep.update(fake, real=False)  # reference statistics survived the reset
    assert keep.compute().item() == pytest.approx(first, rel=1e-12)

    drop = FrechetAudioDistance(5)
    drop.update(real, real=True)
    drop.update(fake, real=False)
    drop.reset()
    drop.update(fake, real=False)
    with pytest.raises(ValueError, match="n_real = 0"):
        drop.compute()


def test_fad_forward_only_accumulates(data):
    real, fake = data
    via_update = FrechetAudioDistance(5, reset_real_features=False)
    via_update.update(real, real=True)
    via_update.update(fake, real=False)
    via_forward = FrechetAudioDistance(5, reset_real_features=False)
    assert via_forward(real, real=True) is None
    assert via_forward(fake, real=False) is None
    assert via_forward.compute().item() == pytest.approx(via_update.compute().item(), rel=1e-12)
    assert via_forward.n_real == 60


def test_fad_state_memory_is_independent_of_n():
    def state_bytes(m: FrechetAudioDistance) -> int:
        total = 0
        for key in m._defaults:
            val = getattr(m, key)
            vals = val if isinstance(val, list) else [val]
            total += sum(v.numel() * v.element_size() for v in vals)
        return total

    small, large = FrechetAudioDistance(8), FrechetAudioDistance(8)
    for m, n in ((small, 10), (large, 2000)):
        m.update(torch.randn(n, 8), real=True)
        m.update(torch.randn(n, 8), real=False)
    assert state_bytes(small) == state_bytes(large) == 2 * 8 * (8 * 8 + 8) + 2 * 8
    kept = FrechetAudioDistance(8, keep_features=True)
    kept.update(torch.randn(2000, 8), real=False)
    assert state_bytes(kept) > state_bytes(large) + 2000 * 8 * 8 - 1  # O(n D) only when opted in


def test_fad_needs_two_samples_per_side():
    metric = FrechetAudioDistance(3)
    metric.update(torch.randn(5, 3), real=True)
    metric.update(torch.randn(1, 3), real=False)
    with pytest.raises(ValueError, match="FrechetAudioDistance.*n_real = 5, n_fake = 1"):
        metric.compute()


def test_fad_compute_before_update_errors():
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="FrechetAudioDistance"):
        FrechetAudioDistance(3).compute()


@pytest.mark.parametrize(
    ("features", "real", "exc", "match"),
    [
        (torch.randn(4, 2), True, ValueError, "num_features = 3"),
        (torch.randn(4, 3, 1), True, ValueError, r"\[n, D\]"),
        (torch.tensor([[0.0, float("nan"), 1.0]]), False, ValueError, "non-finite"),
        (torch.ones(4, 3, dtype=torch.int64), True, TypeError, "floating"),
        (torch.randn(4, 3), 1, TypeError, "`real` must be a bool"),
    ],
)
def test_fad_bad_input(features, real, exc, match):
    with pytest.raises(exc, match=match) as info:
        FrechetAudioDistance(3).update(features, real=real)
    assert "FrechetAudioDistance" in str(info.value)


def test_fad_constructor_checks():
    with pytest.raises(ValueError, match="FrechetAudioDistance: num_features"):
        FrechetAudioDistance(0)
    with pytest.raises(TypeError, match="keep_features"):
        FrechetAudioDistance(3, keep_features="yes")


# ----------------------------------------------------------------------------- FAD-infinity


def _fad_inf_metric(real: torch.Tensor, fake_chunks: list[torch.Tensor]) -> FrechetAudioDistance:
    metric = FrechetAudioDistance(real.shape[1], keep_features=True)
    metric.update(real, real=True)
    for chunk in fake_chunks:
        metric.update(chunk, real=False)
    return metric


def test_fad_inf_requires_opt_in(data):
    real, fake = data
    metric = FrechetAudioDistance(5)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with pytest.raises(ValueError, match="keep_features=True"):
        metric.fad_inf()


def test_fad_inf_fit_and_full_size_point(data):
    real, fake = data
    metric = _fad_inf_metric(real, [fake])
    res = metric.fad_inf(num_steps=6, min_n=10)
    assert res.sizes[0] == 10 and res.sizes[-1] == 45 and len(res.sizes) == 6
    # the largest subset is the whole generated set: FAD equals the plain FAD
    assert res.scores[-1] == pytest.approx(
        _np_fad(real.double().numpy(), fake.double().numpy()), rel=1e-8
    )
    slope, intercept = np.polyfit(1.0 / np.asarray(res.sizes, float), res.scores, 1)
    assert res.value == pytest.approx(intercept, rel=1e-9, abs=1e-12)
    assert res.slope == pytest.approx(slope, rel=1e-9)


def test_fad_inf_removes_small_sample_bias():
    # Same distribution on both sides: the true FAD is 0, FAD at n = 400 in D = 16 is biased
    # upward by O(D / n); the 1 / n extrapolation should land far closer to 0.
    real = torch.randn(20000, 16)
    fake = torch.randn(400, 16)
    metric = _fad_inf_metric(real, [fake])
    biased = metric.compute().item()
    res = metric.fad_inf(min_n=50)
    assert biased > 0.1
    assert abs(res.value) < 0.3 * biased
    assert res.r_squared > 0.9


def test_fad_inf_is_independent_of_update_order(data):
    real, fake = data
    a = _fad_inf_metric(real, [fake]).fad_inf(num_steps=5, min_n=10, seed=3)
    perm = torch.randperm(fake.shape[0])
    b = _fad_inf_metric(real, list(torch.split(fake[perm], 7))).fad_inf(
        num_steps=5, min_n=10, seed=3
    )
    assert a.scores == pytest.approx(b.scores, rel=1e-10)
    assert a.value == pytest.approx(b.value, rel=1e-9)


def test_fad_inf_bad_min_n(data):
    real, fake = data
    metric = _fad_inf_metric(real, [fake])
    with pytest.raises(ValueError, match="fad_inf: min_n"):
        metric.fad_inf(min_n=45)
