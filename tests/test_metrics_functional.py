"""suite.metrics.functional against independent numpy / scipy references and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from suite.metrics import functional as F

# ----------------------------------------------------------------------------- references


def _np_cos(x: np.ndarray, y: np.ndarray) -> float:
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def _np_pairwise_diversity(e: np.ndarray) -> float:
    n = len(e)
    vals = [1 - _np_cos(e[i], e[j]) for i in range(n) for j in range(n) if i != j]
    return float(np.mean(vals))


def _np_upper_bound(e: np.ndarray) -> float:
    b, n, _ = e.shape
    vals = [
        1 - _np_cos(e[p, i], e[q, j])
        for p in range(b)
        for q in range(b)
        if p != q
        for i in range(n)
        for j in range(n)
    ]
    return float(np.mean(vals))


def _np_vendi(e: np.ndarray, q: float) -> float:
    """Vendi straight from the definition: full N x N cosine kernel, numpy eigvalsh."""
    u = e / np.linalg.norm(e, axis=1, keepdims=True)
    k = u @ u.T
    lam = np.clip(np.linalg.eigvalsh(k / len(e)), 0, None)
    lam = lam[lam > 1e-12]
    lam = lam / lam.sum()
    if q == 1:
        h = -np.sum(lam * np.log(lam))
    elif np.isinf(q):
        h = -np.log(lam.max())
    else:
        h = np.log(np.sum(lam**q)) / (1 - q)
    return float(np.exp(h))


def _np_frechet(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(
        np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real)
    )


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


# ----------------------------------------------------------------------------- diversity


def test_pairwise_diversity_matches_bruteforce():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(5, 7))
    assert F.pairwise_diversity(_t(e)).item() == pytest.approx(_np_pairwise_diversity(e), abs=1e-12)
    # float32 input gives the same value up to float32 rounding of the input
    assert F.pairwise_diversity(_t(e).float()).item() == pytest.approx(
        _np_pairwise_diversity(e), abs=1e-6
    )


def test_pairwise_diversity_closed_forms():
    same = torch.tensor([[1.0, 2.0], [2.0, 4.0], [0.5, 1.0]])  # all parallel
    assert F.pairwise_diversity(same).item() == pytest.approx(0.0, abs=1e-12)
    opposite = torch.tensor([[1.0, 0.0], [-3.0, 0.0]])
    assert F.pairwise_diversity(opposite).item() == pytest.approx(2.0, abs=1e-12)
    assert F.pairwise_diversity(torch.eye(4)).item() == pytest.approx(1.0, abs=1e-12)


def test_diversity_upper_bound_matches_bruteforce():
    rng = np.random.default_rng(2)
    e = rng.normal(size=(4, 3, 6))
    assert F.diversity_upper_bound(_t(e)).item() == pytest.approx(_np_upper_bound(e), abs=1e-12)


def test_diversity_upper_bound_needs_two_prompts():
    with pytest.raises(ValueError, match="diversity_upper_bound.*B >= 2"):
        F.diversity_upper_bound(torch.randn(1, 4, 3))


@pytest.mark.parametrize(
    ("bad", "exc", "match"),
    [
        (torch.randn(3), ValueError, r"\[N, D\]"),
        (torch.randn(1, 4), ValueError, "N >= 2"),
        (torch.tensor([[1.0, float("nan")], [1.0, 2.0]]), ValueError, "non-finite"),
        (torch.tensor([[1.0, float("inf")], [1.0, 2.0]]), ValueError, "non-finite"),
        (torch.tensor([[0.0, 0.0], [1.0, 2.0]]), ValueError, "zero norm"),
        (torch.ones(3, 2, dtype=torch.long), TypeError, "floating"),
        (np.ones((3, 2)), TypeError, "torch.Tensor"),
    ],
)
def test_functional_bad_input_names_the_function(bad, exc, match):
    with pytest.raises(exc, match=match) as info:
        F.pairwise_diversity(bad)
    assert "pairwise_diversity" in str(info.value)
    with pytest.raises(exc, match=match) as info:
        F.vendi_score(bad)
    assert "vendi_score" in str(info.value)


# ----------------------------------------------------------------------------- Vendi


@pytest.mark.parametrize("q", [0.5, 1.0, 2.0, 3.0, math.inf])
def test_vendi_identical_is_one_and_orthogonal_is_n(q):
    identical = torch.tensor([[0.3, -1.2, 2.0]]).repeat(6, 1)
    assert F.vendi_score(identical, q).item() == pytest.approx(1.0, abs=1e-9)
    # orthogonal rows of a random rotation, scaled differently (cosine ignores scale)
    rot, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    orth = rot * torch.tensor([[1.0], [2.0], [0.1], [5.0], [3.0]], dtype=torch.float64)
    assert F.vendi_score(orth, q).item() == pytest.approx(5.0, abs=1e-9)


@pytest.mark.parametrize("q", [0.5, 1.0, 2.0, math.inf])
@pytest.mark.parametrize(("n", "d"), [(8, 16), (12, 4)])  # kernel side and dual (D x D) side
def test_vendi_matches_numpy_definition(q, n, d):
    rng = np.random.default_rng(3)
    e = rng.normal(size=(n, d)) + 0.5  # shared offset: partially similar embeddings
    assert F.vendi_score(_t(e), q).item() == pytest.approx(_np_vendi(e, q), rel=1e-9)


def test_vendi_q0_is_kernel_rank():
    rng = np.random.default_rng(4)
    basis = rng.normal(size=(3, 10))
    e = rng.normal(size=(9, 3)) @ basis  # rank 3
    assert F.vendi_score(_t(e), 0.0).item() == pytest.approx(3.0, abs=1e-9)
    assert np.linalg.matrix_rank(e) == 3


def test_vendi_order_monotone_in_q():
    e = torch.randn(10, 6, dtype=torch.float64) + 0.3
    vals = [F.vendi_score(e, q).item() for q in (0.0, 0.5, 1.0, 2.0, math.inf)]
    assert all(a >= b - 1e-12 for a, b in zip(vals, vals[1:]))  # Renyi entropy falls with q
    assert vals[0] > vals[-1]


@pytest.mark.parametrize("q", [-1.0, float("nan")])
def test_vendi_rejects_bad_order(q):
    with pytest.raises(ValueError, match="vendi_score: q"):
        F.vendi_score(torch.randn(4, 3), q)


def test_vendi_per_group_equals_each_group():
    e = torch.randn(3, 5, 4, dtype=torch.float64)
    per = F.vendi_score_per_group(e, 2.0)
    for b in range(3):
        assert per[b].item() == pytest.approx(_np_vendi(e[b].numpy(), 2.0), rel=1e-9)


# ----------------------------------------------------------------------------- Frechet


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.5 * np.eye(d)  # well conditioned


def test_frechet_matches_scipy_sqrtm():
    rng = np.random.default_rng(5)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    got = F.frechet_distance(_t(mu1), _t(s1), _t(mu2), _t(s2)).item()
    assert got == pytest.approx(_np_frechet(mu1, s1, mu2, s2), rel=1e-9)


def test_frechet_identical_statistics_is_zero():
    rng = np.random.default_rng(6)
    mu, s = _t(rng.normal(size=5)), _t(_random_spd(rng, 5))
    assert F.frechet_distance(mu, s, mu, s).item() == pytest.approx(0.0, abs=1e-10)


def test_frechet_diagonal_gaussians_closed_form():
    mu1 = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    mu2 = torch.tensor([1.0, 1.0, 0.5], dtype=torch.float64)
    v1 = torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64)
    v2 = torch.tensor([9.0, 1.0, 0.25], dtype=torch.float64)
    # For diagonal covariances: |mu1 - mu2|^2 + sum (sqrt v1 - sqrt v2)^2
    expected = float(((mu1 - mu2) ** 2).sum() + ((v1.sqrt() - v2.sqrt()) ** 2).sum())
    got = F.frechet_distance(mu1, torch.diag(v1), mu2, torch.diag(v2)).item()
    assert got == pytest.approx(expected, rel=1e-12)


def test_frechet_singular_covariance_is_finite():
    # rank-deficient covariances (fewer samples than dimensions) are where general sqrtm fails
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
    got = F.frechet_distance(_t(x.mean(0)), _t(np.cov(x.T)), _t(y.mean(0)), _t(np.cov(y.T)))
    assert torch.isfinite(got) and got.item() >= 0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.zeros(3), torch.eye(2), torch.zeros(3), torch.eye(3)), "sigma1 must have shape"),
        ((torch.zeros(3), torch.eye(3), torch.zeros(2), torch.eye(2)), "differ in dimension"),
        ((torch.zeros(3), -torch.eye(3), torch.zeros(3), torch.eye(3)), "positive semi-definite"),
        (
            (torch.zeros(2), torch.tensor([[1.0, 0.9], [0.0, 1.0]]), torch.zeros(2), torch.eye(2)),
            "not symmetric",
        ),
        (
            (torch.full((2,), float("nan")), torch.eye(2), torch.zeros(2), torch.eye(2)),
            "non-finite",
        ),
        (
            (torch.zeros(2, 1), torch.eye(2), torch.zeros(2), torch.eye(2)),
            r"mu1 must have shape \[D\]",
        ),
    ],
)
def test_frechet_bad_input(args, match):
    with pytest.raises(ValueError, match=f"frechet_distance.*{match}|{match}") as info:
        F.frechet_distance(*args)
    assert "frechet_distance" in str(info.value)


def test_gaussian_from_sums_matches_numpy():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(20, 4)) * 3 + 10
    mu, sigma = F.gaussian_from_sums(_t(x.sum(0)), _t(x.T @ x), 20)
    np.testing.assert_allclose(mu.numpy(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x.T), rtol=1e-9, atol=1e-10)
