"""Evaluation maths for the audio models (issue 6 acceptance; paper appendix D.1).

- `recall_at_k`: share of queries whose correct item ranks in the top k by cosine; used for
  the embedder's same-piece retrieval (a chunk retrieves the other chunk of its piece among
  up to 500 pieces) and the scorer's text-to-audio retrieval (recall@1/5).
- `roc_auc`: area under the ROC curve of a score separating positives from negatives,
  computed as the Mann-Whitney statistic P(s_pos > s_neg) + 1/2 P(s_pos = s_neg); used for
  cosine(same piece) versus cosine(different pieces).
- `pairwise_accuracy`: share of pairs where the preferred item scores higher (ties = 1/2).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata


def recall_at_k(query: torch.Tensor, items: torch.Tensor, correct: torch.Tensor, k: int) -> float:
    """query `[Q, E]`, items `[I, E]` (unit rows), correct bool `[Q, I]` -> recall@k.

    A query counts as a hit when any correct item is among its k highest cosines; ties at
    the k-th score are broken against the query (a pessimistic, deterministic count).
    """
    if correct.shape != (len(query), len(items)):
        raise ValueError(
            f"recall_at_k: correct must be [{len(query)}, {len(items)}], got {tuple(correct.shape)}"
        )
    if not 1 <= k <= len(items):
        raise ValueError(f"recall_at_k: k must be in [1, {len(items)}], got {k}")
    if not correct.any(dim=1).all():
        raise ValueError("recall_at_k: every query needs at least one correct item")
    sim = query.float() @ items.float().T  # [Q, I]
    best_correct = sim.masked_fill(~correct, float("-inf")).max(dim=1).values  # [Q]
    # Rank of the best correct item = number of wrong items scoring at least as high.
    above = (sim.masked_fill(correct, float("-inf")) >= best_correct[:, None]).sum(dim=1)
    return (above < k).float().mean().item()


def roc_auc(pos: torch.Tensor | np.ndarray, neg: torch.Tensor | np.ndarray) -> float:
    """ROC AUC of scores `pos` (should be high) vs `neg`, ties counted as one half."""
    pos = np.asarray(torch.as_tensor(pos).detach().cpu().double()).ravel()
    neg = np.asarray(torch.as_tensor(neg).detach().cpu().double()).ravel()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError(f"roc_auc: need positives and negatives, got {len(pos)} and {len(neg)}")
    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks handle ties
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def pairwise_accuracy(r_win: torch.Tensor, r_lose: torch.Tensor) -> float:
    if r_win.shape != r_lose.shape or r_win.numel() == 0:
        raise ValueError(
            f"pairwise_accuracy: need equal non-empty shapes, got {tuple(r_win.shape)} "
            f"and {tuple(r_lose.shape)}"
        )
    wins = (r_win > r_lose).float() + 0.5 * (r_win == r_lose).float()
    return wins.mean().item()
