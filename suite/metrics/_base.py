"""A streaming mean for the per-item metrics of the paper's evaluation (section 3.1).

Pairwise diversity and Vendi (per prompt), the MuLan-style and quality scores (per clip)
and token entropy (per token) are all means of per-item values. Their states are a float64
running sum and an int64 count, both reduced with "sum" across processes, so the
distributed mean equals the single-process mean on the same items, whatever the split.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric

from suite.metrics._checks import check_not_empty


class MeanOfValues(Metric):
    """Base class: `_accumulate(values [K])` adds K items; `compute()` is their mean."""

    full_state_update = False
    is_differentiable = False

    total: torch.Tensor
    count: torch.Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def _accumulate(self, values: torch.Tensor) -> None:
        """Add the items of `values [K]` (any float dtype) to the running sum and count."""
        values = values.detach().to(device=self.total.device, dtype=torch.float64).reshape(-1)
        self.total += values.sum()
        self.count += values.numel()
        # The last update's items (not a state): per-prompt intervals read them instead of
        # computing them again (suite.metrics.eval_set).
        self.last_values = values

    def compute(self) -> torch.Tensor:
        """Mean over every item seen (by every process), a 0-dim float64 tensor."""
        check_not_empty(type(self).__name__, int(self.count))
        return self.total / self.count

    def plot(self, val: Any = None, ax: Any = None) -> Any:
        """Plot one or several computed values (torchmetrics' standard plot)."""
        return self._plot(val, ax)
