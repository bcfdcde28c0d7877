"""Pairwise diversity metric (paper section 3.1, figure 2; DESIGN.md section 4).

For each prompt the N generations' embeddings give the mean `1 - cos(E(y_i), E(y_j))` over
the ordered pairs i != j, the same quantity the diversity reward of eq. (3) / appendix A
averages; the metric is the mean of that value over prompts. The "upper bound" of figure 2
(pairs of different prompts) is `suite.metrics.functional.diversity_upper_bound`.
"""

from __future__ import annotations

import torch

from suite.metrics._base import MeanOfValues
from suite.metrics.functional import pairwise_diversity_per_group


class PairwiseDiversity(MeanOfValues):
    """Mean over prompts of the mean pairwise `1 - cos` among that prompt's generations.

    `update(embeddings)` takes `[B, N, D]`: B prompts, N >= 2 generations each, D features.
    Every prompt counts once, whatever the batch it came in, so streaming and distributed
    updates give the single-batch value. Range [0, 2]; higher means more diverse.
    """

    higher_is_better = True
    plot_lower_bound = 0.0
    plot_upper_bound = 2.0

    def update(self, embeddings: torch.Tensor) -> None:
        """Add B prompts' diversity values from `embeddings [B, N, D]`."""
        try:
            per_prompt = pairwise_diversity_per_group(embeddings)  # [B]
        except (TypeError, ValueError) as err:
            raise type(err)(f"PairwiseDiversity.update: {err}") from err
        self._accumulate(per_prompt)
