"""Input checks shared by the metrics of `suite.metrics` (DESIGN.md section 4).

Every metric of the paper's evaluation (section 3.1, appendices C-G) refuses bad input with
an error that names the metric and says what it got, instead of returning a silently wrong
number: NaN or inf values, wrong ranks or shapes, too few generations for a diversity
measure, zero-norm embeddings (whose cosine is undefined).
"""

from __future__ import annotations

import torch


def check_tensor(name: str, arg: str, value: object) -> torch.Tensor:
    """`value` as a floating-point tensor, or TypeError naming `name` and `arg`."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: `{arg}` must be a torch.Tensor, got {type(value).__name__}")
    if not (value.is_floating_point()):
        raise TypeError(f"{name}: `{arg}` must be a floating-point tensor, got dtype {value.dtype}")
    return value


def check_finite(name: str, arg: str, value: torch.Tensor) -> None:
    """ValueError naming `name` and `arg` if `value` holds NaN or inf."""
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(
            f"{name}: `{arg}` holds {bad} non-finite value(s) (NaN or inf); "
            f"shape {tuple(value.shape)}"
        )


def check_rank(name: str, arg: str, value: torch.Tensor, rank: int, layout: str) -> None:
    """ValueError if `value` does not have `rank` dimensions (`layout` names them)."""
    if value.dim() != rank:
        raise ValueError(
            f"{name}: `{arg}` must have shape {layout} ({rank} dims), got shape {tuple(value.shape)}"
        )


def check_embeddings(name: str, value: object, rank: int, min_generations: int) -> torch.Tensor:
    """Validate an embedding tensor `[N, D]` (rank 2) or `[B, N, D]` (rank 3).

    Checks: a floating tensor of the right rank, finite, at least `min_generations` rows per
    group (the N axis), D >= 1, and no zero-norm row (the cosine kernel would divide by 0).
    Returns the tensor unchanged.
    """
    x = check_tensor(name, "embeddings", value)
    layout = "[N, D]" if rank == 2 else "[B, N, D]"
    check_rank(name, "embeddings", x, rank, layout)
    if x.shape[-1] < 1:
        raise ValueError(f"{name}: embeddings have D = 0 features, shape {tuple(x.shape)}")
    if rank == 3 and x.shape[0] < 1:
        raise ValueError(f"{name}: embeddings have B = 0 prompts, shape {tuple(x.shape)}")
    if x.shape[-2] < min_generations:
        raise ValueError(
            f"{name}: needs N >= {min_generations} generations per prompt, got N = "
            f"{x.shape[-2]} (embeddings shape {tuple(x.shape)})"
        )
    check_finite(name, "embeddings", x)
    norms = torch.linalg.vector_norm(x.double(), dim=-1)  # [..., N]
    if bool((norms == 0).any()):
        raise ValueError(
            f"{name}: {int((norms == 0).sum())} embedding row(s) have zero norm; the cosine "
            f"kernel is undefined for them (embeddings shape {tuple(x.shape)})"
        )
    return x


def check_not_empty(name: str, count: float, what: str = "update()") -> None:
    """ValueError if `compute()` is reached with nothing accumulated (synced count == 0)."""
    if count == 0:
        raise ValueError(
            f"{name}: compute() called before any {what} with data; nothing to compute "
            f"(call update() first, or check that every process received data)"
        )
