"""Semi-hard triplet loss (Schroff et al. 2015, FaceNet) for the embedder E (paper app. D.1).

Appendix D.1 trains E with "the semi-hard triplet loss (Schroff et al., 2015)": for an
anchor a, a positive p (another chunk of the same piece) and a negative n (a chunk of
another piece), with one shared margin alpha,

    L(a, p, n) = max(0, d(a, p) - d(a, n) + alpha),

where d is the SQUARED Euclidean distance between embeddings (FaceNet's choice; set
`squared=False` for the plain distance). FaceNet's semi-hard negatives are those farther
than the positive but still inside the margin:

    d(a, p) < d(a, n) < d(a, p) + alpha.

Mining rule, per anchor-positive pair (a, p) in the batch (every ordered pair of distinct
items with the same label is one pair):
1. if a semi-hard negative exists, use the one closest to the anchor (the hardest of them);
2. otherwise, if some negatives are HARD (d(a, n) <= d(a, p)), use the least hard of them
   (the largest d(a, n)); FaceNet avoids the hardest negatives because they collapse
   training early, and this is the mildest violating triplet available;
3. otherwise every negative is easy (beyond the margin): the pair contributes no triplet.
The loss is the mean of L over the mined triplets (0, with a gradient path, if none).

We wrote our own instead of using pytorch-metric-learning: the suite avoids the extra
dependency for ~60 lines, and owning the miner lets the tests check the mining rule above
directly against a brute-force reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def pairwise_distances(emb: torch.Tensor, squared: bool = True) -> torch.Tensor:
    """`[B, E]` -> `[B, B]` (squared) Euclidean distances, exactly 0 on the diagonal."""
    sq = (emb * emb).sum(-1)  # [B]
    d2 = (sq[:, None] + sq[None, :] - 2.0 * emb @ emb.T).clamp_min(0.0)  # [B, B]
    d2 = d2 * (1.0 - torch.eye(len(emb), device=emb.device, dtype=emb.dtype))
    if squared:
        return d2
    # sqrt has an infinite slope at 0: add eps inside, then zero the diagonal again.
    return torch.sqrt(d2 + 1e-12) * (d2 > 0)


@dataclass
class Triplets:
    """Mined triplets (index tensors `[M]`) and how they were found."""

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    semi_hard: torch.Tensor  # bool [M]: rule 1 (True) or the hard fallback, rule 2 (False)
    num_pairs: int  # anchor-positive pairs in the batch


def mine_semi_hard(dist: torch.Tensor, labels: torch.Tensor, margin: float) -> Triplets:
    """Apply the mining rule of the module docstring to a `[B, B]` distance matrix."""
    dist = dist.detach()  # mining is a selection; gradients flow through the loss only
    b = len(labels)
    same = labels[:, None] == labels[None, :]  # [B, B]
    eye = torch.eye(b, dtype=torch.bool, device=dist.device)
    anchor, positive = torch.nonzero(same & ~eye, as_tuple=True)  # [P] each
    d_ap = dist[anchor, positive][:, None]  # [P, 1]
    d_an = dist[anchor]  # [P, B]
    is_neg = ~same[anchor]  # [P, B]

    semi = is_neg & (d_an > d_ap) & (d_an < d_ap + margin)
    inf = torch.tensor(float("inf"), device=dist.device, dtype=dist.dtype)
    semi_choice = torch.where(semi, d_an, inf).argmin(dim=1)  # [P] closest semi-hard
    hard = is_neg & (d_an <= d_ap)
    hard_choice = torch.where(hard, d_an, -inf).argmax(dim=1)  # [P] least hard
    has_semi, has_hard = semi.any(dim=1), hard.any(dim=1)

    negative = torch.where(has_semi, semi_choice, hard_choice)
    keep = has_semi | has_hard  # rule 3 drops pairs whose negatives are all easy
    return Triplets(anchor[keep], positive[keep], negative[keep], has_semi[keep], len(anchor))


class SemiHardTripletLoss(torch.nn.Module):
    """`forward(emb [B, E], labels [B]) -> scalar loss`; `last` keeps the mining stats."""

    def __init__(self, margin: float = 0.2, squared: bool = True):
        super().__init__()
        if not margin > 0:
            raise ValueError(f"SemiHardTripletLoss: margin must be > 0, got {margin!r}")
        self.margin, self.squared = float(margin), squared
        self.last: dict[str, float] = {}

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if emb.dim() != 2 or labels.shape != emb.shape[:1]:
            raise ValueError(
                f"SemiHardTripletLoss: need emb [B, E] and labels [B], got "
                f"{tuple(emb.shape)} and {tuple(labels.shape)}"
            )
        dist = pairwise_distances(emb, self.squared)  # [B, B]
        t = mine_semi_hard(dist, labels, self.margin)
        if t.num_pairs == 0:
            raise ValueError("SemiHardTripletLoss: the batch has no two items with one label")
        losses = (dist[t.anchor, t.positive] - dist[t.anchor, t.negative] + self.margin).relu()
        self.last = {
            "triplets": float(len(t.anchor)),
            "semi_hard_frac": t.semi_hard.float().mean().item() if len(t.anchor) else 0.0,
            "mined_frac": len(t.anchor) / t.num_pairs,
        }
        if len(t.anchor) == 0:
            return emb.sum() * 0.0  # every negative is already beyond the margin
        return losses.mean()
