"""95 % bootstrap intervals over prompts for the evaluation's means (paper section 3.1).

The evaluation's numbers are means over held-out prompts (each prompt's value itself a
mean over its generations, or a per-prompt quantity such as its pairwise diversity). One
seed is an anecdote: each number is reported with a bootstrap confidence interval over the
PROMPTS, the unit that was sampled (a prompt's generations are not independent of each
other). `PromptIntervals` keeps every prompt's value per named quantity as "cat" states (a
distributed run gathers every rank's prompts), and `compute()` returns for each quantity
the interval of its mean: BCa where defined, else percentile (`_bootstrap_ci`), over the
values sorted first so the interval does not depend on arrival order. Prompts whose value
is NaN (e.g. the oracle's adherence where a prompt names no attribute it knows) are left
out, exactly as the mean leaves them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from suite.metrics.winrate import _bootstrap_ci


class PromptIntervals(Metric):
    """Per-prompt values of named quantities -> bootstrap CI of each one's mean over prompts.

    Args:
        names: the quantities (fixed at construction: each is a "cat" state).
        confidence: the interval's level (default 0.95).
        num_resamples: bootstrap resamples (default 2000).
        seed: the bootstrap generator's seed: intervals are deterministic.

    `update(name, values [P])` adds P prompts' values of `name`; `compute()` returns
    `{name: (low, high)}` for every name with >= 2 finite values.
    """

    full_state_update = False
    is_differentiable = False

    def __init__(self, names: Sequence[str], confidence: float = 0.95, num_resamples: int = 2000,
                 seed: int = 0, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        if not 0.0 < float(confidence) < 1.0:
            raise ValueError(f"PromptIntervals: confidence must be in (0, 1), got {confidence!r}")
        if int(num_resamples) < 1:
            raise ValueError(f"PromptIntervals: num_resamples must be >= 1, got {num_resamples!r}")
        self.names = tuple(names)
        self.confidence, self.num_resamples, self.seed = float(confidence), int(num_resamples), int(seed)
        for name in self.names:
            self.add_state(f"values_{name}", [], dist_reduce_fx="cat")
        # a rank that saw no value of a quantity syncs an empty tensor of this dtype: the
        # same as the others' values, so the gather never mixes dtypes
        self.set_dtype(torch.float64)

    def update(self, name: str, values: torch.Tensor) -> None:
        """Add per-prompt values `[P]` of quantity `name`."""
        if name not in self.names:
            raise KeyError(f"PromptIntervals.update: unknown quantity {name!r}; known: {self.names}")
        values = torch.as_tensor(values).detach().to(self.device, torch.float64).reshape(-1)
        getattr(self, f"values_{name}").append(values)

    def values(self, name: str) -> torch.Tensor:
        """Every finite per-prompt value of `name` seen so far, `[P]` float64."""
        state = getattr(self, f"values_{name}")
        if isinstance(state, list) and not state:
            return torch.zeros(0, dtype=torch.float64)
        out = dim_zero_cat(state).double().cpu()
        return out[torch.isfinite(out)]

    def compute(self) -> dict[str, tuple[float, float]]:
        out = {}
        for name in self.names:
            values = self.values(name).numpy()
            if values.size >= 2:
                out[name] = _bootstrap_ci(values, self.confidence, self.num_resamples, self.seed)
        return out
