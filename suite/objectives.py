"""The training objectives of diversity-rewarded CFG distillation (paper section 2).

All of the suite's maths lives here, as plain functions on tensors:

- `cfg_logits`: classifier-free guidance, eq. (1): z = gamma * m(x) + (1 - gamma) * m(x-).
"""

from __future__ import annotations

import torch


def cfg_logits(cond_logits: torch.Tensor, neg_logits: torch.Tensor, gamma: float) -> torch.Tensor:
    """CFG logits of eq. (1): `gamma * cond + (1 - gamma) * neg`, any matching shape.

    gamma = 1 returns the conditional logits exactly (not up to rounding), so that CFG at
    gamma 1 reproduces plain sampling bit for bit.
    """
    if gamma < 0:
        raise ValueError(f"cfg_logits: gamma must be >= 0, got {gamma}")
    if cond_logits.shape != neg_logits.shape:
        raise ValueError(
            f"cfg_logits: cond and negative logits differ in shape: "
            f"{tuple(cond_logits.shape)} vs {tuple(neg_logits.shape)}"
        )
    if gamma == 1:
        return cond_logits
    return gamma * cond_logits + (1.0 - gamma) * neg_logits
