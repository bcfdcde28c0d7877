"""Stateless formulas behind the suite's metrics (paper section 3.1, appendices C, D.4, G).

- `pairwise_diversity`: mean `1 - cos(E(y_i), E(y_j))` over the ordered pairs i != j of the
  N generations of one prompt (the diversity reward of eq. 3 / appendix A, averaged).
- `diversity_upper_bound`: the same mean over pairs of generations of *different* prompts
  (the "upper bound" line of the paper's figure 2).
- `vendi_score`: Friedman and Dieng's Vendi score (appendix D.4),
  `exp(H_q(eigenvalues of K / N))` with K the cosine kernel, in float64.
- `frechet_distance`: the Frechet distance between two Gaussians (FAD, appendix G),
  `|mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1^1/2 S_2 S_1^1/2)^1/2)`, with the matrix
  square roots taken by symmetric eigen-solves (stable where a general `sqrtm` is not).

Everything is computed in float64 and returned as a 0-dim float64 tensor. The batched
helpers (`*_per_group`) are what the streaming metrics call on `[B, N, D]` inputs.
"""

from __future__ import annotations

import math

import torch

from suite.metrics._checks import check_embeddings, check_finite, check_tensor


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm, in float64 (the cosine kernel is their Gram matrix)."""
    x = x.double()
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True)


# --------------------------------------------------------------------------- pairwise diversity


def pairwise_diversity_per_group(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean `1 - cos` over ordered pairs i != j within each group: `[B, N, D] -> [B]`."""
    x = check_embeddings("pairwise_diversity", embeddings, rank=3, min_generations=2)
    n = x.shape[1]
    u = _unit_rows(x)  # [B, N, D]
    gram = u @ u.transpose(1, 2)  # [B, N, N], cosines
    # The diagonal is cos(y, y) = 1 (up to rounding); drop it rather than subtract N, so
    # rounding on the diagonal cannot leak into the off-diagonal mean.
    off_diag = gram.sum(dim=(1, 2)) - torch.diagonal(gram, dim1=1, dim2=2).sum(dim=1)  # [B]
    return 1.0 - off_diag / (n * (n - 1))


def pairwise_diversity(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean `1 - cos(e_i, e_j)` over the ordered pairs i != j of `embeddings [N, D]`, N >= 2."""
    x = check_embeddings("pairwise_diversity", embeddings, rank=2, min_generations=2)
    return pairwise_diversity_per_group(x.unsqueeze(0))[0]


def diversity_upper_bound(embeddings: torch.Tensor) -> torch.Tensor:
    """Mean `1 - cos` over pairs of generations of different prompts, `[B, N, D]`, B >= 2.

    The paper's figure 2 "upper bound": how far apart generations are when they do not
    even share a prompt. Uses sums instead of the full `[BN, BN]` kernel, so it costs
    O(B N D): sum over all pairs of cosines = |sum of unit rows|^2, and the same-prompt
    part is the sum over prompts of |sum of that prompt's unit rows|^2.
    """
    x = check_embeddings("diversity_upper_bound", embeddings, rank=3, min_generations=1)
    b, n, _ = x.shape
    if b < 2:
        raise ValueError(
            f"diversity_upper_bound: needs B >= 2 prompts to pair generations of different "
            f"prompts, got embeddings shape {tuple(x.shape)}"
        )
    u = _unit_rows(x)  # [B, N, D]
    all_pairs = torch.linalg.vector_norm(u.sum(dim=(0, 1))) ** 2
    same_prompt = (torch.linalg.vector_norm(u.sum(dim=1), dim=-1) ** 2).sum()
    num_cross = (b * n) ** 2 - b * n * n
    return 1.0 - (all_pairs - same_prompt) / num_cross


# --------------------------------------------------------------------------- Vendi score


def check_vendi_order(name: str, q: float) -> float:
    """The Renyi order q as a float in [0, inf], or ValueError naming `name`."""
    if isinstance(q, bool) or not isinstance(q, int | float):
        raise TypeError(f"{name}: q must be a real number, got {type(q).__name__}")
    q = float(q)
    if math.isnan(q) or q < 0:
        raise ValueError(f"{name}: q must be in [0, inf] (Renyi order), got {q}")
    return q


def kernel_eigenvalues(embeddings: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of `K / N`, K the cosine kernel of each group: `[B, N, D] -> [B, min(N, D)]`.

    Dual trick: with U the unit rows, `K / N = U U^T / N` `[N, N]` and `U^T U / N` `[D, D]`
    share their non-zero eigenvalues, so the eigen-solve runs on the smaller side. The
    missing eigenvalues are exact zeros, which add nothing to any Renyi entropy (0 log 0 = 0,
    0^q = 0) and do not count towards the rank (q = 0).
    """
    _, n, d = embeddings.shape
    u = _unit_rows(embeddings)  # [B, N, D]
    if n <= d:
        small = u @ u.transpose(1, 2)  # [B, N, N]
    else:
        small = u.transpose(1, 2) @ u  # [B, D, D]
    return torch.linalg.eigvalsh(small / n)  # [B, min(N, D)], ascending


def renyi_entropy(eigenvalues: torch.Tensor, q: float, size: int) -> torch.Tensor:
    """Renyi entropy of order q of each row of `eigenvalues [B, M]` (a spectrum of K / N).

    Negative eigenvalues (rounding) are clamped at 0, eigenvalues below the usual rank
    tolerance `max * size * eps` (`size` = max(N, D), as numpy's `matrix_rank`) are zeroed
    so that rounding noise cannot count as diversity, and the rest renormalised to sum 1.
    q = 1: Shannon; q = inf: `-log max p`; q = 0: `log rank`; other q: `log(sum p^q) / (1 - q)`.
    """
    p = eigenvalues.double().clamp_min(0.0)  # [B, M]
    tol = p.amax(dim=-1, keepdim=True) * size * torch.finfo(torch.float64).eps
    p = torch.where(p > tol, p, torch.zeros_like(p))
    p = p / p.sum(dim=-1, keepdim=True)
    positive = p > 0
    if q == 1.0:
        plogp = torch.where(positive, p * torch.log(torch.where(positive, p, 1.0)), 0.0)
        return -plogp.sum(dim=-1)
    if math.isinf(q):
        return -torch.log(p.amax(dim=-1))
    if q == 0.0:
        return torch.log(positive.sum(dim=-1).double())
    power = torch.where(positive, p, 0.0) ** q  # 0 ** q = 0 for q > 0
    return torch.log(power.sum(dim=-1)) / (1.0 - q)


def vendi_score_per_group(embeddings: torch.Tensor, q: float = 1.0) -> torch.Tensor:
    """Vendi score of order q of each group of `embeddings [B, N, D]` -> `[B]`, N >= 2."""
    q = check_vendi_order("vendi_score", q)
    x = check_embeddings("vendi_score", embeddings, rank=3, min_generations=2)
    eig = kernel_eigenvalues(x)  # [B, min(N, D)]
    return torch.exp(renyi_entropy(eig, q, size=max(x.shape[1], x.shape[2])))


def vendi_score(embeddings: torch.Tensor, q: float = 1.0) -> torch.Tensor:
    """Vendi score `exp(H_q(eig(K / N)))` of `embeddings [N, D]`, K the cosine kernel.

    1 when all N embeddings point the same way, N when they are mutually orthogonal.
    Unlike the `vendi-score` package's `score_X`, the order q is honoured for every q.
    """
    q = check_vendi_order("vendi_score", q)
    x = check_embeddings("vendi_score", embeddings, rank=2, min_generations=2)
    return vendi_score_per_group(x.unsqueeze(0), q)[0]


# --------------------------------------------------------------------------- Frechet distance


def _check_gaussian(name: str, which: str, mu: object, sigma: object) -> tuple:
    """Validate one Gaussian's `mu [D]`, `sigma [D, D]`; returns both in float64."""
    mu = check_tensor(name, f"mu{which}", mu)
    sigma = check_tensor(name, f"sigma{which}", sigma)
    if mu.dim() != 1:
        raise ValueError(f"{name}: mu{which} must have shape [D], got {tuple(mu.shape)}")
    d = mu.shape[0]
    if tuple(sigma.shape) != (d, d):
        raise ValueError(
            f"{name}: sigma{which} must have shape [D, D] = [{d}, {d}] to match mu{which}, "
            f"got {tuple(sigma.shape)}"
        )
    check_finite(name, f"mu{which}", mu)
    check_finite(name, f"sigma{which}", sigma)
    sigma = sigma.double()
    scale = float(sigma.abs().max()) if sigma.numel() else 0.0
    asym = float((sigma - sigma.T).abs().max()) if sigma.numel() else 0.0
    if asym > 1e-6 * max(scale, 1e-300):
        raise ValueError(
            f"{name}: sigma{which} is not symmetric (max |S - S^T| = {asym:.3g}, "
            f"max |S| = {scale:.3g}); a covariance matrix must be"
        )
    # Sums of outer products in float64 are symmetric only up to rounding.
    return mu.double(), 0.5 * (sigma + sigma.T)


def _check_psd(name: str, which: str, eigenvalues: torch.Tensor) -> None:
    """ValueError unless the spectrum is PSD up to rounding (relative 1e-6)."""
    top = float(eigenvalues.abs().max()) if eigenvalues.numel() else 0.0
    if eigenvalues.numel() and float(eigenvalues.min()) < -1e-6 * max(top, 1e-300):
        raise ValueError(
            f"{name}: sigma{which} is not positive semi-definite (smallest eigenvalue "
            f"{float(eigenvalues.min()):.3g}, largest {top:.3g})"
        )


def _psd_sqrt(name: str, which: str, sigma: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a PSD matrix by eigen-solve; rounding negatives -> 0."""
    w, v = torch.linalg.eigh(sigma)  # [D], [D, D]
    _check_psd(name, which, w)
    return (v * w.clamp_min(0.0).sqrt()) @ v.T


def frechet_distance(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> torch.Tensor:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), a 0-dim float64 tensor.

    `tr((S1^1/2 S2 S1^1/2)^1/2)` equals `tr((S1 S2)^1/2)` but is the trace of the square
    root of a *symmetric* PSD matrix: its eigenvalues come from `eigvalsh`, are clamped at 0
    and square-rooted. The result is clamped at 0: the distance is >= 0 for PSD inputs, so
    a negative value can only be rounding.
    """
    name = "frechet_distance"
    mu1, sigma1 = _check_gaussian(name, "1", mu1, sigma1)
    mu2, sigma2 = _check_gaussian(name, "2", mu2, sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"{name}: the two Gaussians differ in dimension: D1 = {mu1.shape[0]}, "
            f"D2 = {mu2.shape[0]}"
        )
    root1 = _psd_sqrt(name, "1", sigma1)  # [D, D]
    _check_psd(name, "2", torch.linalg.eigvalsh(sigma2))
    middle = root1 @ sigma2 @ root1  # [D, D], symmetric PSD in exact arithmetic
    middle = 0.5 * (middle + middle.T)
    trace_sqrt = torch.linalg.eigvalsh(middle).clamp_min(0.0).sqrt().sum()
    diff = mu1 - mu2
    value = diff @ diff + torch.trace(sigma1) + torch.trace(sigma2) - 2.0 * trace_sqrt
    return value.clamp_min(0.0)


def gaussian_from_sums(
    total: torch.Tensor, outer: torch.Tensor, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean `[D]` and unbiased covariance `[D, D]` (divisor n - 1) from running sums.

    `total` = sum of x `[D]`, `outer` = sum of x x^T `[D, D]`, over `count` >= 2 samples.
    The float64 running sums keep `outer - n mu mu^T` accurate for embedding-sized values.
    """
    mu = total / count  # [D]
    sigma = (outer - count * torch.outer(mu, mu)) / (count - 1)  # [D, D]
    return mu, sigma
