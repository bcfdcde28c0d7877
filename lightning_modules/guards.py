"""Non-finite guards: a run never trains on, samples from, or saves poisoned weights.

A step can leave the weights (or the optimizer's moments) NaN or infinite although its
loss was finite: one exploding gradient is enough. Resuming from such a checkpoint starts
from poison, so every training job is checked at three points:

- after each optimizer step (`lightning_modules.callbacks.FiniteGuard`): parameters and
  optimizer state, before any checkpoint callback of that step runs;
- before each checkpoint is written (`lightning_modules.checkpointing.SafeCheckpoint`);
- when a policy samples (`guarded_sampling`): finite weights can still overflow in the
  forward (`lr=1e6`), which torch reports as "probability tensor contains either inf, nan
  or element < 0"; the student and the evaluator turn that into the same one-line report.

Each failure is a `NonFiniteError` (a `FloatingPointError`) whose message names the global
step, the cause and the last good checkpoint on disk; the run task (`suite.run`) prints it
in one line, stores it in the MLflow run's `failure` tag and marks the run FAILED.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch

T = TypeVar("T")
_PROBABILITY_ERROR = "probability tensor contains"


class NonFiniteError(FloatingPointError):
    """Weights, optimizer state, loss or sampling probabilities became NaN or infinite."""


def last_good_checkpoint(trainer: Any) -> str:
    """The newest checkpoint this run verified on disk (`SafeCheckpoint`), else 'none'."""
    for callback in getattr(trainer, "checkpoint_callbacks", None) or []:
        good = getattr(callback, "last_good", None)
        if good:
            return f"{good} (global step {callback.last_good_step})"
        path = getattr(callback, "last_model_path", "")
        if path:
            return str(path)
    return "none (no checkpoint written yet)"


def _bad_tensors(named: Iterable[tuple[str, torch.Tensor]], limit: int = 4) -> list[str]:
    """Names of floating tensors holding NaN/inf (one device sync for all of them)."""
    named = [(n, t) for n, t in named if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not named:
        return []
    flags = torch.stack([torch.isfinite(t.detach()).all().to("cpu") for _, t in named])
    if bool(flags.all()):
        return []
    return [n for (n, _), ok in zip(named, flags.tolist(), strict=True) if not ok][:limit]


def optimizer_tensors(optimizers: Iterable[torch.optim.Optimizer]) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) of every optimizer state tensor, e.g. `adamw.state[3].exp_avg_sq`."""
    out = []
    for optimizer in optimizers:
        kind = type(optimizer).__name__.lower()
        for index, state in enumerate(optimizer.state.values()):
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    out.append((f"{kind}.state[{index}].{key}", value))
    return out


def non_finite_state(module: torch.nn.Module, optimizers: Iterable[torch.optim.Optimizer] = ()) -> list[str]:
    """Names of the parameters and optimizer-state tensors that are not finite (at most 4 + 4)."""
    return _bad_tensors(module.named_parameters()) + _bad_tensors(optimizer_tensors(optimizers))


def check_finite_state(trainer: Any, module: torch.nn.Module, when: str) -> None:
    """Raise `NonFiniteError` when the module's weights or its optimizers' state are not finite."""
    bad = non_finite_state(module, getattr(trainer, "optimizers", None) or [])
    if bad:
        raise NonFiniteError(
            f"non-finite weights {when} at global step {trainer.global_step} ({', '.join(bad)}): "
            f"an update blew up although its loss was finite; stopping so they are never saved; "
            f"the last good checkpoint is {last_good_checkpoint(trainer)}"
        )


def largest_weight(module: torch.nn.Module) -> str:
    """`max |w| = 3.1e+09 in head.weight`: where the weights grew the most."""
    best, where = 0.0, "-"
    for name, p in module.named_parameters():
        if p.is_floating_point() and p.numel():
            value = float(p.detach().abs().max())
            if not value <= best:  # NaN wins
                best, where = value, name
    return f"max |w| = {best:.3g} in {where}"


def guarded_sampling(owner: str, module: Any, what: str, sample: Callable[[], T]) -> T:
    """Run `sample()`; a non-finite sampling distribution becomes a `NonFiniteError` naming
    the step, the cause and the last good checkpoint (torch's own error says none of them)."""
    try:
        return sample()
    except RuntimeError as err:
        if _PROBABILITY_ERROR not in str(err):
            raise
        trainer = getattr(module, "_trainer", None)
        step = getattr(trainer, "global_step", "?")
        weights = getattr(module, "student", None) or module
        raise NonFiniteError(
            f"{owner}: {what} at global step {step} drew from probabilities that are not finite "
            f"(the policy's logits overflow: {largest_weight(weights)}); the last updates blew "
            f"up the policy (is lr too large?); stopping; the last good checkpoint is "
            f"{last_good_checkpoint(trainer) if trainer is not None else 'none'}"
        ) from err
