"""Token entropy metric (DESIGN.md section 4; paper section 3 diagnostics).

The entropy of the sampling distribution `softmax(logits)` at each generated position,
`H = -sum_v p_v log p_v` in nats, averaged over the positions a mask selects (for example
real tokens, not padding). CFG sharpens the distribution and lowers it; the diversity
reward of eq. (3) tends to raise it.
"""

from __future__ import annotations

import torch

from suite.metrics._base import MeanOfValues
from suite.metrics._checks import check_rank, check_tensor

_NAME = "TokenEntropy.update"


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of `softmax(logits)` over the last axis: `[..., V] -> [...]`.

    Computed in float64. Entries with probability 0 (logits of -inf, or the suite's finite
    MASK_VALUE) add 0, as `0 log 0 = 0`, instead of `0 * -inf = nan`.
    """
    logp = torch.log_softmax(logits.double(), dim=-1)  # [..., V]
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=-1)


class TokenEntropy(MeanOfValues):
    """Mean entropy per token (nats) of the model's next-token distributions.

    `update(logits [B, L, V], mask [B, L] | None)`: `mask` (bool) selects the positions
    that count; None counts every position. Range [0, log V].

    `higher_is_better = True` because the suite reports it as a diversity indicator (more
    entropy, more varied samples); like every diversity number it is read beside quality.
    """

    higher_is_better = True
    plot_lower_bound = 0.0

    def update(self, logits: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add the entropies of the masked positions of `logits [B, L, V]`."""
        x = check_tensor(_NAME, "logits", logits)
        check_rank(_NAME, "logits", x, 3, "[B, L, V]")
        if x.shape[-1] < 1:
            raise ValueError(f"{_NAME}: logits have V = 0 classes, shape {tuple(x.shape)}")
        if bool(torch.isnan(x).any()) or bool(torch.isposinf(x).any()):
            raise ValueError(f"{_NAME}: logits hold NaN or +inf, shape {tuple(x.shape)}")
        if bool(torch.isneginf(x).all(dim=-1).any()):
            raise ValueError(f"{_NAME}: a position has every logit at -inf (no distribution)")
        ent = token_entropy(x.detach())  # [B, L]
        if mask is None:
            self._accumulate(ent)
            return
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"{_NAME}: `mask` must be a bool tensor [B, L], got {got}")
        if mask.shape != ent.shape:
            raise ValueError(
                f"{_NAME}: mask shape {tuple(mask.shape)} does not match logits [B, L] = "
                f"{tuple(ent.shape)}"
            )
        self._accumulate(ent[mask.to(ent.device)])
