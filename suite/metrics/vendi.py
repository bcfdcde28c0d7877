"""Vendi score metric (paper appendix D.4; Friedman and Dieng, 2022; DESIGN.md section 4).

For each prompt, K is the cosine kernel of its N generations' embeddings and the Vendi
score is `exp(H_q(eigenvalues of K / N))`, the effective number of distinct generations
(1 when all are alike, N when all are orthogonal). q = 1 is Shannon entropy (the paper's
choice), q = inf gives `-log max`, other q the Renyi entropy. The metric is the mean over
prompts; all maths is in float64 with eigenvalues below 0 clamped
(see `suite.metrics.functional.renyi_entropy`).
"""

from __future__ import annotations

from typing import Any

import torch

from suite.metrics._base import MeanOfValues
from suite.metrics.functional import check_vendi_order, vendi_score_per_group


class VendiScore(MeanOfValues):
    """Mean over prompts of the order-q Vendi score of that prompt's generations.

    `update(embeddings)` takes `[B, N, D]`, N >= 2. Range [1, N]; higher is more diverse.
    """

    higher_is_better = True
    plot_lower_bound = 1.0

    def __init__(self, q: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.q = check_vendi_order("VendiScore", q)

    def update(self, embeddings: torch.Tensor) -> None:
        """Add B prompts' Vendi scores from `embeddings [B, N, D]`."""
        try:
            per_prompt = vendi_score_per_group(embeddings, self.q)  # [B]
        except (TypeError, ValueError) as err:
            raise type(err)(f"VendiScore.update: {err}") from err
        self._accumulate(per_prompt)
