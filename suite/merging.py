"""Weight merging for a quality-diversity front at deployment time (paper section 2.4).

- `lerp`: linear interpolation of eq. (6), theta = (1 - lambda) theta_q + lambda theta_d,
  lambda in [0, 1] (outside only with `allow_extrapolation=True`).
- `merge`: weighted average of k models (uniform 1/k by default: the "uniform" soup of
  section 3.4, Wortsman et al. 2022).
- `slerp`: per-tensor spherical interpolation (an extra, not used by the paper).
- `task_arithmetic`: base + sum_i w_i (theta_i - base) (Ilharco et al. 2023; an extra).

Merged weights are written as exports with their provenance by `suite.policies.exports`.

Rules shared by every merge: float tensors are combined in float32 or wider and cast back to
their own dtype (bf16 / fp16 arithmetic would lose the small differences between fine-tunes);
integer and bool buffers (step counters, index tables) are not interpolable and are copied
from the first model (the base for `task_arithmetic`); keys, shapes and dtypes must match
across models, otherwise a ValueError lists every offending key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

StateDict = Mapping[str, torch.Tensor]

_MAX_LISTED = 20  # offending keys listed in an error message before "... and k more"


def _is_interpolable(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    more = len(keys) - _MAX_LISTED
    return shown + (f", ... and {more} more" if more > 0 else "")


def _check_compatible(func: str, states: Sequence[StateDict], names: Sequence[str]) -> None:
    """Raise one ValueError naming every missing / extra / shape / dtype offending key."""
    if not states:
        raise ValueError(f"{func}: no state dicts given")
    for name, state in zip(names, states):
        if not isinstance(state, Mapping):
            raise TypeError(
                f"{func}: {name} must be a mapping of str -> Tensor, got {type(state).__name__}"
            )
        bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise TypeError(f"{func}: {name} has non-tensor values at keys: {_listing(bad)}")
    ref, ref_name = states[0], names[0]
    if not ref:
        raise ValueError(f"{func}: {ref_name} is empty (no tensors to merge)")
    problems: list[str] = []
    for name, state in zip(names[1:], states[1:]):
        missing = sorted(set(ref) - set(state))
        extra = sorted(set(state) - set(ref))
        common = [k for k in ref if k in state]
        shape = [k for k in common if ref[k].shape != state[k].shape]
        dtype = [
            k for k in common if ref[k].shape == state[k].shape and ref[k].dtype != state[k].dtype
        ]
        if missing:
            problems.append(f"{name} is missing keys of {ref_name}: {_listing(missing)}")
        if extra:
            problems.append(f"{name} has extra keys not in {ref_name}: {_listing(extra)}")
        if shape:
            details = [f"{k} {tuple(ref[k].shape)} vs {tuple(state[k].shape)}" for k in shape]
            problems.append(f"{name} differs in shape at: {_listing(details)}")
        if dtype:
            details = [f"{k} {ref[k].dtype} vs {state[k].dtype}" for k in dtype]
            problems.append(f"{name} differs in dtype at: {_listing(details)}")
    if problems:
        raise ValueError(f"{func}: state dicts do not match:\n  " + "\n  ".join(problems))


def _check_weights(func: str, weights: Sequence[float], count: int) -> list[float]:
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(f"{func}: got {len(weights)} weights for {count} state dicts")
    bad = [w for w in weights if not math.isfinite(w)]
    if bad:
        raise ValueError(f"{func}: weights must be finite, got {weights}")
    return weights


def _combine(
    states: Sequence[StateDict], weights: Sequence[float], copy_from: StateDict
) -> dict[str, torch.Tensor]:
    """sum_i w_i * state_i per float tensor (in >= float32), non-float copied from `copy_from`."""
    out: dict[str, torch.Tensor] = {}
    for key, ref in copy_from.items():
        if not _is_interpolable(ref):
            out[key] = ref.detach().clone()
            continue
        work = torch.promote_types(ref.dtype, torch.float32)
        acc = torch.zeros(ref.shape, dtype=work, device=ref.device)
        for state, w in zip(states, weights):
            acc += w * state[key].detach().to(device=ref.device, dtype=work)
        out[key] = acc.to(ref.dtype)
    return out


def merge(
    states: Sequence[StateDict],
    weights: Sequence[float] | None = None,
    *,
    allow_unnormalized: bool = False,
    allow_extrapolation: bool = False,
) -> dict[str, torch.Tensor]:
    """Weighted average `sum_i w_i theta_i` of k state dicts (eq. 6 generalised to k models).

    Args:
        states: k >= 1 state dicts with identical keys, shapes and dtypes.
        weights: k coefficients; None gives the uniform soup 1/k.
        allow_unnormalized: accept weights that do not sum to 1 (|sum - 1| > 1e-6).
        allow_extrapolation: accept negative weights (extrapolation beyond the models).

    Returns a new state dict (on the first model's devices); integer / bool buffers come from
    the first model.
    """
    states = list(states)
    _check_compatible("merge", states, [f"states[{i}]" for i in range(len(states))])
    if weights is None:
        weights = [1.0 / len(states)] * len(states)
    weights = _check_weights("merge", weights, len(states))
    if not allow_unnormalized and abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(
            f"merge: weights must sum to 1, got {weights} (sum {sum(weights)}); "
            "pass allow_unnormalized=True to allow it"
        )
    if not allow_extrapolation and any(w < 0 for w in weights):
        raise ValueError(
            f"merge: negative weights extrapolate beyond the models, got {weights}; "
            "pass allow_extrapolation=True to allow it"
        )
    return _combine(states, weights, states[0])


def lerp(
    state_a: StateDict, state_b: StateDict, lam: float, allow_extrapolation: bool = False
) -> dict[str, torch.Tensor]:
    """LERP of eq. (6): `(1 - lam) * state_a + lam * state_b`.

    state_a is theta_q (quality, beta = 0), state_b is theta_d (diversity, high beta);
    lam = 0 returns state_a's values and lam = 1 state_b's, exactly. lam outside [0, 1] is
    refused unless `allow_extrapolation=True`.
    """
    lam = float(lam)
    if not math.isfinite(lam):
        raise ValueError(f"lerp: lam must be finite, got {lam}")
    if not allow_extrapolation and not 0.0 <= lam <= 1.0:
        raise ValueError(
            f"lerp: lam must be in [0, 1], got {lam}; pass allow_extrapolation=True to extrapolate"
        )
    _check_compatible("lerp", [state_a, state_b], ["state_a", "state_b"])
    return _combine([state_a, state_b], [1.0 - lam, lam], state_a)


def slerp(state_a: StateDict, state_b: StateDict, t: float) -> dict[str, torch.Tensor]:
    """Per-tensor spherical interpolation, t in [0, 1].

    Each float tensor pair (a, b), flattened, is interpolated along the great circle between
    their directions: `sin((1-t) W) / sin W * a + sin(t W) / sin W * b`, W the angle between
    a and b. When the angle is too small (or too close to pi) for sin W to be a safe divisor,
    or a tensor is all zeros, the direction is ill-defined and the pair falls back to `lerp`.
    """
    t = float(t)
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise ValueError(f"slerp: t must be in [0, 1], got {t}")
    _check_compatible("slerp", [state_a, state_b], ["state_a", "state_b"])
    out: dict[str, torch.Tensor] = {}
    for key, ref in state_a.items():
        if not _is_interpolable(ref):
            out[key] = ref.detach().clone()
            continue
        work = torch.promote_types(ref.dtype, torch.float32)
        a = ref.detach().to(work).flatten()  # [P]
        b = state_b[key].detach().to(device=ref.device, dtype=work).flatten()  # [P]
        na, nb = a.norm(), b.norm()
        # Complex tensors have no real angle: they take the linear path (cos = 1).
        usable = not ref.is_complex() and float(na) > 0 and float(nb) > 0
        cos = float((a @ b) / (na * nb)) if usable else 1.0
        if not math.isfinite(cos) or abs(cos) > 1.0 - 1e-6:
            mixed = (1.0 - t) * a + t * b
        else:
            omega = math.acos(max(-1.0, min(1.0, cos)))
            sin_omega = math.sin(omega)
            mixed = (math.sin((1.0 - t) * omega) / sin_omega) * a + (
                math.sin(t * omega) / sin_omega
            ) * b
        out[key] = mixed.reshape(ref.shape).to(ref.dtype)
    return out


def task_arithmetic(
    base: StateDict, states: Sequence[StateDict], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Task arithmetic: `base + sum_i w_i (theta_i - base)` (weights need not sum to 1).

    Equivalent to the linear combination with coefficients (1 - sum w) for the base and w_i
    for each model, which is how it is computed (one pass, no catastrophic cancellation in
    low precision since everything is accumulated in >= float32). Non-float buffers come from
    the base.
    """
    states = list(states)
    if not states:
        raise ValueError("task_arithmetic: no fine-tuned state dicts given")
    _check_compatible(
        "task_arithmetic", [base, *states], ["base"] + [f"states[{i}]" for i in range(len(states))]
    )
    weights = _check_weights("task_arithmetic", weights, len(states))
    return _combine([base, *states], [1.0 - sum(weights), *weights], base)


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------
